//! Signed golden measurements (`cvm-image golden sign|verify`, `verify --golden-pubkey`), checked
//! against openssl both ways with keys openssl generates here. No image build and no boot: the
//! signature covers the golden file's bytes, and `verify` checks it before any evidence.

mod common;
use common::*;

use base64::Engine;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// ECDSA signatures openssl makes per key: its nonces are random, so several cover both halves
/// of the S range (a verifier that wrongly required low-S would fail one of them).
const OPENSSL_ECDSA_ROUNDS: usize = 8;

/// A golden-file stand-in: the signature is over bytes, so any content will do for sign/verify.
const GOLDEN: &str = "{\n  \"format\": 1,\n  \"profiles\": {}\n}\n";

struct Keys {
    dir: PathBuf,
}

impl Keys {
    fn private(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }
    fn public(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pub"))
    }
}

fn openssl(args: &[&str]) -> String {
    ok(Command::new("openssl").args(args))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// ec (PKCS#8 P-256), rsa (PKCS#8 RSA-2048), sec1 (`BEGIN EC PRIVATE KEY` with an `EC PARAMETERS`
/// block), rsa1 (`BEGIN RSA PRIVATE KEY`), each with its SPKI public key.
fn keys(name: &str) -> Keys {
    let dir = scratch(name);
    let k = Keys { dir };
    let gen = |name: &str, args: &[&str]| {
        let mut a = args.to_vec();
        let out = k.private(name);
        a.extend(["-out", s(&out)]);
        openssl(&a);
        openssl(&[
            "pkey",
            "-in",
            s(&out),
            "-pubout",
            "-out",
            s(&k.public(name)),
        ]);
    };
    gen(
        "ec",
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ],
    );
    gen(
        "rsa",
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
    );
    gen("sec1", &["ecparam", "-name", "prime256v1", "-genkey"]);
    gen("rsa1", &["genrsa", "-traditional"]);
    let sec1 = std::fs::read_to_string(k.private("sec1")).unwrap();
    assert!(sec1.contains("BEGIN EC PARAMETERS") && sec1.contains("BEGIN EC PRIVATE KEY"));
    let rsa1 = std::fs::read_to_string(k.private("rsa1")).unwrap();
    assert!(rsa1.contains("BEGIN RSA PRIVATE KEY"), "{rsa1}");
    k
}

fn golden(dir: &Path) -> PathBuf {
    let g = dir.join("golden-measurement.json");
    std::fs::write(&g, GOLDEN).unwrap();
    g
}

fn cli(args: &[&str]) -> Output {
    run(Command::new(cvm_image()).args(args))
}

fn sign(key: &Path, golden: &Path, out: &Path) {
    let o = cli(&[
        "golden",
        "sign",
        "--key",
        s(key),
        "--golden",
        s(golden),
        "--out",
        s(out),
    ]);
    assert!(
        o.status.success(),
        "golden sign failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn golden_verify(pubkey: &Path, golden: &Path, sig: &Path) -> Output {
    cli(&[
        "golden",
        "verify",
        "--pubkey",
        s(pubkey),
        "--golden",
        s(golden),
        "--signature",
        s(sig),
    ])
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit 1 with `reason` in stderr.
fn assert_refused(o: &Output, reason: &str) {
    assert_eq!(o.status.code(), Some(1), "stderr: {}", stderr(o));
    assert!(
        stderr(o).contains(reason),
        "want {reason:?} in: {}",
        stderr(o)
    );
}

/// The DER signature inside one of our signature files.
fn signature_der(sig: &Path) -> Vec<u8> {
    let v: Value = serde_json::from_slice(&std::fs::read(sig).unwrap()).unwrap();
    base64::engine::general_purpose::STANDARD
        .decode(v["signature"].as_str().unwrap())
        .unwrap()
}

/// openssl accepts our signature of `golden`.
fn openssl_accepts(pubkey: &Path, golden: &Path, sig: &Path) {
    let der = sig.with_extension("der");
    std::fs::write(&der, signature_der(sig)).unwrap();
    let out = openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        s(pubkey),
        "-signature",
        s(&der),
        s(golden),
    ]);
    assert_eq!(out.trim(), "Verified OK");
}

/// key_id as openssl computes it: SHA-256 of the SPKI DER.
fn openssl_key_id(pubkey: &Path) -> String {
    let o =
        run(Command::new("openssl").args(["pkey", "-pubin", "-in", s(pubkey), "-outform", "DER"]));
    assert!(o.status.success());
    sha256_hex(&o.stdout)
}

#[test]
fn golden_sign_ours_verified_by_openssl_and_by_us_for_every_key_form() {
    let k = keys("golden-sign-roundtrip");
    let g = golden(&k.dir);
    for (name, alg) in [
        ("ec", "ecdsa-p256-sha256"),
        ("rsa", "rsa-pkcs1v15-sha256"),
        ("sec1", "ecdsa-p256-sha256"),
        ("rsa1", "rsa-pkcs1v15-sha256"),
    ] {
        let sig = k.dir.join(format!("{name}.sig"));
        sign(&k.private(name), &g, &sig);
        let v: Value = serde_json::from_slice(&std::fs::read(&sig).unwrap()).unwrap();
        assert_eq!(v["algorithm"], alg, "{name}");
        assert_eq!(v["key_id"], openssl_key_id(&k.public(name)), "{name}");
        openssl_accepts(&k.public(name), &g, &sig);
        let o = golden_verify(&k.public(name), &g, &sig);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
    }
}

#[test]
fn golden_sign_default_signature_path_and_keys_generate_key() {
    let dir = scratch("golden-sign-default");
    ok(Command::new(cvm_image())
        .args(["keys", "generate", "--dir"])
        .arg(dir.join("keys")));
    let g = golden(&dir);
    let key = dir.join("keys/golden.key");
    let o = cli(&["golden", "sign", "--key", s(&key), "--golden", s(&g)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let sig = dir.join("golden-measurement.json.sig");
    let first = std::fs::read(&sig).unwrap();
    // RFC 6979: signing again gives the same bytes.
    let o = cli(&["golden", "sign", "--key", s(&key), "--golden", s(&g)]);
    assert!(o.status.success());
    assert_eq!(
        std::fs::read(&sig).unwrap(),
        first,
        "ECDSA signing is not deterministic"
    );
    let pubkey = dir.join("keys/golden.pub");
    openssl_accepts(&pubkey, &g, &sig);
    let o = cli(&[
        "golden",
        "verify",
        "--pubkey",
        s(&pubkey),
        "--golden",
        s(&g),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn golden_sign_openssl_signatures_verified_by_us() {
    let k = keys("golden-sign-openssl");
    let g = golden(&k.dir);
    for (name, alg, rounds) in [
        ("ec", "ecdsa-p256-sha256", OPENSSL_ECDSA_ROUNDS),
        ("rsa", "rsa-pkcs1v15-sha256", 1),
    ] {
        for round in 0..rounds {
            let der = k.dir.join(format!("{name}-{round}.der"));
            openssl(&[
                "dgst",
                "-sha256",
                "-sign",
                s(&k.private(name)),
                "-out",
                s(&der),
                s(&g),
            ]);
            let sig = k.dir.join(format!("{name}-{round}.sig"));
            let file = json!({
                "format": 1,
                "algorithm": alg,
                "key_id": openssl_key_id(&k.public(name)),
                "signature": base64::engine::general_purpose::STANDARD
                    .encode(std::fs::read(&der).unwrap()),
            });
            std::fs::write(&sig, serde_json::to_vec(&file).unwrap()).unwrap();
            let o = golden_verify(&k.public(name), &g, &sig);
            assert!(o.status.success(), "{name} round {round}: {}", stderr(&o));
        }
    }
}

#[test]
fn golden_sign_refuses_tampered_foreign_and_unsigned() {
    let k = keys("golden-sign-refuse");
    let g = golden(&k.dir);
    for name in ["ec", "rsa"] {
        let sig = k.dir.join(format!("{name}.sig"));
        sign(&k.private(name), &g, &sig);
        // One flipped byte of the golden file.
        let flipped = k.dir.join(format!("{name}-flipped.json"));
        let mut bytes = GOLDEN.as_bytes().to_vec();
        bytes[GOLDEN.len() / 2] ^= 0x01;
        std::fs::write(&flipped, &bytes).unwrap();
        assert_refused(
            &golden_verify(&k.public(name), &flipped, &sig),
            "does not match the file's bytes",
        );
        // openssl agrees the tampered file's signature is bad.
        let der = k.dir.join(format!("{name}-sig.der"));
        std::fs::write(&der, signature_der(&sig)).unwrap();
        let o = run(Command::new("openssl").args([
            "dgst",
            "-sha256",
            "-verify",
            s(&k.public(name)),
            "-signature",
            s(&der),
            s(&flipped),
        ]));
        assert!(!o.status.success(), "openssl accepted a tampered file");
    }
    // Signed by another key of the same type.
    let sig = k.dir.join("sec1.sig");
    sign(&k.private("sec1"), &g, &sig);
    assert_refused(
        &golden_verify(&k.public("ec"), &g, &sig),
        "signed by another key",
    );
    let sig = k.dir.join("rsa1.sig");
    sign(&k.private("rsa1"), &g, &sig);
    assert_refused(
        &golden_verify(&k.public("rsa"), &g, &sig),
        "signed by another key",
    );
    // An ECDSA signature presented to an RSA key.
    assert_refused(
        &golden_verify(&k.public("rsa"), &g, &k.dir.join("ec.sig")),
        "the given public key is rsa-pkcs1v15-sha256",
    );
    // No signature at all.
    assert_refused(
        &golden_verify(&k.public("ec"), &g, &k.dir.join("absent.sig")),
        "is not signed",
    );
    // A signature file that is not one.
    let junk = k.dir.join("junk.sig");
    std::fs::write(&junk, "not json").unwrap();
    assert_refused(
        &golden_verify(&k.public("ec"), &g, &junk),
        "not a golden signature file",
    );
}

#[test]
fn golden_sign_verify_command_checks_the_signature_first() {
    let k = keys("golden-sign-verify");
    let g = golden(&k.dir);
    let missing = k.dir.join("no-such-evidence");
    // An agent that cannot answer: a refusal must not need it (the gate comes first).
    let verify = |extra: &[&str]| {
        let mut args = vec!["verify", "--golden", s(&g), "--agent", "http://127.0.0.1:9"];
        args.extend_from_slice(extra);
        cli(&args)
    };
    let offline = |extra: &[&str]| verify_without_evidence(&g, &missing, extra);
    let ec_pub = k.public("ec");
    // Unsigned.
    assert_refused(
        &verify(&["--insecure-no-ek", "--golden-pubkey", s(&ec_pub)]),
        "is not signed",
    );
    assert_refused(&offline(&["--golden-pubkey", s(&ec_pub)]), "is not signed");
    // Signed by another key (default signature path GOLDEN.sig).
    sign(
        &k.private("sec1"),
        &g,
        &k.dir.join("golden-measurement.json.sig"),
    );
    assert_refused(
        &offline(&["--golden-pubkey", s(&ec_pub)]),
        "signed by another key",
    );
    // Signed by the right key, then the file altered.
    sign(
        &k.private("ec"),
        &g,
        &k.dir.join("golden-measurement.json.sig"),
    );
    std::fs::write(&g, GOLDEN.replace("profiles", "profileZ")).unwrap();
    assert_refused(&offline(&["--golden-pubkey", s(&ec_pub)]), "does not match");
    // Correctly signed: the gate passes, and verification goes on to the golden file's content
    // and the evidence (this stand-in golden file has no profiles, so it stops there, exit 2).
    std::fs::write(&g, GOLDEN).unwrap();
    let o = offline(&["--golden-pubkey", s(&ec_pub)]);
    assert!(stderr(&o).contains("good signature"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("REFUSED"), "{}", stderr(&o));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // An explicit --golden-signature path works too (an RSA signature elsewhere).
    let rsa_sig = k.dir.join("elsewhere.sig");
    sign(&k.private("rsa"), &g, &rsa_sig);
    let o = offline(&[
        "--golden-pubkey",
        s(&k.public("rsa")),
        "--golden-signature",
        s(&rsa_sig),
    ]);
    assert!(stderr(&o).contains("good signature"), "{}", stderr(&o));
    // Without --golden-pubkey nothing about signatures is checked or said (unchanged behaviour).
    std::fs::remove_file(k.dir.join("golden-measurement.json.sig")).unwrap();
    let o = offline(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!stderr(&o).contains("signature") && !stderr(&o).contains("REFUSED"));
    // An unreadable public key is an input error (exit 2), naming the file.
    let o = offline(&["--golden-pubkey", s(&missing)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no-such-evidence"), "{}", stderr(&o));
}
