//! The boot signing key against swtpm: created under a PolicyPCR of the current PCRs, certified by
//! the AK, signing only while those PCRs are unchanged. Cross-checked with independent references:
//!
//! * signatures (the key's and the AK's certify signature) verify with RustCrypto `p256`;
//! * the authPolicy equals what the TPM itself computes in a `tpm2_policypcr` trial session for the
//!   PCR values `tpm2_pcrread` reads, hashed by `openssl dgst`;
//! * the certify's attested Name/qualifiedName equal the Name the TPM reports and the Part 1 §16
//!   formula for a null-hierarchy primary.
//!
//! Needs swtpm, swtpm_ioctl, tpm2-tools and openssl; fails with a message when one is missing.

mod common;

use std::path::Path;
use std::process::Command;

use common::Swtpm;
use cvm_tpm::constants::{
    tpma_object, TPM_ALG_ECC, TPM_ALG_ECDSA, TPM_ALG_NULL, TPM_ALG_SHA256, TPM_ECC_NIST_P256,
    TPM_GENERATED_VALUE, TPM_ST_ATTEST_CERTIFY,
};
use cvm_tpm::templates::{self, SIGNING_KEY_ATTRIBUTES};
use cvm_tpm::{pcr_policy_digest, EcdsaSignature, Error, HashAlg, Tpm, TPM_RH_NULL};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

/// The PCRs the agent binds the key to: 0–15 and 23.
const BOUND_PCRS: [u32; 17] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 23];
const BOUND_PCRS_TOOLS: &str = "sha256:0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,23";
/// `TPM_RC_POLICY_FAIL` on session 1, as `tpm2_rc_decode 0x99d` explains it.
const TPM_RC_POLICY_FAIL_SESSION_1: u32 = 0x99D;

fn run(cmd: &mut Command, what: &str) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {what} ({e}); install it (Debian: swtpm-tools, tpm2-tools, openssl)")
    });
    assert!(out.status.success(), "{what}: {out:?}");
    out
}

/// Big-endian reader for the test's own parsing of TPM structures.
struct Rd<'a>(&'a [u8]);
impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take(2).try_into().unwrap())
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    fn tpm2b(&mut self) -> &'a [u8] {
        let n = self.u16() as usize;
        self.take(n)
    }
}

/// authPolicy and the P-256 point of an ECC signing key's TPMT_PUBLIC (Part 2 §12.2.4).
fn ecc_public(public: &[u8]) -> (u32, Vec<u8>, VerifyingKey) {
    let mut r = Rd(public);
    assert_eq!(r.u16(), TPM_ALG_ECC);
    assert_eq!(r.u16(), TPM_ALG_SHA256);
    let attributes = r.u32();
    let policy = r.tpm2b().to_vec();
    assert_eq!(r.u16(), TPM_ALG_NULL, "symmetric");
    assert_eq!((r.u16(), r.u16()), (TPM_ALG_ECDSA, TPM_ALG_SHA256));
    assert_eq!((r.u16(), r.u16()), (TPM_ECC_NIST_P256, TPM_ALG_NULL));
    let (x, y) = (r.tpm2b(), r.tpm2b());
    assert!(r.0.is_empty());
    let mut sec1 = vec![0x04];
    sec1.extend_from_slice(x);
    sec1.extend_from_slice(y);
    let key = VerifyingKey::from_sec1_bytes(&sec1).expect("a P-256 point");
    (attributes, policy, key)
}

/// The fields of a certify TPMS_ATTEST a verifier checks.
struct CertifyInfo {
    qualified_signer: Vec<u8>,
    extra_data: Vec<u8>,
    name: Vec<u8>,
    qualified_name: Vec<u8>,
}

fn parse_certify(attest: &[u8]) -> CertifyInfo {
    let mut r = Rd(attest);
    assert_eq!(r.u32(), TPM_GENERATED_VALUE);
    assert_eq!(r.u16(), TPM_ST_ATTEST_CERTIFY);
    let qualified_signer = r.tpm2b().to_vec();
    let extra_data = r.tpm2b().to_vec();
    r.take(8 + 4 + 4 + 1); // clockInfo
    r.take(8); // firmwareVersion
    let name = r.tpm2b().to_vec();
    let qualified_name = r.tpm2b().to_vec();
    assert!(r.0.is_empty(), "trailing bytes after TPMS_CERTIFY_INFO");
    CertifyInfo {
        qualified_signer,
        extra_data,
        name,
        qualified_name,
    }
}

/// Why [`verify`] refused a signature: our parser, or p256.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error(transparent)]
    Tpm(#[from] cvm_tpm::Error),
    #[error(transparent)]
    Ecdsa(#[from] p256::ecdsa::Error),
}

/// A TPMT_SIGNATURE checked with p256 over SHA-256(`message`), in both encodings we serve.
fn verify(key: &VerifyingKey, message: &[u8], tpmt_signature: &[u8]) -> Result<(), Refused> {
    let sig = EcdsaSignature::parse(tpmt_signature)?;
    assert_eq!(sig.hash_alg(), Some(HashAlg::Sha256));
    let mut rs = [0u8; 64];
    rs[32 - sig.r.len()..32].copy_from_slice(&sig.r);
    rs[64 - sig.s.len()..].copy_from_slice(&sig.s);
    let fixed = Signature::from_slice(&rs)?;
    let der = Signature::from_der(&sig.to_der())?;
    assert_eq!(fixed, der, "DER and r‖s encodings differ");
    Ok(key.verify(message, &fixed)?)
}

fn read_bound_pcrs(tpm: &mut Tpm) -> Vec<(u32, Vec<u8>)> {
    tpm.pcr_read(HashAlg::Sha256, &BOUND_PCRS).unwrap()
}

/// The policy digest swtpm computes in a trial session for the PCR values tpm2-tools reads, hashed
/// by openssl: no code of this crate is involved.
fn tpm2_tools_pcr_policy(swtpm: &Swtpm, dir: &Path) -> Vec<u8> {
    let tools = |args: &[&str], what: &str| {
        run(
            Command::new(args[0])
                .args(&args[1..])
                .current_dir(dir)
                .env("TPM2TOOLS_TCTI", swtpm.tcti()),
            what,
        )
    };
    // tpm2-tools 5.4 reads at most 8 PCRs per call into a file; concatenate in ascending order.
    let mut values = Vec::new();
    for (i, sel) in [
        "sha256:0,1,2,3,4,5,6,7",
        "sha256:8,9,10,11,12,13,14,15",
        "sha256:23",
    ]
    .iter()
    .enumerate()
    {
        let file = format!("pcrs{i}.bin");
        tools(&["tpm2_pcrread", sel, "-o", &file], "tpm2_pcrread");
        values.extend(std::fs::read(dir.join(file)).unwrap());
    }
    assert_eq!(values.len(), BOUND_PCRS.len() * 32);
    std::fs::write(dir.join("pcrs.bin"), &values).unwrap();
    let dgst = run(
        Command::new("openssl")
            .args(["dgst", "-sha256", "-binary", "pcrs.bin"])
            .current_dir(dir),
        "openssl dgst",
    );
    let pcr_digest = hex::encode(dgst.stdout);
    tools(
        &["tpm2_startauthsession", "-S", "trial.ctx"],
        "tpm2_startauthsession",
    );
    tools(
        &[
            "tpm2_policypcr",
            "-S",
            "trial.ctx",
            "-l",
            BOUND_PCRS_TOOLS,
            "-L",
            "policy.bin",
            &pcr_digest,
        ],
        "tpm2_policypcr",
    );
    tools(&["tpm2_flushcontext", "trial.ctx"], "tpm2_flushcontext");
    std::fs::read(dir.join("policy.bin")).unwrap()
}

#[test]
fn policy_digest_matches_tpm2_policypcr_and_the_keys_auth_policy() {
    let swtpm = Swtpm::start("sk-policy");
    let mut tpm = swtpm.connect();
    tpm.pcr_extend(0, &[0x01; 32]).unwrap();
    tpm.pcr_extend(9, &[0x09; 32]).unwrap();
    tpm.pcr_extend(23, &[0x23; 32]).unwrap();
    let policy = pcr_policy_digest(HashAlg::Sha256, &read_bound_pcrs(&mut tpm)).unwrap();
    let key = tpm.create_signing_key(&policy).unwrap();
    let read = tpm.read_public(key.handle).unwrap();
    assert_eq!(read.public, key.public);
    assert_eq!(read.name, key.name);
    let (attributes, auth_policy, _) = ecc_public(&read.public);
    assert_eq!(
        attributes, 0x0004_0032,
        "fixedTPM|fixedParent|sensitiveDataOrigin|sign"
    );
    assert_eq!(auth_policy, policy);
    // Name = nameAlg ‖ SHA-256(TPMT_PUBLIC) (Part 1 §16), as the TPM reports it.
    let mut name = vec![0x00, 0x0B];
    name.extend_from_slice(&Sha256::digest(&read.public));
    assert_eq!(read.name, name);
    tpm.flush_context(key.handle).unwrap();
    drop(tpm);

    let dir = swtpm.work_dir();
    assert_eq!(
        hex::encode(tpm2_tools_pcr_policy(&swtpm, &dir)),
        hex::encode(policy),
        "our PolicyPCR digest differs from the TPM's trial-session digest"
    );
}

#[test]
fn certified_key_signs_until_a_bound_pcr_changes() {
    let swtpm = Swtpm::start("sk-sign");
    let mut tpm = swtpm.connect();
    tpm.pcr_extend(4, &[0x44; 32]).unwrap();
    tpm.pcr_extend(23, &[0x23; 32]).unwrap();
    let policy = pcr_policy_digest(HashAlg::Sha256, &read_bound_pcrs(&mut tpm)).unwrap();
    let key = tpm.create_signing_key(&policy).unwrap();
    let ak = tpm.create_ak().unwrap();
    let (_, _, key_pub) = ecc_public(&key.public);
    let (_, _, ak_pub) = ecc_public(&ak.public);

    // Certify: signed by the AK, fresh (extraData = nonce), about this key.
    let nonce: Vec<u8> = (100u8..132).collect();
    let cert = tpm.certify(key.handle, ak.handle, &nonce).unwrap();
    verify(&ak_pub, &cert.attest, &cert.signature).expect("AK signature over certify_info");
    let info = parse_certify(&cert.attest);
    assert_eq!(info.extra_data, nonce);
    assert_eq!(info.name, key.name);
    // qualifiedName of a primary = nameAlg ‖ H(hierarchy handle ‖ Name) (Part 1 §16): null hierarchy.
    let mut qn_input = TPM_RH_NULL.to_be_bytes().to_vec();
    qn_input.extend_from_slice(&key.name);
    let mut qn = vec![0x00, 0x0B];
    qn.extend_from_slice(&Sha256::digest(&qn_input));
    assert_eq!(info.qualified_name, qn);
    // The AK is a primary of the endorsement hierarchy: its qualified name signs.
    let mut ak_qn_input = cvm_tpm::TPM_RH_ENDORSEMENT.to_be_bytes().to_vec();
    ak_qn_input.extend_from_slice(&ak.name);
    assert_eq!(
        &info.qualified_signer[2..],
        Sha256::digest(&ak_qn_input).as_slice()
    );
    let mut forged = cert.attest.clone();
    *forged.last_mut().unwrap() ^= 1;
    assert!(verify(&ak_pub, &forged, &cert.signature).is_err());

    // Sign in the bound state; an extend of a PCR outside the policy does not matter.
    let message = b"workload message";
    let digest: [u8; 32] = Sha256::digest(message).into();
    let sig = tpm
        .sign_with_pcr_policy(key.handle, HashAlg::Sha256, &BOUND_PCRS, &digest)
        .unwrap();
    verify(&key_pub, message, &sig).expect("signature by the boot key");
    assert!(verify(&key_pub, b"another message", &sig).is_err());
    assert!(verify(&ak_pub, message, &sig).is_err());
    tpm.pcr_extend(16, &[0x16; 32]).unwrap();
    let sig = tpm
        .sign_with_pcr_policy(key.handle, HashAlg::Sha256, &BOUND_PCRS, &digest)
        .unwrap();
    verify(&key_pub, message, &sig).expect("signature after a PCR 16 extend");

    // A bound PCR moves: every attempt is refused with the typed error, and no session leaks
    // (swtpm has 3 session slots; 5 refusals would exhaust them).
    tpm.pcr_extend(23, &[0x99; 32]).unwrap();
    for _ in 0..5 {
        match tpm.sign_with_pcr_policy(key.handle, HashAlg::Sha256, &BOUND_PCRS, &digest) {
            Err(Error::PcrPolicyMismatch { command, rc }) => {
                assert_eq!(command, "TPM2_Sign");
                assert_eq!(rc.0, TPM_RC_POLICY_FAIL_SESSION_1);
            }
            other => panic!("expected PcrPolicyMismatch, got {other:?}"),
        }
    }
    // Certify does not depend on the PCRs: a verifier still learns the key and sees the mismatch.
    tpm.certify(key.handle, ak.handle, &nonce).unwrap();
    tpm.flush_context(key.handle).unwrap();
    tpm.flush_context(ak.handle).unwrap();
}

#[test]
fn same_key_within_a_boot_and_a_new_one_after_a_tpm_reset() {
    let swtpm = Swtpm::start("sk-reset");
    let mut tpm = swtpm.connect();
    let policy = pcr_policy_digest(HashAlg::Sha256, &read_bound_pcrs(&mut tpm)).unwrap();
    let first = tpm.create_signing_key(&policy).unwrap();
    tpm.flush_context(first.handle).unwrap();
    let again = tpm.create_signing_key(&policy).unwrap();
    tpm.flush_context(again.handle).unwrap();
    assert_eq!(again.public, first.public, "recreated within the boot");
    drop(tpm);

    swtpm.reset();
    let mut tpm = swtpm.connect();
    let after = tpm.create_signing_key(&policy).unwrap();
    assert_ne!(
        after.public, first.public,
        "the null seed is new after a TPM reset: so is the key"
    );
    tpm.flush_context(after.handle).unwrap();
}

/// Why the template has no adminWithPolicy: with it, TPM2_Certify needs the PolicyPCR for the
/// ADMIN role too (a password is refused: TPM_RC_AUTH_TYPE), and a TPM refuses an ADMIN-role policy
/// session without TPM2_PolicyCommandCode (TPM_RC_POLICY_FAIL), shown here with tpm2-tools' own
/// PolicyPCR session.
#[test]
fn admin_with_policy_would_make_certify_impossible() {
    let swtpm = Swtpm::start("sk-admin");
    let mut tpm = swtpm.connect();
    let values = read_bound_pcrs(&mut tpm);
    let policy = pcr_policy_digest(HashAlg::Sha256, &values).unwrap();
    let template = templates::ecc_p256_signing_template(
        SIGNING_KEY_ATTRIBUTES | tpma_object::ADMIN_WITH_POLICY,
        &policy,
    );
    let key = tpm.create_primary(TPM_RH_NULL, &template).unwrap();
    let ak = tpm.create_ak().unwrap();
    let err = tpm.certify(key.handle, ak.handle, &[1; 16]).unwrap_err();
    assert!(err.to_string().contains("TPM_RC_AUTH_TYPE"), "{err}");
    tpm.flush_context(key.handle).unwrap();
    tpm.flush_context(ak.handle).unwrap();
    drop(tpm);

    let dir = swtpm.work_dir();
    std::fs::write(dir.join("policy.bin"), policy).unwrap();
    let pcr_digest: Vec<u8> = values.iter().flat_map(|(_, v)| v.clone()).collect();
    let pcr_digest = hex::encode(Sha256::digest(&pcr_digest));
    let tool = |args: &[&str]| {
        Command::new(args[0])
            .args(&args[1..])
            .current_dir(&dir)
            .env("TPM2TOOLS_TCTI", swtpm.tcti())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} ({e}); apt-get install tpm2-tools", args[0]))
    };
    let ok = |args: &[&str]| {
        let out = tool(args);
        assert!(out.status.success(), "{}: {out:?}", args[0]);
    };
    ok(&[
        "tpm2_createprimary",
        "-C",
        "n",
        "-G",
        "ecc256:ecdsa-sha256:null",
        "-g",
        "sha256",
        "-a",
        "fixedtpm|fixedparent|sensitivedataorigin|sign|adminwithpolicy",
        "-L",
        "policy.bin",
        "-c",
        "key.ctx",
    ]);
    ok(&[
        "tpm2_createprimary",
        "-C",
        "e",
        "-G",
        "ecc256:ecdsa-sha256:null",
        "-g",
        "sha256",
        "-a",
        "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign",
        "-c",
        "ak.ctx",
    ]);
    ok(&["tpm2_flushcontext", "-t"]);
    ok(&["tpm2_startauthsession", "--policy-session", "-S", "s.ctx"]);
    ok(&[
        "tpm2_policypcr",
        "-S",
        "s.ctx",
        "-l",
        BOUND_PCRS_TOOLS,
        &pcr_digest,
    ]);
    let certify = tool(&[
        "tpm2_certify",
        "-c",
        "key.ctx",
        "-C",
        "ak.ctx",
        "-P",
        "session:s.ctx",
        "-g",
        "sha256",
        "-o",
        "attest",
        "-s",
        "sig",
    ]);
    let stderr = String::from_utf8_lossy(&certify.stderr);
    assert!(
        !certify.status.success(),
        "certify with a PolicyPCR session succeeded"
    );
    assert!(
        stderr.contains("0x99D") || stderr.contains("0x99d"),
        "{stderr}"
    );
}
