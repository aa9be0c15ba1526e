//! Attestation commands against swtpm provisioned like a real vTPM (swtpm_setup + swtpm_localca:
//! persisted RSA EK, EK certificate in NV), cross-checked with tpm2-tools 5.4 and openssl:
//!
//! * `tpm2_checkquote` accepts our quote, AK public and nonce, and rejects another nonce;
//! * the EK we create from the TCG template is the key swtpm_setup certified (the certificate's
//!   public key, read with openssl, and the persistent EK at 0x81010001);
//! * a credential made by `tpm2_makecredential` for our AK activates with our ActivateCredential, and
//!   one made for another EK does not.
//!
//! Needs swtpm, swtpm_setup, tpm2-tools and openssl; fails with a message when one is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use cvm_tpm::swtpm::{provision, SwtpmPaths, TcpSwtpm};
use cvm_tpm::{EkType, HashAlg, Tpm};

/// PCRs the agent quotes: 0–15 and 23.
const QUOTED_PCRS: [u32; 17] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 23];
/// Their TPMS_PCR_SELECTION bitmap.
const QUOTED_SELECT: [u8; 3] = [0xFF, 0xFF, 0x80];
/// Where swtpm_setup persists the RSA EK (TCG EK profile: 0x81010001).
const PERSISTENT_RSA_EK: u32 = 0x8101_0001;

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A manufactured TPM (EKs and EK certificates from a private local CA, as `cvm-image run` makes
/// it) served over TCP: the crate's launcher ([`cvm_tpm::swtpm`]), provisioning then start.
struct ProvisionedSwtpm {
    tpm: TcpSwtpm,
    dir: Dir,
}

fn run(cmd: &mut Command, what: &str) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run {what} ({e}); install it (Debian: swtpm, swtpm-tools, tpm2-tools, openssl)"
        )
    });
    out
}

impl ProvisionedSwtpm {
    fn start(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("cvm-tpm-attest-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let paths = SwtpmPaths::in_dir(&dir);
        let swtpm = Path::new("swtpm");
        provision(swtpm, &paths).unwrap_or_else(|e| {
            panic!("{e} (install it: Debian swtpm, swtpm-tools, tpm2-tools, openssl)")
        });
        let tpm = TcpSwtpm::start(swtpm, &paths.state_dir)
            .unwrap_or_else(|e| panic!("{e}; apt-get install swtpm"));
        ProvisionedSwtpm { tpm, dir: Dir(dir) }
    }

    fn connect(&self) -> Tpm {
        self.tpm.connect().expect("connecting to swtpm")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }
}

fn tpm2_checkquote(dir: &Path, nonce_hex: &str) -> std::process::Output {
    run(
        Command::new("tpm2_checkquote")
            .current_dir(dir)
            .args(["-u", "ak.pub", "-m", "quote", "-s", "sig", "-g", "sha256"])
            .args(["-f", "pcrs", "-q", nonce_hex]),
        "tpm2_checkquote",
    )
}

/// The PCR file tpm2-tools 5.4 writes with `tpm2_quote -o` (its "serialized" format: the in-memory
/// C structs, little endian): TPML_PCR_SELECTION (count, 16 × {hash u16, sizeofSelect u8,
/// pcrSelect[4], pad}), u32 number of TPML_DIGESTs, then TPML_DIGESTs of {count, 8 × {size u16,
/// buffer[64]}}. Layout checked against a file tpm2_quote wrote for the same selection.
/// (`-f values -l …` is broken in 5.4 for more than 8 PCRs: "Failed to hash PCR values".)
fn tpm2_tools_serialized_pcrs(select: [u8; 3], values: &[Vec<u8>]) -> Vec<u8> {
    const SELECTIONS: usize = 16;
    const DIGESTS_PER_LIST: usize = 8;
    const DIGEST_BUFFER: usize = 64;
    let mut out = Vec::new();
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&0x000Bu16.to_le_bytes());
    out.push(3);
    out.extend_from_slice(&select);
    out.extend_from_slice(&[0, 0]); // pcrSelect[3], padding
    out.resize(4 + SELECTIONS * 8, 0);
    let lists: Vec<&[Vec<u8>]> = values.chunks(DIGESTS_PER_LIST).collect();
    out.extend_from_slice(&(lists.len() as u32).to_le_bytes());
    for list in lists {
        out.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for i in 0..DIGESTS_PER_LIST {
            let v: &[u8] = list.get(i).map(Vec::as_slice).unwrap_or(&[]);
            out.extend_from_slice(&(v.len() as u16).to_le_bytes());
            out.extend_from_slice(v);
            out.resize(out.len() + DIGEST_BUFFER - v.len(), 0);
        }
    }
    out
}

#[test]
fn quote_is_accepted_by_tpm2_checkquote() {
    let swtpm = ProvisionedSwtpm::start("quote");
    let mut tpm = swtpm.connect();
    tpm.pcr_extend(23, &[0x42; 32]).unwrap();
    let ak = tpm.create_ak().unwrap();
    let nonce: Vec<u8> = (0u8..32).collect();
    let quote = tpm
        .quote(ak.handle, &nonce, HashAlg::Sha256, &QUOTED_PCRS)
        .unwrap();
    let values: Vec<Vec<u8>> = tpm
        .pcr_read(HashAlg::Sha256, &QUOTED_PCRS)
        .unwrap()
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let pcrs = tpm2_tools_serialized_pcrs(QUOTED_SELECT, &values);
    // The same template gives the same key again (the agent relies on it).
    let again = tpm.create_ak().unwrap();
    assert_eq!(again.public, ak.public);
    assert_eq!(again.name, ak.name);
    tpm.flush_context(again.handle).unwrap();
    let read = tpm.read_public(ak.handle).unwrap();
    assert_eq!(read.public, ak.public);
    tpm.flush_context(ak.handle).unwrap();

    std::fs::write(swtpm.path("ak.pub"), ak.tpm2b_public()).unwrap();
    std::fs::write(swtpm.path("quote"), &quote.attest).unwrap();
    std::fs::write(swtpm.path("sig"), &quote.signature).unwrap();
    std::fs::write(swtpm.path("pcrs"), &pcrs).unwrap();
    let ok = tpm2_checkquote(&swtpm.dir.0, &hex::encode(&nonce));
    assert!(
        ok.status.success(),
        "tpm2_checkquote rejected our quote: {ok:?}"
    );

    let wrong_nonce = tpm2_checkquote(&swtpm.dir.0, &hex::encode([0u8; 32]));
    assert!(!wrong_nonce.status.success(), "another nonce was accepted");

    let mut bad_values = values.clone();
    bad_values[16][0] ^= 1; // PCR 23
    let bad_pcrs = tpm2_tools_serialized_pcrs(QUOTED_SELECT, &bad_values);
    std::fs::write(swtpm.path("pcrs"), &bad_pcrs).unwrap();
    let altered = tpm2_checkquote(&swtpm.dir.0, &hex::encode(&nonce));
    assert!(
        !altered.status.success(),
        "altered PCR values were accepted"
    );
}

/// The modulus of an RSA public key in a DER certificate, as openssl prints it.
fn openssl_cert_modulus(cert_der: &Path) -> Vec<u8> {
    let out = run(
        Command::new("openssl")
            .args(["x509", "-inform", "DER", "-noout", "-modulus", "-in"])
            .arg(cert_der),
        "openssl",
    );
    assert!(out.status.success(), "openssl x509: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let hex_mod = text.trim().strip_prefix("Modulus=").expect("Modulus= line");
    hex::decode(hex_mod).unwrap()
}

/// The RSA modulus (`unique`) at the end of an RSA TPMT_PUBLIC.
fn rsa_unique(public: &[u8]) -> Vec<u8> {
    let n = u16::from_be_bytes([public[public.len() - 258], public[public.len() - 257]]) as usize;
    assert_eq!(n, 256, "RSA 2048 unique");
    public[public.len() - 256..].to_vec()
}

#[test]
fn ek_matches_certificate_and_persistent_ek() {
    let swtpm = ProvisionedSwtpm::start("ek");
    let mut tpm = swtpm.connect();
    let cert = tpm
        .ek_certificate(EkType::Rsa2048)
        .unwrap()
        .expect("swtpm_setup --create-ek-cert stores an RSA EK certificate at 0x01c00002");
    assert_eq!(cert[0], 0x30, "DER SEQUENCE");
    // No ECC P-256 EK certificate: swtpm_setup certifies an ECC P-384 EK at 0x01c00016 instead.
    assert_eq!(tpm.ek_certificate(EkType::EccP256).unwrap(), None);
    let ek = tpm.create_ek(EkType::Rsa2048).unwrap();
    let persistent = tpm.read_public(PERSISTENT_RSA_EK).unwrap();
    assert_eq!(
        ek.public, persistent.public,
        "template L-1 reproduces swtpm_setup's EK"
    );
    assert_eq!(ek.name, persistent.name);
    tpm.flush_context(ek.handle).unwrap();
    std::fs::write(swtpm.path("ek.der"), &cert).unwrap();
    assert_eq!(
        openssl_cert_modulus(&swtpm.path("ek.der")),
        rsa_unique(&ek.public)
    );
}

/// `tpm2_makecredential -T none` output: magic 0xBADCC0DE, version 1, TPM2B_ID_OBJECT,
/// TPM2B_ENCRYPTED_SECRET.
fn split_makecredential_output(bytes: &[u8]) -> (Vec<u8>, Vec<u8>) {
    assert_eq!(&bytes[..8], &[0xBA, 0xDC, 0xC0, 0xDE, 0, 0, 0, 1]);
    let rest = &bytes[8..];
    let n = u16::from_be_bytes([rest[0], rest[1]]) as usize;
    let blob = rest[2..2 + n].to_vec();
    let rest = &rest[2 + n..];
    let m = u16::from_be_bytes([rest[0], rest[1]]) as usize;
    (blob, rest[2..2 + m].to_vec())
}

fn tpm2_makecredential(dir: &Path, ek_pub: &str, ak_name: &[u8], out: &str) -> (Vec<u8>, Vec<u8>) {
    let o = run(
        Command::new("tpm2_makecredential")
            .current_dir(dir)
            .args(["-T", "none", "-e", ek_pub, "-s", "secret", "-n"])
            .arg(hex::encode(ak_name))
            .args(["-o", out]),
        "tpm2_makecredential",
    );
    assert!(o.status.success(), "tpm2_makecredential: {o:?}");
    split_makecredential_output(&std::fs::read(dir.join(out)).unwrap())
}

#[test]
fn activate_credential_made_by_tpm2_tools() {
    let swtpm = ProvisionedSwtpm::start("activate");
    let other = ProvisionedSwtpm::start("activate-other");
    let mut tpm = swtpm.connect();
    let ak = tpm.create_ak().unwrap();
    let ek = tpm.create_ek(EkType::Rsa2048).unwrap();
    let other_ek = other.connect().create_ek(EkType::Rsa2048).unwrap();
    assert_ne!(other_ek.public, ek.public);

    let secret = b"sixteen byte sec";
    std::fs::write(swtpm.path("secret"), secret).unwrap();
    std::fs::write(swtpm.path("ek.pub"), ek.tpm2b_public()).unwrap();
    std::fs::write(swtpm.path("other-ek.pub"), other_ek.tpm2b_public()).unwrap();

    let (blob, enc) = tpm2_makecredential(&swtpm.dir.0, "ek.pub", &ak.name, "cred");
    let got = tpm
        .activate_credential(ak.handle, ek.handle, &blob, &enc)
        .unwrap();
    assert_eq!(got, secret);

    let (blob, enc) = tpm2_makecredential(&swtpm.dir.0, "other-ek.pub", &ak.name, "cred2");
    let err = tpm
        .activate_credential(ak.handle, ek.handle, &blob, &enc)
        .unwrap_err();
    assert!(err.to_string().contains("TPM2_ActivateCredential"), "{err}");

    // After a failed activation the TPM still works and no session is leaked.
    let (blob, enc) = tpm2_makecredential(&swtpm.dir.0, "ek.pub", &ak.name, "cred3");
    assert_eq!(
        tpm.activate_credential(ak.handle, ek.handle, &blob, &enc)
            .unwrap(),
        secret
    );
    tpm.flush_context(ak.handle).unwrap();
    tpm.flush_context(ek.handle).unwrap();
}
