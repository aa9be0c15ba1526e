//! `cvm-image verify` on the command line, without an image or a VM:
//! * no rollback: a correctly signed golden file for another image, an older version, another UKI
//!   or a lower security version is refused (exit 1) naming both values — as a file, and as the
//!   copy an agent serves (`--golden-from-agent`, a stand-in agent here) — before any evidence;
//! * the options that act on an agent's collaterals are refused without `--agent` (exit 2,
//!   naming the option) instead of being ignored.

mod common;
use common::*;

use base64::Engine;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

const UKI: &str = "87fb6db7fe1ea6a139ceabcf98509b40cf05e44cfbd01aede65f1131b4dde3cf";

/// A golden file of `name` `version` (no profiles: the pins are checked before them).
fn golden_text(name: &str, version: &str, security_version: Option<u64>) -> String {
    let sv = security_version
        .map(|n| format!(",\n    \"security_version\": {n}"))
        .unwrap_or_default();
    format!(
        "{{\n  \"format\": 1,\n  \"generator\": \"cvm-image test\",\n  \"image\": {{\n    \
         \"name\": \"{name}\",\n    \"version\": \"{version}\",\n    \"uki_sha256\": \"{UKI}\"{sv}\n  \
         }},\n  \"profiles\": {{}}\n}}\n"
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn cli(args: &[&str]) -> Output {
    run(Command::new(cvm_image()).args(args))
}

/// A signing key pair (`keys generate`) in `dir/keys`.
fn keys(dir: &Path) -> (PathBuf, PathBuf) {
    ok(Command::new(cvm_image())
        .args(["keys", "generate", "--dir"])
        .arg(dir.join("keys")));
    (dir.join("keys/golden.key"), dir.join("keys/golden.pub"))
}

/// `text` written as `dir/NAME.json` and signed (`NAME.json.sig` beside it).
fn signed_golden(dir: &Path, name: &str, text: &str, key: &Path) -> PathBuf {
    let g = dir.join(format!("{name}.json"));
    std::fs::write(&g, text).unwrap();
    let o = cli(&["golden", "sign", "--key", s(key), "--golden", s(&g)]);
    assert!(o.status.success(), "{}", stderr(&o));
    g
}

/// Exit 1, a REFUSED line, every `needles` in stderr.
fn assert_refused(o: &Output, needles: &[&str]) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("REFUSED"), "{e}");
    for n in needles {
        assert!(e.contains(n), "want {n:?} in:\n{e}");
    }
}

#[test]
fn rollback_a_signed_golden_file_of_another_image_or_older_version_is_refused() {
    let dir = scratch("verify-rollback");
    let (key, public) = keys(&dir);
    let missing = dir.join("no-such-evidence");
    let golden = signed_golden(
        &dir,
        "old",
        &golden_text("cvm-demo", "0.1.9", Some(2)),
        &key,
    );
    // Offline with evidence that does not exist: a refusal must come before any evidence.
    let verify = |extra: &[&str]| {
        let mut args = vec!["--golden-pubkey", s(&public)];
        args.extend_from_slice(extra);
        verify_without_evidence(&golden, &missing, &args)
    };

    let o = verify(&["--expect-image", "cvm-prod"]);
    assert_refused(&o, &["good signature", "\"cvm-demo\"", "\"cvm-prod\""]);
    let o = verify(&["--min-version", "0.2.0"]);
    assert_refused(&o, &["cvm-demo version 0.1.9", "minimum version 0.2.0"]);
    // Dotted, not lexical: 0.10 is newer than 0.9.
    let o = verify(&["--min-version", "0.1.10"]);
    assert_refused(&o, &["version 0.1.9", "minimum version 0.1.10"]);
    let other_uki = "ab".repeat(32);
    let o = verify(&["--expect-uki", &other_uki]);
    assert_refused(&o, &[UKI, &other_uki]);
    let o = verify(&["--min-security-version", "3"]);
    assert_refused(&o, &["security version 2 of cvm-demo", "minimum 3"]);
    // Several pins fail: each is named.
    let o = verify(&["--expect-image", "cvm-prod", "--min-version", "1"]);
    assert_refused(&o, &["\"cvm-prod\"", "minimum version 1"]);

    // Pins that hold pass the gate: verification goes on to the evidence (missing here, exit 2).
    let o = verify(&[
        "--expect-image",
        "cvm-demo",
        "--min-version",
        "0.1.9-rc.1",
        "--expect-uki",
        &UKI.to_uppercase(),
        "--min-security-version",
        "2",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!stderr(&o).contains("REFUSED"), "{}", stderr(&o));
    assert!(stderr(&o).contains("no-such-evidence"), "{}", stderr(&o));

    // A golden file without a security version cannot meet --min-security-version.
    let unversioned = signed_golden(
        &dir,
        "unversioned",
        &golden_text("cvm-demo", "0.3.0", None),
        &key,
    );
    let o = verify_without_evidence(&unversioned, &missing, &["--min-security-version", "1"]);
    assert_refused(
        &o,
        &["has no image.security_version", "[image] security_version"],
    );

    // Malformed pins are usage errors naming the option.
    for (option, value) in [
        ("--min-version", "0.x"),
        ("--expect-uki", "abc"),
        ("--min-security-version", "two"),
    ] {
        let o = verify(&[option, value]);
        assert_eq!(o.status.code(), Some(2), "{option}: {}", stderr(&o));
        assert!(stderr(&o).contains(option), "{option}: {}", stderr(&o));
    }
}

/// A stand-in agent: answers `GET /golden-measurement` with `body`, anything else 404; records
/// the paths asked for. Serves until the test process ends.
fn agent(body: String) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let asked = Arc::new(Mutex::new(vec![]));
    let log = asked.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            // Skip the headers (GET has no body).
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
            log.lock().unwrap().push(path.clone());
            let (status, text) = if path == "/golden-measurement" {
                ("200 OK", body.clone())
            } else {
                ("404 Not Found", "{\"error\": \"not here\"}".to_string())
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{text}",
                text.len()
            );
            let _ = stream.flush();
            let _ = reader.read(&mut [0; 1]);
        }
    });
    (url, asked)
}

#[test]
fn rollback_through_the_agent_an_older_signed_golden_file_it_serves_is_refused() {
    let dir = scratch("verify-rollback-agent");
    let (key, public) = keys(&dir);
    // The old image's embedded golden file, correctly signed, as its agent serves it.
    let text = golden_text("cvm-demo", "0.1.0", Some(1));
    let golden = signed_golden(&dir, "old", &text, &key);
    let sig: serde_json::Value =
        serde_json::from_slice(&std::fs::read(golden.with_extension("json.sig")).unwrap()).unwrap();
    let served = serde_json::json!({
        "golden": serde_json::from_str::<serde_json::Value>(&text).unwrap(),
        "golden_b64": base64::engine::general_purpose::STANDARD.encode(&text),
        "signature": sig,
        "source": "esp:/cvm/golden-measurement.json",
    });
    let (url, asked) = agent(served.to_string());
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "verify",
            "--agent",
            &url,
            "--insecure-no-ek",
            "--golden-from-agent",
            "--golden-pubkey",
            s(&public),
            "--timeout",
            "5",
        ];
        args.extend_from_slice(extra);
        cli(&args)
    };
    let o = verify(&["--min-version", "0.2.0", "--min-security-version", "2"]);
    assert_refused(
        &o,
        &[
            "good signature",
            &format!("{url}/golden-measurement"),
            "cvm-demo version 0.1.0",
            "minimum version 0.2.0",
            "security version 1 of cvm-demo, below the minimum 2",
        ],
    );
    let o = verify(&["--expect-image", "cvm-prod"]);
    assert_refused(&o, &["\"cvm-demo\"", "\"cvm-prod\""]);
    // Refused before any evidence: the agent was only asked for its golden file.
    assert!(
        asked
            .lock()
            .unwrap()
            .iter()
            .all(|p| p == "/golden-measurement"),
        "{:?}",
        asked.lock().unwrap()
    );
    // Pins that hold pass the gate and verification asks for the collaterals (404 here).
    let o = verify(&["--expect-image", "cvm-demo", "--min-version", "0.1"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!stderr(&o).contains("REFUSED"), "{}", stderr(&o));
    assert!(asked
        .lock()
        .unwrap()
        .iter()
        .any(|p| p.starts_with("/collaterals")));
}

/// Each option that acts on an agent's collaterals, with a value when it takes one.
const AGENT_ONLY: &[(&str, Option<&str>)] = &[
    ("--ek-ca", Some("ek-ca.pem")),
    ("--insecure-no-ek", None),
    ("--snp-vcek", Some("vcek.der")),
    ("--amd-chain", Some("cert_chain.pem")),
    ("--tdx-collateral", Some("collateral.json")),
    ("--require-tee", None),
    ("--timeout", Some("5")),
];

#[test]
fn agent_only_options_are_refused_with_offline_evidence() {
    let dir = scratch("verify-agent-only");
    let golden = dir.join("golden.json");
    std::fs::write(&golden, golden_text("cvm-demo", "0.1.0", None)).unwrap();
    let missing = dir.join("no-such-evidence");
    let offline = |extra: &[&str]| verify_without_evidence(&golden, &missing, extra);
    for (option, value) in AGENT_ONLY {
        let mut args = vec![*option];
        args.extend(value);
        let o = offline(&args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{option}: {e}");
        assert!(
            e.contains(&format!("{option} needs --agent URL")),
            "{option}: {e}"
        );
        assert!(e.contains(&format!("leave out {option}")), "{option}: {e}");
        // Refused before the golden file or the evidence is read.
        assert!(!e.contains("no-such-evidence"), "{option}: {e}");
    }
    // All at once: every one named (--ek-ca and --insecure-no-ek conflict, so one of them).
    let all: Vec<&str> = AGENT_ONLY
        .iter()
        .filter(|(o, _)| *o != "--insecure-no-ek")
        .flat_map(|(o, v)| std::iter::once(*o).chain(*v))
        .collect();
    let o = offline(&all);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    for (option, _) in AGENT_ONLY.iter().filter(|(o, _)| *o != "--insecure-no-ek") {
        assert!(e.contains(option), "{option}: {e}");
    }
    assert!(e.contains("need --agent URL"), "{e}");
    // --golden-from-agent too (clap cannot require --agent here: it conflicts with --eventlog).
    let o = offline(&["--golden-from-agent", "--golden-pubkey", s(&missing)]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("--golden-from-agent"), "{e}");

    // With --agent the same options are accepted (the unreachable agent is the error then).
    let o = cli(&[
        "verify",
        "--golden",
        s(&golden),
        "--agent",
        "http://127.0.0.1:9",
        "--insecure-no-ek",
        "--require-tee",
        "--timeout",
        "2",
    ]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(!e.contains("needs --agent"), "{e}");
    assert!(e.contains("127.0.0.1:9"), "{e}");
}
