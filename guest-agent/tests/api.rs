//! The HTTP API served in-process on ephemeral ports, against swtpm and fake log files; PCR values
//! are compared with tpm2-tools' reading of the same swtpm.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use common::*;
use cvm_agent::api::{public_router as router, ApiConfig, AppState, WorkloadView};
use cvm_agent::console::LineSink;
use cvm_agent::supervisor::{Backoff, Reaper, Supervisor};
use cvm_agent::tpm::TpmSource;
use cvm_agent::workload::Workload;

/// Serves the API on a fresh port from its own thread and runtime; returns the port.
fn serve(config: ApiConfig, workload: Option<Workload>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let view = match workload {
                Some(w) => {
                    let reaper = Reaper::new(false);
                    tokio::spawn(reaper.clone().run());
                    let sink: LineSink = Arc::new(|_: &str| {});
                    WorkloadView::Running(Arc::new(Supervisor::start(
                        &w,
                        reaper,
                        sink,
                        Backoff::default(),
                    )))
                }
                None => {
                    WorkloadView::Failed("parsing workload manifest /x/workload.toml: boom".into())
                }
            };
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            serve_api(listener, router(AppState::new(config, view)), false).await;
        });
    });
    port
}

struct Fixture {
    _dir: tempfile::TempDir,
    eventlog: PathBuf,
    runtime: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let eventlog = dir.path().join("binary_bios_measurements");
    std::fs::write(&eventlog, [0u8, 1, 2, 3, 0xff, 0xfe]).unwrap();
    let runtime = dir.path().join("runtime-eventlog.jsonl");
    write(&runtime, "{\"pcr\":23,\"event\":\"workload-root-hash\"}\n");
    Fixture {
        _dir: dir,
        eventlog,
        runtime,
    }
}

/// Parses `tpm2_pcrread sha256:0,…,23` output ("  sha256:" then "    N : 0xHEX" lines).
fn tpm2_pcrread(tpm: &Swtpm, bank: &str) -> BTreeMap<String, String> {
    let list: Vec<String> = (0..24).map(|i| i.to_string()).collect();
    let out = run_tool(
        Command::new("tpm2_pcrread")
            .arg("-T")
            .arg(tpm.tcti())
            .arg(format!("{bank}:{}", list.join(","))),
    );
    out.lines()
        .filter_map(|l| l.split_once(':'))
        .filter_map(|(k, v)| {
            let k = k.trim();
            let v = v.trim().strip_prefix("0x")?;
            k.parse::<u32>()
                .ok()
                .map(|_| (k.to_string(), v.to_ascii_lowercase()))
        })
        .collect()
}

#[test]
fn pcrs_match_tpm2_tools_and_other_endpoints_work() {
    let tpm = Swtpm::start();
    // Make PCR 23 non-trivial, as the init does at boot.
    run_tool(
        Command::new("tpm2_pcrextend")
            .arg("-T")
            .arg(tpm.tcti())
            .arg(format!("23:sha256={}", "ab".repeat(32))),
    );
    let fx = fixture();
    let workload = Workload::parse(
        "name = \"w\"\n[[service]]\nname = \"sleeper\"\ncommand = \"/bin/sleep\"\nargs = [\"60\"]\nrestart = \"never\"\n",
        "test",
    )
    .unwrap();
    let port = serve(
        ApiConfig {
            tpm: TpmSource::Tcp(format!("127.0.0.1:{}", tpm.port)),
            eventlog: fx.eventlog.clone(),
            runtime_eventlog: fx.runtime.clone(),
        },
        Some(workload),
    );
    assert!(wait_connectable(port, std::time::Duration::from_secs(10)));

    let health = request(port, "GET", "/health");
    assert_eq!(health.status, 200);
    assert_eq!(health.json(), serde_json::json!({"status": "ok"}));

    let pcrs = request(port, "GET", "/pcrs");
    assert_eq!(pcrs.status, 200, "{}", String::from_utf8_lossy(&pcrs.body));
    assert_eq!(pcrs.header("content-type"), Some("application/json"));
    // Every bank swtpm has active (a fresh swtpm: sha1, sha256, sha384, sha512), each equal to
    // what tpm2_pcrread reads.
    let all: BTreeMap<String, BTreeMap<String, String>> =
        serde_json::from_value(pcrs.json()).unwrap();
    assert_eq!(
        all.keys().map(String::as_str).collect::<Vec<_>>(),
        ["sha1", "sha256", "sha384", "sha512"]
    );
    for (bank, values) in &all {
        let reference = tpm2_pcrread(&tpm, bank);
        assert_eq!(
            reference.len(),
            24,
            "tpm2_pcrread {bank} output parsed: {reference:?}"
        );
        assert_eq!(values, &reference, "bank {bank}");
    }
    let ours = &all["sha256"];
    // PCR 23 = SHA-256(0^32 || ab^32), computed independently with coreutils.
    let expected23 = run_tool(Command::new("sh").arg("-c").arg(
        "printf '%064d' 0 | xxd -r -p > /tmp/.pcr23in.$$; printf 'ab%.0s' $(seq 32) | xxd -r -p >> /tmp/.pcr23in.$$; sha256sum /tmp/.pcr23in.$$ | cut -d' ' -f1; rm -f /tmp/.pcr23in.$$",
    ));
    assert_eq!(ours["23"], expected23.trim());
    // Numeric key order in the JSON text.
    let text = String::from_utf8(pcrs.body.clone()).unwrap();
    assert!(
        text.find("\"9\"").unwrap() < text.find("\"10\"").unwrap(),
        "{text}"
    );

    let log = request(port, "GET", "/eventlog");
    assert_eq!(log.status, 200);
    assert_eq!(log.header("content-type"), Some("application/octet-stream"));
    assert_eq!(log.body, std::fs::read(&fx.eventlog).unwrap());

    let rt = request(port, "GET", "/eventlog/runtime");
    assert_eq!(rt.status, 200);
    assert_eq!(rt.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(rt.body, std::fs::read(&fx.runtime).unwrap());

    let mut wl = request(port, "GET", "/workload").json();
    for _ in 0..100 {
        if wl["services"][0]["state"] == "running" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        wl = request(port, "GET", "/workload").json();
    }
    assert_eq!(wl["name"], "w");
    let svc = &wl["services"][0];
    assert_eq!(svc["name"], "sleeper");
    assert_eq!(svc["state"], "running");
    assert_eq!(svc["restarts"], 0);
    assert_eq!(svc["restart"], "never");
    assert!(svc["pid"].as_u64().unwrap() > 1);
    assert!(svc["last_exit"].is_null());
    // Don't leave the sleeper behind.
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_raw(svc["pid"].as_u64().unwrap() as i32).unwrap(),
        rustix::process::Signal::KILL,
    );
}

#[test]
fn errors_are_json_with_proper_status() {
    let fx = fixture();
    let port = serve(
        ApiConfig {
            // Nothing listens there: the TPM is unavailable.
            tpm: TpmSource::Tcp(format!("127.0.0.1:{}", free_port())),
            eventlog: fx.eventlog.with_extension("missing"),
            runtime_eventlog: fx.runtime.with_extension("missing"),
        },
        None,
    );
    assert!(wait_connectable(port, std::time::Duration::from_secs(10)));
    let check = |r: Response, status: u16, needle: &str| {
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("content-type"), Some("application/json"));
        let msg = r.json()["error"].as_str().unwrap().to_string();
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    };
    check(request(port, "GET", "/pcrs"), 503, "swtpm");
    check(
        request(port, "GET", "/eventlog"),
        404,
        "binary_bios_measurements.missing",
    );
    check(
        request(port, "GET", "/eventlog/runtime"),
        404,
        "runtime-eventlog.missing",
    );
    check(request(port, "GET", "/workload"), 500, "boom");
    check(request(port, "GET", "/nope"), 404, "/nope");
    check(request(port, "POST", "/health"), 405, "POST");
    check(request(port, "DELETE", "/pcrs"), 405, "DELETE");

    // Malformed HTTP: hyper answers 400 itself; the server must stay up.
    let bad = raw_request(port, b"\x16\x03\x01\x02\x00garbage\r\n\r\n");
    assert_eq!(bad.status, 400);
    let bad = raw_request(
        port,
        b"GET /health HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n",
    );
    assert_eq!(bad.status, 400);
    let huge_header = format!("GET /health HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(1 << 20));
    let r = raw_request(port, huge_header.as_bytes());
    assert!((400..500).contains(&r.status), "status {}", r.status);
    assert_eq!(request(port, "GET", "/health").status, 200);
    // HEAD works on GET routes.
    assert_eq!(request(port, "HEAD", "/health").status, 200);
}
