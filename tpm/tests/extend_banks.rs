//! `Tpm::pcr_extend_banks` against swtpm with all four PCR banks active, read back with tpm2-tools
//! (`tpm2_pcrread`) and compared with the same extends done by `tpm2_pcrextend` and with a Python
//! hashlib fold.
//!
//! Needs `swtpm` and tpm2-tools; fails with a message when missing.

mod common;

use std::process::Command;

use common::Swtpm;
use cvm_tpm::HashAlg;

const BANKS: [HashAlg; 4] = [
    HashAlg::Sha1,
    HashAlg::Sha256,
    HashAlg::Sha384,
    HashAlg::Sha512,
];

/// The two digests extended into each bank: bytes `0x10 + k` then `0x20 + k` for the k-th bank.
fn digest(bank_index: usize, round: u8, bank: HashAlg) -> Vec<u8> {
    vec![round * 0x10 + bank_index as u8; bank.digest_len()]
}

/// python3: for (a, n, (b1, b2)) in the banks: p = bytes(n); for b in (b1, b2): p = H_a(p + bytes([b]) * n)
const PYTHON_FOLD: [(&str, &str); 4] = [
    ("sha1", "67f736afbd40cbe26c280849d60015ecbdfa9678"),
    (
        "sha256",
        "5856b9322dfd9e27163063b391c0e84640d3831eaf81905e18cb95f316dab4c4",
    ),
    (
        "sha384",
        "2dc1668935e55a1ed3e6c9aea445e605492af5c4231ec53aa03dc5a047708c68e8612e9f272907bef3e3774b1069b9d0",
    ),
    (
        "sha512",
        "00daefbe94967e8731e74daf4516a439a061717044ec62f4a80b0ee3228adc684d71d0234e849915f07ce4eaf97573fbff989c1c54b85d644ce1f2d218096a35",
    ),
];

/// `tpm2_pcrextend PCR:alg=hex,alg=hex` (one TPM2_PCR_Extend with every bank, like ours).
fn tpm2_pcrextend(swtpm: &Swtpm, pcr: u32, round: u8) {
    let values: Vec<String> = BANKS
        .iter()
        .enumerate()
        .map(|(i, b)| format!("{}={}", b.name(), hex::encode(digest(i, round, *b))))
        .collect();
    let out = Command::new("tpm2_pcrextend")
        .arg(format!("{pcr}:{}", values.join(",")))
        .env("TPM2TOOLS_TCTI", swtpm.tcti())
        .output()
        .unwrap_or_else(|e| panic!("cannot run tpm2_pcrextend ({e}); apt-get install tpm2-tools"));
    assert!(out.status.success(), "tpm2_pcrextend: {out:?}");
}

#[test]
fn every_bank_is_extended_with_its_own_digest() {
    let swtpm = Swtpm::start("extend-banks");
    let mut tpm = swtpm.connect();
    assert_eq!(
        tpm.active_banks().unwrap(),
        BANKS,
        "a fresh swtpm (libtpms ≥ 0.9) has sha1, sha256, sha384 and sha512 active"
    );
    for round in [1u8, 2] {
        let digests: Vec<(HashAlg, Vec<u8>)> = BANKS
            .iter()
            .enumerate()
            .map(|(i, b)| (*b, digest(i, round, *b)))
            .collect();
        let refs: Vec<(HashAlg, &[u8])> = digests.iter().map(|(b, d)| (*b, d.as_slice())).collect();
        tpm.pcr_extend_banks(23, &refs).unwrap();
    }
    let ours: Vec<Vec<u8>> = BANKS
        .iter()
        .map(|b| tpm.pcr_read(*b, &[23]).unwrap()[0].1.clone())
        .collect();
    drop(tpm);

    // The same extends of PCR 16 by tpm2-tools.
    tpm2_pcrextend(&swtpm, 16, 1);
    tpm2_pcrextend(&swtpm, 16, 2);
    for (i, bank) in BANKS.iter().enumerate() {
        let read = swtpm.tpm2_pcrread(&format!("{}:16,23", bank.name()));
        assert_eq!(read.len(), 2, "{}: {read:?}", bank.name());
        let (pcr16, pcr23) = (&read[0].1, &read[1].1);
        assert_eq!(pcr23, pcr16, "{}: ours vs tpm2_pcrextend", bank.name());
        assert_eq!(&ours[i], pcr23, "{}: our read vs tpm2_pcrread", bank.name());
        assert_eq!(PYTHON_FOLD[i].0, bank.name());
        assert_eq!(hex::encode(pcr23), PYTHON_FOLD[i].1, "{}", bank.name());
    }
}

#[test]
fn a_bank_left_out_keeps_its_value_and_bad_lists_are_refused() {
    let swtpm = Swtpm::start("extend-some-banks");
    let mut tpm = swtpm.connect();
    tpm.pcr_extend_banks(23, &[(HashAlg::Sha384, &[0x12; 48])])
        .unwrap();
    assert_eq!(
        tpm.pcr_read(HashAlg::Sha256, &[23]).unwrap()[0].1,
        vec![0; 32]
    );
    let err = tpm
        .pcr_extend_banks(23, &[(HashAlg::Sha384, &[0x12; 32])])
        .unwrap_err()
        .to_string();
    assert!(err.contains("sha384 digest has 32 bytes"), "{err}");
    drop(tpm);
    // The first round of the fold above, SHA-384 only (python3 hashlib).
    let read = swtpm.tpm2_pcrread("sha384:23");
    assert_eq!(
        hex::encode(&read[0].1),
        "3d13bc29931cf8f7f4c931039334b3026168362b80e414b5266a9dba4d6cbe764eb360d5178a755c936b33fe26027158"
    );
}
