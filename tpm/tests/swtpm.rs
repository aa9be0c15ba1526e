//! cvm-tpm against a real TPM 2.0 implementation (swtpm), cross-checked with tpm2-tools.
//!
//! Needs `swtpm` and `tpm2_pcrread` (Debian: swtpm, tpm2-tools); fails with a message when missing.

mod common;

use common::Swtpm;
use cvm_tpm::HashAlg;

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
