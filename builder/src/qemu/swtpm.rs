//! swtpm for a run: a fresh, provisioned TPM 2.0 per VM, started by the TPM crate's launcher
//! ([`cvm_tpm::swtpm`], which documents the setup) in the run's process group.

use super::process;
use anyhow::Result;
use std::path::Path;
use std::process::Child;

pub use cvm_tpm::swtpm::{args, config_files, provision, setup_args, setup_program, SwtpmPaths};

/// Starts swtpm in process group `pgrp` (0 = a new group led by swtpm) and waits for its socket.
pub fn spawn(
    program: &Path,
    paths: &SwtpmPaths,
    pgrp: u32,
    die_with_parent: bool,
) -> Result<Child> {
    Ok(cvm_tpm::swtpm::spawn(program, paths, |cmd| {
        process::configure(cmd, pgrp, die_with_parent)
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cvm_tpm::swtpm::{LOCALCA_ISSUER_CERT, LOCALCA_ROOT_CERT};
    use std::process::Command;

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
