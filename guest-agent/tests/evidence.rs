//! The evidence API (`/collaterals`, `/activate-credential`) in-process against swtpm, checked with
//! tpm2-tools (tpm2_checkquote, tpm2_makecredential) and openssl; malformed requests get JSON 4xx and
//! the agent keeps serving.

mod common;

use std::path::Path;
use std::process::Command;

use base64::Engine;
use common::*;
use cvm_agent::api::{public_router as router, ApiConfig, AppState, WorkloadView};
use cvm_agent::evidence::Evidence;
use cvm_agent::tee::TeeSource;
use cvm_agent::tpm::TpmSource;

const NONCE: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn serve(config: ApiConfig) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
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
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            serve_api(listener, router(state), false).await;
        });
    });
    assert!(wait_connectable(port, std::time::Duration::from_secs(10)));
    port
}

fn b64d(v: &serde_json::Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap_or_else(|| panic!("not a string: {v}")))
        .unwrap()
}

fn post_json(port: u16, path: &str, content_type: &str, body: &[u8]) -> Response {
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw_request(port, &raw)
}

/// tpm2-tools 5.4's `tpm2_quote -o` PCR file ("serialized": the C structs, little endian); the
/// `-f values -l` form is broken in 5.4 for more than 8 PCRs.
fn tpm2_tools_serialized_pcrs(values: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&0x000Bu16.to_le_bytes());
    out.extend_from_slice(&[3, 0xFF, 0xFF, 0x80, 0, 0]);
    out.resize(4 + 16 * 8, 0);
    let lists: Vec<&[Vec<u8>]> = values.chunks(8).collect();
    out.extend_from_slice(&(lists.len() as u32).to_le_bytes());
    for list in lists {
        out.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for i in 0..8 {
            let v: &[u8] = list.get(i).map(Vec::as_slice).unwrap_or(&[]);
            out.extend_from_slice(&(v.len() as u16).to_le_bytes());
            out.extend_from_slice(v);
            out.resize(out.len() + 64 - v.len(), 0);
        }
    }
    out
}

fn checkquote(dir: &Path, ak: &str, nonce: &str) -> bool {
    Command::new("tpm2_checkquote")
        .current_dir(dir)
        .args([
            "-u", ak, "-m", "quote", "-s", "sig", "-g", "sha256", "-f", "pcrs", "-q", nonce,
        ])
        .output()
        .expect("tpm2_checkquote (tpm2-tools) is required")
        .status
        .success()
}

fn makecredential(dir: &Path, ek_pub: &str, ak_name: &str) -> serde_json::Value {
    std::fs::write(dir.join("secret"), b"agent activation").unwrap();
    run_tool(Command::new("tpm2_makecredential").current_dir(dir).args([
        "-T", "none", "-e", ek_pub, "-s", "secret", "-n", ak_name, "-o", "cred",
    ]));
    let b = std::fs::read(dir.join("cred")).unwrap();
    assert_eq!(&b[..8], &[0xBA, 0xDC, 0xC0, 0xDE, 0, 0, 0, 1]);
    let n = u16::from_be_bytes([b[8], b[9]]) as usize;
    let blob = &b[10..10 + n];
    let secret = &b[12 + n..];
    let e = base64::engine::general_purpose::STANDARD;
    serde_json::json!({"credential_blob": e.encode(blob), "secret": e.encode(secret)})
}

#[test]
fn collaterals_verify_with_tpm2_tools_and_activation_binds_ak_to_ek() {
    let tpm = Swtpm::start();
    let other = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let eventlog = dir.path().join("eventlog.bin");
    std::fs::write(&eventlog, b"\x00\x01log").unwrap();
    let port = serve(ApiConfig {
        tpm: TpmSource::Tcp(format!("127.0.0.1:{}", tpm.port)),
        eventlog: eventlog.clone(),
        runtime_eventlog: dir.path().join("absent.jsonl"),
    });

    let r = request(port, "GET", &format!("/collaterals?nonce={NONCE}"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let c = r.json();
    assert_eq!(c["nonce"], NONCE);
    assert_eq!(b64d(&c["eventlog"]), b"\x00\x01log");
    assert!(c["runtime_eventlog"].is_null());
    assert_eq!(c["tee_report"]["type"], "none");
    assert_eq!(c["ek_type"], "rsa2048");
    assert!(c["ek_cert"].is_null(), "a bare swtpm has no EK certificate");
    let pcrs = c["pcrs"]["sha256"].as_object().unwrap();
    let keys: Vec<&str> = pcrs.keys().map(String::as_str).collect();
    let mut want: Vec<String> = (0..16).map(|i| i.to_string()).collect();
    want.push("23".into());
    let mut sorted_keys = keys.clone();
    sorted_keys.sort();
    want.sort();
    assert_eq!(sorted_keys, want);
    let values: Vec<Vec<u8>> = (0..16)
        .chain([23])
        .map(|i| hex::decode(pcrs[&i.to_string()].as_str().unwrap()).unwrap())
        .collect();

    let d = dir.path();
    std::fs::write(d.join("ak.pub"), b64d(&c["ak_public"])).unwrap();
    std::fs::write(d.join("ak.pem"), c["ak_public_pem"].as_str().unwrap()).unwrap();
    std::fs::write(d.join("quote"), b64d(&c["quote"])).unwrap();
    std::fs::write(d.join("sig"), b64d(&c["signature"])).unwrap();
    std::fs::write(d.join("pcrs"), tpm2_tools_serialized_pcrs(&values)).unwrap();
    assert!(
        checkquote(d, "ak.pub", NONCE),
        "tpm2_checkquote rejected the served quote"
    );
    assert!(
        checkquote(d, "ak.pem", NONCE),
        "tpm2_checkquote rejected the PEM AK"
    );
    assert!(
        !checkquote(d, "ak.pub", &NONCE.replace("00", "ff")),
        "stale nonce accepted"
    );
    run_tool(
        Command::new("openssl")
            .args(["pkey", "-pubin", "-noout", "-in"])
            .arg(d.join("ak.pem")),
    );

    // The AK is the same key for the boot.
    let again = request(
        port,
        "GET",
        &format!("/collaterals?nonce={}", "ab".repeat(16)),
    )
    .json();
    assert_eq!(again["ak_public"], c["ak_public"]);
    assert_ne!(again["quote"], c["quote"]);

    // AK↔EK: a credential for (this EK, this AK) activates; one for another EK does not.
    std::fs::write(d.join("ek.pub"), b64d(&c["ek_public"])).unwrap();
    let ak_name = c["ak_name"].as_str().unwrap();
    let req = makecredential(d, "ek.pub", ak_name);
    let r = post_json(
        port,
        "/activate-credential",
        "application/json",
        req.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(b64d(&r.json()["cert_info"]), b"agent activation");

    let mut other_tpm = cvm_tpm::Tpm::connect_tcp(("127.0.0.1", other.port)).unwrap();
    let other_ek = other_tpm.create_ek(cvm_tpm::EkType::Rsa2048).unwrap();
    drop(other_tpm);
    std::fs::write(d.join("other-ek.pub"), other_ek.tpm2b_public()).unwrap();
    let req = makecredential(d, "other-ek.pub", ak_name);
    let r = post_json(
        port,
        "/activate-credential",
        "application/json",
        req.to_string().as_bytes(),
    );
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("TPM2_ActivateCredential"));

    // Still serving, and activation still works after the failure.
    let req = makecredential(d, "ek.pub", ak_name);
    let r = post_json(
        port,
        "/activate-credential",
        "application/json",
        req.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

#[test]
fn malformed_requests_get_json_4xx_and_the_agent_keeps_serving() {
    let tpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let port = serve(ApiConfig {
        tpm: TpmSource::Tcp(format!("127.0.0.1:{}", tpm.port)),
        eventlog: dir.path().join("none"),
        runtime_eventlog: dir.path().join("none"),
    });
    for bad in [
        "/collaterals",
        "/collaterals?nonce=",
        "/collaterals?nonce=xyz",
        "/collaterals?nonce=0011",
        "/collaterals?nonce=000102030405060708090a0b0c0d0e0", // odd
        &format!("/collaterals?nonce={}", "00".repeat(65)),
        &format!("/collaterals?nonce={NONCE}&nonce={NONCE}"),
        &format!("/collaterals?nonce={NONCE}&x=1"),
    ] {
        let r = request(port, "GET", bad);
        assert_eq!(r.status, 400, "{bad}: {}", String::from_utf8_lossy(&r.body));
        assert!(r.json()["error"].is_string(), "{bad}");
    }
    let cases: [(&str, Vec<u8>, u16); 6] = [
        ("application/json", b"{not json".to_vec(), 400),
        ("application/json", b"{\"credential_blob\":1}".to_vec(), 422),
        ("text/plain", b"{}".to_vec(), 415),
        (
            "application/json",
            br#"{"credential_blob":"!!","secret":"AA=="}"#.to_vec(),
            400,
        ),
        (
            "application/json",
            br#"{"credential_blob":"","secret":""}"#.to_vec(),
            400,
        ),
        ("application/json", vec![b' '; 1 << 20], 413),
    ];
    for (ct, body, status) in cases {
        let r = post_json(port, "/activate-credential", ct, &body);
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
        assert!(r.json()["error"].is_string());
    }
    let r = request(port, "POST", "/collaterals");
    assert_eq!(r.status, 405);
    assert_eq!(request(port, "GET", "/health").status, 200);
    let r = request(port, "GET", &format!("/collaterals?nonce={NONCE}"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}
