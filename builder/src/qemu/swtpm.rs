//! swtpm: a fresh TPM 2.0 per run, reached by QEMU's `tpm-emulator` backend over a unix control socket.
//!
//! QEMU's backend speaks swtpm's control protocol on the `--ctrl` socket and passes the TPM data
//! channel as a file descriptor over it (CMD_SET_DATAFD), so swtpm needs only `--ctrl type=unixio`.
//! `--terminate` makes swtpm exit when QEMU closes that connection, so QEMU's exit ends swtpm too.
//! No `--flags startup-clear`: the firmware sends TPM2_Startup itself, as on real hardware (a second
//! Startup would fail with TPM_RC_INITIALIZE).
//!
//! Every run starts from a freshly *manufactured* TPM, like a cloud vTPM: [`provision`] runs
//! `swtpm_setup` on an empty state directory, which creates the RSA 2048 and ECC EKs and stores EK
//! and platform certificates in NV, issued by `swtpm_localca` with a CA private to this run (its
//! configuration, keys and serial counter live in the run directory, never in the system-wide
//! `/var/lib/swtpm-localca`). The CA's certificates ([`SwtpmPaths::ca_bundle`]) are what a verifier
//! passes as `verify --ek-ca` to check the EK certificate chain.

use super::process;
use anyhow::{bail, Context, Result};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long swtpm gets to create its control socket.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);
/// The provisioning tools, installed next to `swtpm` by Debian's `swtpm-tools`.
const SWTPM_SETUP: &str = "swtpm_setup";
const SWTPM_LOCALCA: &str = "swtpm_localca";
/// Files swtpm_localca creates in its state directory (swtpm-localca(8)): the intermediate CA that
/// signs the EK certificates, and the root CA that signs the intermediate.
const LOCALCA_ISSUER_CERT: &str = "issuercert.pem";
const LOCALCA_ROOT_CERT: &str = "swtpm-localca-rootca-cert.pem";
/// Platform certificate fields swtpm_localca writes (`--platform-*` options).
const PLATFORM_MANUFACTURER: &str = "cvm-image";
const PLATFORM_MODEL: &str = "QEMU";
const PLATFORM_VERSION: &str = "2.1";
/// PCR banks to activate: all four, like the vTPMs of the clouds (several banks) — the firmware then
/// logs every bank, and the predictions are checked in each (sha256 is the one quoted and verified).
const ACTIVE_PCR_BANKS: &str = "sha1,sha256,sha384,sha512";

/// Where a run's swtpm keeps its files (all inside the run directory).
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
            let p = self.ca_dir.join(name);
            let bytes = std::fs::read(&p)
                .with_context(|| format!("swtpm_localca did not create {}", p.display()))?;
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

/// Manufactures the TPM in `paths.state_dir`: EKs, EK and platform certificates from the run's own
/// local CA. `swtpm` is the emulator's path (the provisioning tools are looked up beside it).
pub fn provision(swtpm: &Path, paths: &SwtpmPaths) -> Result<()> {
    for dir in [&paths.state_dir, &paths.ca_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let setup = sibling(swtpm, SWTPM_SETUP);
    let localca = sibling(&setup, SWTPM_LOCALCA);
    let write = |p: PathBuf, text: String| {
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))
    };
    write(
        paths.ca_dir.join("swtpm-localca.conf"),
        localca_conf(&paths.ca_dir),
    )?;
    write(
        paths.ca_dir.join("swtpm-localca.options"),
        localca_options(),
    )?;
    write(
        paths.setup_config.clone(),
        setup_conf(&localca, &paths.ca_dir),
    )?;
    let out = Command::new(&setup)
        .args(setup_args(paths))
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!(
                "cannot start {} (install the Debian package swtpm-tools)",
                setup.display()
            )
        })?;
    if !out.status.success() {
        bail!(
            "{} failed ({}) provisioning the TPM; its log ({}):\n{}",
            setup.display(),
            out.status,
            paths.setup_log.display(),
            super::tail_of(&paths.setup_log, 20)
        );
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

/// swtpm's command-line arguments. swtpm splits option values at ',' and has no escape for it, so a
/// path with a comma is refused rather than silently cut.
pub fn args(paths: &SwtpmPaths) -> Result<Vec<OsString>> {
    for p in [&paths.state_dir, &paths.ctrl_socket, &paths.log] {
        if p.to_string_lossy().contains(',') {
            bail!(
                "swtpm cannot use {}: its option syntax does not allow ',' in paths (set TMPDIR to a \
                 directory without one)",
                p.display()
            );
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

/// Starts swtpm in process group `pgrp` (0 = a new group led by swtpm) and waits for its socket.
pub fn spawn(
    program: &Path,
    paths: &SwtpmPaths,
    pgrp: u32,
    die_with_parent: bool,
) -> Result<Child> {
    std::fs::create_dir_all(&paths.state_dir)
        .with_context(|| format!("cannot create {}", paths.state_dir.display()))?;
    let mut cmd = Command::new(program);
    cmd.args(args(paths)?)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    process::configure(&mut cmd, pgrp, die_with_parent);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    let started = Instant::now();
    while !paths.ctrl_socket.exists() {
        if let Some(status) = child.try_wait().context("waiting for swtpm")? {
            bail!(
                "swtpm exited ({status}) before creating its socket; its log ({}):\n{}",
                paths.log.display(),
                super::tail_of(&paths.log, 20)
            );
        }
        if started.elapsed() > SOCKET_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "swtpm did not create {} within {} s; its log:\n{}",
                paths.ctrl_socket.display(),
                SOCKET_TIMEOUT.as_secs(),
                super::tail_of(&paths.log, 20)
            );
        }
        std::thread::sleep(POLL);
    }
    Ok(child)
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

    /// swtpm_setup really manufactures a TPM with our configuration: the bundle holds the issuer
    /// and the root certificate, and openssl verifies the issuer against the root.
    #[test]
    fn provisioned_ca_bundle_verifies_with_openssl() {
        let dir = crate::testutil::TempDir::new("swtpm-provision");
        let p = SwtpmPaths::in_dir(dir.path());
        provision(Path::new("swtpm"), &p).expect("swtpm_setup (package swtpm-tools) is required");
        let bundle = p.ca_bundle().unwrap();
        let text = String::from_utf8(bundle).unwrap();
        assert_eq!(text.matches("BEGIN CERTIFICATE").count(), 2);
        let o = Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(p.ca_dir.join(LOCALCA_ROOT_CERT))
            .arg(p.ca_dir.join(LOCALCA_ISSUER_CERT))
            .output()
            .expect("openssl is required for this test");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}
