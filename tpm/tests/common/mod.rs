//! A plain swtpm for the integration tests (fresh state, no EK certificates), killed on drop.
//!
//! Needs `swtpm` (and `tpm2-tools` for the helpers that run it); fails with a message when missing.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cvm_tpm::Tpm;

/// A swtpm process with its own state directory, killed on drop.
pub struct Swtpm {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Two free consecutive ports: the tpm2-tss swtpm TCTI expects the control port at port + 1.
fn free_port_pair() -> (u16, u16) {
    for _ in 0..100 {
        let first = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let port = first.local_addr().expect("local_addr").port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return (port, port + 1);
        }
    }
    panic!("no two consecutive free TCP ports on 127.0.0.1");
}

impl Swtpm {
    pub fn start(name: &str) -> Swtpm {
        let dir = std::env::temp_dir().join(format!("cvm-tpm-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating swtpm state dir");
        let (port, ctrl) = free_port_pair();
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={ctrl},bindaddr=127.0.0.1"))
            .arg("--tpmstate")
            .arg(format!("dir={}", dir.display()))
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run swtpm ({e}); install it: apt-get install swtpm")
            });
        // Probe the control port: swtpm serves one client at a time on the command port, and a probe
        // connection there can race with the test's own connection (seen as a reset).
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", ctrl)).is_err() {
            assert!(
                Instant::now() < deadline,
                "swtpm did not listen on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Swtpm {
            child,
            port,
            _dir: TempDir(dir),
        }
    }

    /// `TPM2TOOLS_TCTI` value for tpm2-tools (swtpm serves one client at a time: drop any [`Tpm`]
    /// first).
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// A scratch directory next to the TPM state, removed with it.
    pub fn work_dir(&self) -> std::path::PathBuf {
        let dir = self._dir.0.join("work");
        std::fs::create_dir_all(&dir).expect("creating the test work dir");
        dir
    }

    /// Power-cycles the TPM through the control channel (`swtpm_ioctl -i`: CMD_INIT) and sends
    /// TPM2_Startup(CLEAR) with `tpm2_startup -c`: a TPM reset, as at a reboot. Connections made
    /// before are dead afterwards.
    pub fn reset(&self) {
        let out = Command::new("swtpm_ioctl")
            .arg("--tcp")
            .arg(format!("127.0.0.1:{}", self.port + 1))
            .arg("-i")
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run swtpm_ioctl ({e}); apt-get install swtpm-tools")
            });
        assert!(out.status.success(), "swtpm_ioctl -i: {out:?}");
        let out = Command::new("tpm2_startup")
            .arg("-c")
            .env("TPM2TOOLS_TCTI", self.tcti())
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run tpm2_startup ({e}); apt-get install tpm2-tools")
            });
        assert!(out.status.success(), "tpm2_startup -c: {out:?}");
    }

    pub fn connect(&self) -> Tpm {
        Tpm::connect_tcp(("127.0.0.1", self.port)).expect("connecting to swtpm")
    }

    /// `tpm2_pcrread <selection>` (swtpm serves one client at a time: drop any [`Tpm`] first) through the swtpm TCTI, parsed into (pcr, digest).
    pub fn tpm2_pcrread(&self, selection: &str) -> Vec<(u32, Vec<u8>)> {
        let out = Command::new("tpm2_pcrread")
            .arg(selection)
            .env(
                "TPM2TOOLS_TCTI",
                format!("swtpm:host=127.0.0.1,port={}", self.port),
            )
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run tpm2_pcrread ({e}); install it: apt-get install tpm2-tools")
            });
        assert!(out.status.success(), "tpm2_pcrread: {out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| {
                let (idx, val) = l.split_once(':')?;
                let val = val.trim().strip_prefix("0x")?;
                Some((idx.trim().parse().ok()?, hex::decode(val).ok()?))
            })
            .collect()
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
