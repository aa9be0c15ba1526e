//! `POST /sign-message` in-process against swtpm: served on the loopback router only, its signature
//! and the collaterals' `signing_key` check out with openssl (signature, AK certify, key hash), and
//! once a bound PCR changes it answers 409. Malformed requests get JSON 4xx.

mod common;

use std::path::Path;
use std::process::Command;

use base64::Engine;
use common::*;
use cvm_agent::api::{local_router, public_router, ApiConfig, AppState, WorkloadView};
use cvm_agent::evidence::Evidence;
use cvm_agent::signing::{MAX_MESSAGE_LEN, MAX_SIGN_BODY};
use cvm_agent::tee::TeeSource;
use cvm_agent::tpm::TpmSource;
use cvm_tpm::{EcdsaSignature, HashAlg};

const NONCE: &str = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff000102030405060708090a0b0c0d0e0f";

/// Serves the public and the local router over one state; returns (public port, local port).
fn serve(tpm: &Swtpm, dir: &Path) -> (u16, u16) {
    let config = ApiConfig {
        tpm: TpmSource::Tcp(format!("127.0.0.1:{}", tpm.port)),
        eventlog: dir.join("absent.bin"),
        runtime_eventlog: dir.join("absent.jsonl"),
    };
    let bind = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        l
    };
    let (public, local) = (bind(), bind());
    let ports = (
        public.local_addr().unwrap().port(),
        local.local_addr().unwrap().port(),
    );
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let state = AppState::new(config, WorkloadView::Failed("no workload".into()))
                .with_evidence(Evidence::new(TeeSource {
                    configfs_tsm: "/nonexistent/tsm/report".into(),
                    sev_guest: "/nonexistent/sev-guest".into(),
                }));
            let public = tokio::net::TcpListener::from_std(public).unwrap();
            let local = tokio::net::TcpListener::from_std(local).unwrap();
            tokio::spawn(serve_api(public, public_router(state.clone()), false));
            serve_api(local, local_router(state), true).await;
        });
    });
    for port in [ports.0, ports.1] {
        assert!(wait_connectable(port, std::time::Duration::from_secs(10)));
    }
    ports
}

fn b64e(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn b64d(v: &serde_json::Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap_or_else(|| panic!("not a string: {v}")))
        .unwrap()
}

fn post(port: u16, path: &str, content_type: &str, body: &[u8]) -> Response {
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw_request(port, &raw)
}

fn sign(port: u16, message: &[u8]) -> Response {
    let body = serde_json::json!({ "message": b64e(message) }).to_string();
    post(port, "/sign-message", "application/json", body.as_bytes())
}

/// `openssl dgst -sha256 -verify pem -signature der file`: true when openssl accepts.
fn openssl_verifies(dir: &Path, pem: &str, der_sig: &[u8], data: &[u8]) -> bool {
    std::fs::write(dir.join("v.pem"), pem).unwrap();
    std::fs::write(dir.join("v.sig"), der_sig).unwrap();
    std::fs::write(dir.join("v.data"), data).unwrap();
    Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-verify",
            "v.pem",
            "-signature",
            "v.sig",
            "v.data",
        ])
        .current_dir(dir)
        .output()
        .expect("openssl is required (Debian package openssl)")
        .status
        .success()
}

fn openssl_sha256(dir: &Path, data: &[u8]) -> String {
    std::fs::write(dir.join("h.data"), data).unwrap();
    let out = run_tool(
        Command::new("openssl")
            .args(["dgst", "-sha256", "-r", "h.data"])
            .current_dir(dir),
    );
    out.split(' ').next().unwrap().to_string()
}

#[test]
fn sign_message_is_loopback_only_and_verifies_against_the_certified_key() {
    let tpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (public, local) = serve(&tpm, d);

    let r = sign(public, b"hello");
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["error"].is_string());

    // The collaterals (either port) carry the key, certified by the AK for this nonce.
    let c = request(public, "GET", &format!("/collaterals?nonce={NONCE}"));
    assert_eq!(c.status, 200, "{}", String::from_utf8_lossy(&c.body));
    let c = c.json();
    let sk = &c["signing_key"];
    assert_eq!(sk["pcr_policy"]["bank"], "sha256");
    let want_pcrs: Vec<u32> = (0..16).chain([23]).collect();
    assert_eq!(sk["pcr_policy"]["pcrs"], serde_json::json!(want_pcrs));
    let tpm2b_public = b64d(&sk["public"]);
    let public_area = &tpm2b_public[2..];
    assert_eq!(
        u16::from_be_bytes([tpm2b_public[0], tpm2b_public[1]]) as usize,
        public_area.len()
    );
    assert_eq!(sk["key_hash"], openssl_sha256(d, public_area));
    assert_eq!(
        sk["name"],
        format!("000b{}", sk["key_hash"].as_str().unwrap())
    );

    let ak_pem = c["ak_public_pem"].as_str().unwrap();
    let certify_info = b64d(&sk["certify_info"]);
    let certify_der = EcdsaSignature::parse(&b64d(&sk["certify_signature"]))
        .unwrap()
        .to_der();
    assert!(
        openssl_verifies(d, ak_pem, &certify_der, &certify_info),
        "openssl rejects the AK's certify signature"
    );
    // TPMS_ATTEST: … extraData = nonce …, attested = {name, qualifiedName} at the end.
    let nonce = hex::decode(NONCE).unwrap();
    assert!(certify_info.windows(nonce.len()).any(|w| w == nonce));
    let name = hex::decode(sk["name"].as_str().unwrap()).unwrap();
    let tail = &certify_info[certify_info.len() - 2 * (2 + 34)..];
    assert_eq!(&tail[..2], &[0, 34]);
    assert_eq!(&tail[2..36], name.as_slice());
    // authPolicy (after type, nameAlg, attributes, size) = PolicyPCR of the quoted PCR values.
    let quoted: Vec<(u32, Vec<u8>)> = want_pcrs
        .iter()
        .map(|i| {
            let v = c["pcrs"]["sha256"][i.to_string()].as_str().unwrap();
            (*i, hex::decode(v).unwrap())
        })
        .collect();
    assert_eq!(
        &public_area[10..42],
        cvm_tpm::pcr_policy_digest(HashAlg::Sha256, &quoted).unwrap()
    );

    // Sign on loopback: the signature verifies with the served PEM; same key as the collaterals'.
    let message = b"attest this workload document";
    let r = sign(local, message);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let s = r.json();
    assert_eq!(s["key_hash"], sk["key_hash"]);
    assert_eq!(s["key_name"], sk["name"]);
    assert_eq!(s["message_sha256"], openssl_sha256(d, message));
    let pem = sk["public_pem"].as_str().unwrap();
    let der = b64d(&s["signature_der"]);
    assert_eq!(
        EcdsaSignature::parse(&b64d(&s["signature"]))
            .unwrap()
            .to_der(),
        der
    );
    assert!(openssl_verifies(d, pem, &der, message), "openssl rejects");
    assert!(!openssl_verifies(d, pem, &der, b"another message"));
    assert!(!openssl_verifies(d, ak_pem, &der, message));

    // A bound PCR changes: 409, and the key is still reported (a verifier sees the mismatch).
    let mut t = cvm_tpm::Tpm::connect_tcp(("127.0.0.1", tpm.port)).unwrap();
    t.pcr_extend(23, &[0x77; 32]).unwrap();
    drop(t);
    let r = sign(local, message);
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    let err = r.json()["error"].as_str().unwrap().to_string();
    assert!(err.contains("PCRs changed"), "{err}");
    let c2 = request(local, "GET", &format!("/collaterals?nonce={NONCE}"));
    assert_eq!(c2.status, 200, "{}", String::from_utf8_lossy(&c2.body));
    assert_eq!(c2.json()["signing_key"]["key_hash"], sk["key_hash"]);
}

#[test]
fn sign_message_rejects_malformed_requests_with_json_4xx() {
    let tpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let (_, local) = serve(&tpm, dir.path());
    let too_long = serde_json::json!({ "message": b64e(&vec![7u8; MAX_MESSAGE_LEN + 1]) });
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("application/json", b"{not json".to_vec(), 400),
        ("application/json", br#"{"msg":"aGk="}"#.to_vec(), 422),
        (
            "application/json",
            br#"{"message":"aGk=","x":1}"#.to_vec(),
            422,
        ),
        ("application/json", br#"{"message":5}"#.to_vec(), 422),
        ("text/plain", br#"{"message":"aGk="}"#.to_vec(), 415),
        ("application/json", br#"{"message":"!!"}"#.to_vec(), 400),
        ("application/json", too_long.to_string().into_bytes(), 413),
        ("application/json", vec![b' '; MAX_SIGN_BODY + 1], 413),
    ];
    for (ct, body, status) in cases {
        let r = post(local, "/sign-message", ct, &body);
        let shown = String::from_utf8_lossy(&body[..body.len().min(40)]).to_string();
        assert_eq!(
            r.status,
            status,
            "{ct} {shown}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(r.json()["error"].is_string(), "{shown}");
    }
    assert_eq!(request(local, "GET", "/sign-message").status, 405);
    // The largest message is accepted, and the agent still serves.
    let r = sign(local, &vec![1u8; MAX_MESSAGE_LEN]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(sign(local, b"").status, 200);
}
