//! cvm-tpm against a real TPM 2.0 implementation (swtpm), cross-checked with tpm2-tools.
//!
//! Needs `swtpm` and `tpm2_pcrread` (Debian: swtpm, tpm2-tools); fails with a message when missing.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cvm_tpm::{HashAlg, Tpm};

/// A swtpm process with its own state directory, killed on drop.
struct Swtpm {
    child: Child,
    port: u16,
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
    fn start(name: &str) -> Swtpm {
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

    fn connect(&self) -> Tpm {
        Tpm::connect_tcp(("127.0.0.1", self.port)).expect("connecting to swtpm")
    }

    /// `tpm2_pcrread <selection>` (swtpm serves one client at a time: drop any [`Tpm`] first) through the swtpm TCTI, parsed into (pcr, digest).
    fn tpm2_pcrread(&self, selection: &str) -> Vec<(u32, Vec<u8>)> {
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

#[test]
fn extend_pcr23_matches_tpm2_tools_and_hand_fold() {
    let swtpm = Swtpm::start("extend");
    let mut tpm = swtpm.connect();
    tpm.pcr_extend(23, &[0x11; 32]).unwrap();
    tpm.pcr_extend(23, &[0x22; 32]).unwrap();

    // python3: p=bytes(32); for b in (0x11,0x22): p=sha256(p+bytes([b])*32).digest()
    let want =
        hex::decode("78830000e1197790a7e1884139a65721210d642ad112e6c9899a05cb214027a5").unwrap();
    let ours = tpm.pcr_read(HashAlg::Sha256, &[23]).unwrap();
    assert_eq!(ours, vec![(23, want.clone())]);
    drop(tpm);
    assert_eq!(swtpm.tpm2_pcrread("sha256:23"), vec![(23, want)]);
}

#[test]
fn read_all_24_pcrs_across_several_responses() {
    let swtpm = Swtpm::start("readall");
    let mut tpm = swtpm.connect();
    tpm.pcr_extend(3, &[0x33; 32]).unwrap();
    tpm.pcr_extend(16, &[0x44; 32]).unwrap();
    let all: Vec<u32> = (0..24).collect();
    let ours = tpm.pcr_read(HashAlg::Sha256, &all).unwrap();
    assert_eq!(ours.len(), 24);
    // The sha1 bank is a separate bank: untouched by our sha256-only extends.
    let sha1 = tpm.pcr_read(HashAlg::Sha1, &[3]).unwrap();
    drop(tpm);
    assert_eq!(ours, swtpm.tpm2_pcrread("sha256:all"));
    assert_eq!(sha1, swtpm.tpm2_pcrread("sha1:3"));
    assert_eq!(sha1[0].1, vec![0; 20]);
}

#[test]
fn banks_and_errors() {
    let swtpm = Swtpm::start("banks");
    let mut tpm = swtpm.connect();
    // `tpm2_getcap pcrs` on swtpm 0.7: sha1, sha256, sha384, sha512, each with PCRs 0..23.
    let banks = tpm.active_banks().unwrap();
    assert_eq!(
        banks,
        vec![
            HashAlg::Sha1,
            HashAlg::Sha256,
            HashAlg::Sha384,
            HashAlg::Sha512
        ]
    );
    assert!(tpm.pcr_extend(24, &[0; 32]).is_err());
    // PCR 0 may only be extended from locality 0 … which we are; PCR 17 needs locality 4.
    let err = tpm.pcr_extend(17, &[0; 32]).unwrap_err().to_string();
    assert!(
        err.starts_with("TPM2_PCR_Extend failed: TPM_RC_LOCALITY"),
        "{err}"
    );
}
