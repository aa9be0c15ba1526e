//! swtpm, the TPM 2.0 emulator, started one way for everyone who needs it (feature `swtpm`): the
//! runner (`cvm-image run`) and the host tests of this crate, the agent and the builder.
//!
//! Two setups:
//! * for a VM ([`SwtpmPaths`], [`provision`], [`spawn`]): QEMU's `tpm-emulator` backend speaks
//!   swtpm's control protocol on the `--ctrl` unix socket and passes the TPM data channel as a file
//!   descriptor over it (CMD_SET_DATAFD), so swtpm needs only `--ctrl type=unixio`. `--terminate`
//!   makes swtpm exit when QEMU closes that connection, so QEMU's exit ends swtpm too. No
//!   `--flags startup-clear`: the firmware sends TPM2_Startup itself, as on real hardware (a second
//!   Startup would fail with TPM_RC_INITIALIZE).
//!
//!   Every run starts from a freshly *manufactured* TPM, like a cloud vTPM: [`provision`] runs
//!   `swtpm_setup` on an empty state directory, which creates the RSA 2048 and ECC EKs and stores EK
//!   and platform certificates in NV, issued by `swtpm_localca` with a CA private to this run (its
//!   configuration, keys and serial counter live in the run directory, never in the system-wide
//!   `/var/lib/swtpm-localca`). The CA's certificates ([`SwtpmPaths::ca_bundle`]) are what a
//!   verifier passes as `verify --ek-ca` to check the EK certificate chain.
//! * for a host test ([`TcpSwtpm`]): a plain TPM (fresh state, no EK certificates, started and
//!   initialised by swtpm itself) serving commands on a TCP port and its control channel on the next
//!   one — the layout tpm2-tss's swtpm TCTI expects, so tpm2-tools can check what this crate did.

use std::ffi::{OsStr, OsString};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long swtpm gets to create its control socket or to listen on its control port.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);
/// Starts of a [`TcpSwtpm`] before giving up: a port found free may be taken before swtpm binds it.
const TCP_ATTEMPTS: usize = 20;
/// Log lines quoted in an error.
const LOG_TAIL_LINES: usize = 20;
/// The provisioning tools, installed next to `swtpm` by Debian's `swtpm-tools`.
const SWTPM_SETUP: &str = "swtpm_setup";
const SWTPM_LOCALCA: &str = "swtpm_localca";
/// Files swtpm_localca creates in its state directory (swtpm-localca(8)): the intermediate CA that
/// signs the EK certificates, and the root CA that signs the intermediate.
pub const LOCALCA_ISSUER_CERT: &str = "issuercert.pem";
pub const LOCALCA_ROOT_CERT: &str = "swtpm-localca-rootca-cert.pem";
/// Platform certificate fields swtpm_localca writes (`--platform-*` options).
const PLATFORM_MANUFACTURER: &str = "cvm-image";
const PLATFORM_MODEL: &str = "QEMU";
const PLATFORM_VERSION: &str = "2.1";
/// PCR banks to activate: all four, like the vTPMs of the clouds (several banks) — the firmware then
/// logs every bank, and the predictions are checked in each (sha256 is the one quoted and verified).
const ACTIVE_PCR_BANKS: &str = "sha1,sha256,sha384,sha512";

/// Why swtpm (or its provisioning) could not be started. Each variant names the file or program.
#[derive(Debug, thiserror::Error)]
pub enum SwtpmError {
    #[error("cannot create {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {}{hint}", program.display())]
    Start {
        program: PathBuf,
        /// What to install, when the program belongs to a package of its own.
        hint: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{} failed ({status}) provisioning the TPM; its log ({}):\n{tail}", program.display(), log.display())]
    Provision {
        program: PathBuf,
        status: ExitStatus,
        log: PathBuf,
        tail: String,
    },
    #[error("swtpm_localca did not create {}", path.display())]
    MissingCertificate {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "swtpm cannot use {}: its option syntax does not allow ',' in paths (set TMPDIR to a \
         directory without one)",
        path.display()
    )]
    CommaInPath { path: PathBuf },
    #[error("waiting for swtpm")]
    Wait(#[source] std::io::Error),
    #[error("swtpm exited ({status}) before creating its socket; its log ({}):\n{tail}", log.display())]
    Exited {
        status: ExitStatus,
        log: PathBuf,
        tail: String,
    },
    #[error("swtpm did not create {} within {} s; its log:\n{tail}", socket.display(), READY_TIMEOUT.as_secs())]
    NoSocket { socket: PathBuf, tail: String },
    #[error("swtpm did not listen on 127.0.0.1 in {TCP_ATTEMPTS} attempts (last: {last})")]
    NotListening { last: ListenFailure },
}

/// Why one attempt of [`TcpSwtpm::start`] did not get a listening swtpm. Only the last attempt's
/// reason is reported: the earlier ones are the same race (a port taken meanwhile) or the same
/// fault.
#[derive(Debug, thiserror::Error)]
pub enum ListenFailure {
    #[error("no two consecutive free TCP ports")]
    NoFreePorts,
    #[error("swtpm exited ({0})")]
    Exited(ExitStatus),
    #[error("port {port} not listening after {READY_TIMEOUT:?}")]
    Timeout { port: u16 },
}

type Result<T, E = SwtpmError> = std::result::Result<T, E>;

/// The last `n` lines of a log file (empty when it cannot be read).
fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// [`SwtpmError::Start`] for `program`, which would not start; `hint` says what to install.
fn start_failed<'a>(
    program: &'a Path,
    hint: &'static str,
) -> impl FnOnce(std::io::Error) -> SwtpmError + 'a {
    move |source| SwtpmError::Start {
        program: program.to_path_buf(),
        hint,
        source,
    }
}

fn create_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|source| SwtpmError::CreateDir {
        path: path.to_path_buf(),
        source,
    })
}

/// Where a VM's swtpm keeps its files (all inside the run directory).
#[derive(Debug, Clone)]
pub struct SwtpmPaths {
    pub state_dir: PathBuf,
    pub ctrl_socket: PathBuf,
    pub log: PathBuf,
    /// The private local CA of this run (swtpm_localca state and configuration).
    pub ca_dir: PathBuf,
    /// swtpm_setup's configuration and log.
    pub setup_config: PathBuf,
    pub setup_log: PathBuf,
}

impl SwtpmPaths {
    pub fn in_dir(run_dir: &Path) -> Self {
        SwtpmPaths {
            state_dir: run_dir.join("tpm"),
            ctrl_socket: run_dir.join("swtpm.sock"),
            log: run_dir.join("swtpm.log"),
            ca_dir: run_dir.join("localca"),
            setup_config: run_dir.join("swtpm_setup.conf"),
            setup_log: run_dir.join("swtpm_setup.log"),
        }
    }

    /// The CA certificates (issuer, then root) as one PEM bundle, after [`provision`].
    pub fn ca_bundle(&self) -> Result<Vec<u8>> {
        let mut pem = vec![];
        for name in [LOCALCA_ISSUER_CERT, LOCALCA_ROOT_CERT] {
            let path = self.ca_dir.join(name);
            let bytes = std::fs::read(&path)
                .map_err(|source| SwtpmError::MissingCertificate { path, source })?;
            pem.extend_from_slice(&bytes);
        }
        Ok(pem)
    }
}

/// `program`'s sibling named `name` when it exists (a `$CVM_IMAGE_SWTPM` build keeps its tools
/// together), else `name` for a `PATH` lookup.
fn sibling(program: &Path, name: &str) -> PathBuf {
    let beside = program.with_file_name(name);
    if program.parent().is_some_and(|d| !d.as_os_str().is_empty()) && beside.is_file() {
        beside
    } else {
        PathBuf::from(name)
    }
}

/// swtpm_localca's configuration (swtpm-localca.conf(8)): every path inside the run's CA directory.
fn localca_conf(ca_dir: &Path) -> String {
    let d = ca_dir.display();
    format!(
        "statedir = {d}\nsigningkey = {d}/signkey.pem\nissuercert = {d}/{LOCALCA_ISSUER_CERT}\n\
         certserial = {d}/certserial\n"
    )
}

/// swtpm_setup's configuration (swtpm_setup.conf(8)): which tool issues the certificates, with which
/// configuration, and the PCR banks to activate.
fn setup_conf(localca: &Path, ca_dir: &Path) -> String {
    format!(
        "create_certs_tool = {}\ncreate_certs_tool_config = {}\ncreate_certs_tool_options = {}\n\
         active_pcr_banks = {ACTIVE_PCR_BANKS}\n",
        localca.display(),
        ca_dir.join("swtpm-localca.conf").display(),
        ca_dir.join("swtpm-localca.options").display()
    )
}

fn localca_options() -> String {
    format!(
        "--platform-manufacturer {PLATFORM_MANUFACTURER}\n--platform-version {PLATFORM_VERSION}\n\
         --platform-model {PLATFORM_MODEL}\n"
    )
}

/// The swtpm_setup that [`provision`] runs for the emulator `swtpm`.
pub fn setup_program(swtpm: &Path) -> PathBuf {
    sibling(swtpm, SWTPM_SETUP)
}

/// The configuration files [`provision`] writes before it runs swtpm_setup (`swtpm` is the
/// emulator's path): path and content.
pub fn config_files(swtpm: &Path, paths: &SwtpmPaths) -> Vec<(PathBuf, String)> {
    let localca = sibling(&setup_program(swtpm), SWTPM_LOCALCA);
    vec![
        (
            paths.ca_dir.join("swtpm-localca.conf"),
            localca_conf(&paths.ca_dir),
        ),
        (
            paths.ca_dir.join("swtpm-localca.options"),
            localca_options(),
        ),
        (
            paths.setup_config.clone(),
            setup_conf(&localca, &paths.ca_dir),
        ),
    ]
}

/// Manufactures the TPM in `paths.state_dir`: EKs, EK and platform certificates from the run's own
/// local CA. `swtpm` is the emulator's path (the provisioning tools are looked up beside it).
pub fn provision(swtpm: &Path, paths: &SwtpmPaths) -> Result<()> {
    for dir in [&paths.state_dir, &paths.ca_dir] {
        create_dir(dir)?;
    }
    let setup = setup_program(swtpm);
    for (path, text) in config_files(swtpm, paths) {
        std::fs::write(&path, text).map_err(|source| SwtpmError::Write { path, source })?;
    }
    let out = Command::new(&setup)
        .args(setup_args(paths))
        .stdin(Stdio::null())
        .output()
        .map_err(start_failed(
            &setup,
            " (install the Debian package swtpm-tools)",
        ))?;
    if !out.status.success() {
        return Err(SwtpmError::Provision {
            program: setup,
            status: out.status,
            log: paths.setup_log.clone(),
            tail: log_tail(&paths.setup_log, LOG_TAIL_LINES),
        });
    }
    Ok(())
}

/// swtpm_setup's arguments: TPM 2.0, EK + platform certificates, our configuration only.
pub fn setup_args(paths: &SwtpmPaths) -> Vec<OsString> {
    let mut a: Vec<OsString> = ["--tpm2", "--create-ek-cert", "--create-platform-cert"]
        .iter()
        .map(OsString::from)
        .collect();
    for (opt, value) in [
        ("--tpmstate", paths.state_dir.as_os_str()),
        ("--config", paths.setup_config.as_os_str()),
        ("--logfile", paths.setup_log.as_os_str()),
    ] {
        a.push(opt.into());
        a.push(value.to_owned());
    }
    a.push(OsStr::new("--overwrite").to_owned());
    a
}

/// swtpm's command-line arguments for a VM. swtpm splits option values at ',' and has no escape for
/// it, so a path with a comma is refused rather than silently cut.
pub fn args(paths: &SwtpmPaths) -> Result<Vec<OsString>> {
    for p in [&paths.state_dir, &paths.ctrl_socket, &paths.log] {
        if p.to_string_lossy().contains(',') {
            return Err(SwtpmError::CommaInPath { path: p.clone() });
        }
    }
    let mut a: Vec<OsString> = ["socket", "--tpm2", "--terminate"]
        .iter()
        .map(OsString::from)
        .collect();
    let mut opt = |name: &str, value: String| {
        a.push(name.into());
        a.push(value.into());
    };
    opt("--tpmstate", format!("dir={}", paths.state_dir.display()));
    opt(
        "--ctrl",
        format!("type=unixio,path={}", paths.ctrl_socket.display()),
    );
    opt("--log", format!("file={}", paths.log.display()));
    Ok(a)
}

/// Starts a VM's swtpm and waits for its control socket. `configure` adjusts the command before it
/// starts (the runner puts swtpm in its process group).
pub fn spawn(
    program: &Path,
    paths: &SwtpmPaths,
    configure: impl FnOnce(&mut Command),
) -> Result<Child> {
    create_dir(&paths.state_dir)?;
    let mut cmd = Command::new(program);
    cmd.args(args(paths)?)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    configure(&mut cmd);
    let mut child = cmd.spawn().map_err(start_failed(program, ""))?;
    let started = Instant::now();
    while !paths.ctrl_socket.exists() {
        if let Some(status) = child.try_wait().map_err(SwtpmError::Wait)? {
            return Err(SwtpmError::Exited {
                status,
                log: paths.log.clone(),
                tail: log_tail(&paths.log, LOG_TAIL_LINES),
            });
        }
        if started.elapsed() > READY_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SwtpmError::NoSocket {
                socket: paths.ctrl_socket.clone(),
                tail: log_tail(&paths.log, LOG_TAIL_LINES),
            });
        }
        std::thread::sleep(POLL);
    }
    Ok(child)
}

/// A plain swtpm for host tests, commands on `127.0.0.1:port` and control on `port + 1`, already
/// started (`--flags not-need-init,startup-clear`). Killed on drop; its state directory is the
/// caller's.
pub struct TcpSwtpm {
    child: Child,
    pub port: u16,
}

impl TcpSwtpm {
    /// Starts `program` (normally `swtpm`) with a fresh state in `state_dir` and waits until its
    /// control port accepts connections. The control port is probed, not the command port: swtpm
    /// serves one client at a time there, and a probe could race with the test's own connection.
    pub fn start(program: &Path, state_dir: &Path) -> Result<TcpSwtpm> {
        create_dir(state_dir)?;
        let mut attempt = 1;
        loop {
            let why = match free_port_pair() {
                None => ListenFailure::NoFreePorts,
                Some(port) => match Self::start_on(program, state_dir, port)? {
                    Ok(tpm) => return Ok(tpm),
                    Err(why) => why,
                },
            };
            if attempt == TCP_ATTEMPTS {
                return Err(SwtpmError::NotListening { last: why });
            }
            attempt += 1;
        }
    }

    /// One attempt on `port` (and `port + 1`): the outer error when swtpm cannot be started at
    /// all, the inner one when it started but did not listen (then it is killed).
    fn start_on(
        program: &Path,
        state_dir: &Path,
        port: u16,
    ) -> Result<std::result::Result<TcpSwtpm, ListenFailure>> {
        let mut child = Command::new(program)
            .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
            .arg("--tpmstate")
            .arg(format!("dir={}", state_dir.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(start_failed(program, " (install the Debian package swtpm)"))?;
        Ok(match wait_listening(&mut child, port + 1) {
            Ok(()) => Ok(TcpSwtpm { child, port }),
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(why)
            }
        })
    }

    /// The control channel's port (`swtpm_ioctl --tcp 127.0.0.1:PORT`).
    pub fn ctrl_port(&self) -> u16 {
        self.port + 1
    }

    /// The `TPM2TOOLS_TCTI` / `-T` value for tpm2-tools.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// A connection to the command port. swtpm may bind it a moment after the control port that
    /// [`TcpSwtpm::start`] waited for (seen on a loaded machine), so a refusal is retried briefly.
    pub fn connect(&self) -> crate::Result<crate::Tpm> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match crate::Tpm::connect_tcp(("127.0.0.1", self.port)) {
                Err(crate::Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::ConnectionRefused
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(POLL)
                }
                result => return result,
            }
        }
    }
}

impl Drop for TcpSwtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port p with p + 1 also free at the time of asking.
fn free_port_pair() -> Option<u16> {
    let first = TcpListener::bind("127.0.0.1:0").ok()?;
    let port = first.local_addr().ok()?.port();
    (port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok()).then_some(port)
}

/// Until `port` accepts a connection; why not, when swtpm exits or the time is up.
fn wait_listening(child: &mut Child, port: u16) -> std::result::Result<(), ListenFailure> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(ListenFailure::Exited(status));
        }
        if Instant::now() > deadline {
            return Err(ListenFailure::Timeout { port });
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_name_the_state_socket_and_log() {
        let p = SwtpmPaths::in_dir(Path::new("/tmp/run"));
        let a: Vec<String> = args(&p)
            .unwrap()
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            a,
            [
                "socket",
                "--tpm2",
                "--terminate",
                "--tpmstate",
                "dir=/tmp/run/tpm",
                "--ctrl",
                "type=unixio,path=/tmp/run/swtpm.sock",
                "--log",
                "file=/tmp/run/swtpm.log"
            ]
        );
        let bad = SwtpmPaths::in_dir(Path::new("/tmp/a,b"));
        assert!(args(&bad).unwrap_err().to_string().contains("','"));
    }

    /// The CA lives in the run directory, never in the system-wide /var/lib/swtpm-localca.
    #[test]
    fn provisioning_uses_the_private_ca_of_the_run() {
        let p = SwtpmPaths::in_dir(Path::new("/tmp/run"));
        let conf = localca_conf(&p.ca_dir);
        assert_eq!(
            conf,
            "statedir = /tmp/run/localca\nsigningkey = /tmp/run/localca/signkey.pem\n\
             issuercert = /tmp/run/localca/issuercert.pem\ncertserial = /tmp/run/localca/certserial\n"
        );
        let setup = setup_conf(Path::new("/usr/bin/swtpm_localca"), &p.ca_dir);
        assert!(setup.contains("create_certs_tool_config = /tmp/run/localca/swtpm-localca.conf"));
        assert!(setup.contains("active_pcr_banks = sha1,sha256,sha384,sha512\n"));
        let a: Vec<String> = setup_args(&p)
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            a.join(" "),
            "--tpm2 --create-ek-cert --create-platform-cert --tpmstate /tmp/run/tpm --config \
             /tmp/run/swtpm_setup.conf --logfile /tmp/run/swtpm_setup.log --overwrite"
        );
    }
}
