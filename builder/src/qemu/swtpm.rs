//! swtpm: a fresh TPM 2.0 per run, reached by QEMU's `tpm-emulator` backend over a unix control socket.
//!
//! QEMU's backend speaks swtpm's control protocol on the `--ctrl` socket and passes the TPM data
//! channel as a file descriptor over it (CMD_SET_DATAFD), so swtpm needs only `--ctrl type=unixio`.
//! `--terminate` makes swtpm exit when QEMU closes that connection, so QEMU's exit ends swtpm too.
//! No `--flags startup-clear`: the firmware sends TPM2_Startup itself, as on real hardware (a second
//! Startup would fail with TPM_RC_INITIALIZE). The state directory starts empty, so every run starts
//! from a manufactured-fresh TPM with all PCRs at their reset values.

use super::process;
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long swtpm gets to create its control socket.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

/// Where a run's swtpm keeps its files (all inside the run directory).
#[derive(Debug, Clone)]
pub struct SwtpmPaths {
    pub state_dir: PathBuf,
    pub ctrl_socket: PathBuf,
    pub log: PathBuf,
}

impl SwtpmPaths {
    pub fn in_dir(run_dir: &Path) -> Self {
        SwtpmPaths {
            state_dir: run_dir.join("tpm"),
            ctrl_socket: run_dir.join("swtpm.sock"),
            log: run_dir.join("swtpm.log"),
        }
    }
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
}
