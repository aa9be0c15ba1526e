//! The `cvm-agent` binary as a normal (non-PID-1) process: starts the workload, prefixes its output,
//! serves the API, and stops the services on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

#[test]
fn runs_workload_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("terminated");
    write(
        &dir.path().join("workload.toml"),
        &format!(
            r#"name = "e2e"
[[service]]
name = "talker"
command = "/bin/sh"
args = ["-c", "trap 'echo bye > {m}; exit 0' TERM; echo hello from talker; echo to stderr >&2; while :; do sleep 0.1; done"]
restart = "always"
"#,
            m = marker.display()
        ),
    );
    let (api, local) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_cvm-agent"))
        .env("CVM_WORKLOAD_DIR", dir.path())
        .env("CVM_LISTEN", format!("127.0.0.1:{api}"))
        .env("CVM_LISTEN_LOCAL", format!("127.0.0.1:{local}"))
        .env("CVM_TPM", "tcp:127.0.0.1:1")
        .env("CVM_STOP_GRACE", "5")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = ChildGuard(child);
    let (tx, rx) = mpsc::channel();
    let stdout = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    let mut seen = Vec::new();
    let mut wait_line = |needle: &str| {
        while !seen.iter().any(|l: &String| l.contains(needle)) {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(l) => seen.push(l),
                Err(_) => panic!("no line containing {needle:?}; got {seen:#?}"),
            }
        }
    };
    wait_line("cvm-agent: healthy");
    wait_line("[talker] hello from talker");
    wait_line("[talker] to stderr");

    for port in [api, local] {
        let r = request(port, "GET", "/health");
        assert_eq!(r.status, 200);
    }
    let wl = request(local, "GET", "/workload").json();
    assert_eq!(wl["services"][0]["state"], "running");

    // Give the shell time to install its trap, then ask the agent to shut down.
    std::thread::sleep(Duration::from_millis(300));
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.0.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    wait_line("shutdown requested (SIGTERM)");
    wait_line("services stopped");
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap().trim(),
        "bye",
        "service got SIGTERM"
    );
    // The line with the timestamp has the dmesg shape.
    let healthy = seen.iter().find(|l| l.contains("healthy")).unwrap();
    assert!(
        healthy.starts_with('[') && healthy.contains("] cvm-agent: healthy"),
        "{healthy}"
    );
}

#[test]
fn bad_manifest_keeps_api_up_and_reports_error() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("workload.toml"),
        "name = \"x\"\nbogus = 1\n",
    );
    let (api, local) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_cvm-agent"))
        .env("CVM_WORKLOAD_DIR", dir.path())
        .env("CVM_LISTEN", format!("127.0.0.1:{api}"))
        .env("CVM_LISTEN_LOCAL", format!("127.0.0.1:{local}"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _child = ChildGuard(child);
    assert!(wait_connectable(api, Duration::from_secs(20)));
    let r = request(api, "GET", "/workload");
    assert_eq!(r.status, 500);
    let msg = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        msg.contains("unknown field `bogus`") && msg.contains("workload.toml"),
        "{msg}"
    );
}

#[test]
fn help_describes_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_cvm-agent"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--workload-dir",
        "--tpm",
        "--eventlog",
        "--runtime-eventlog",
        "--listen-local",
        "CVM_TPM",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
}

/// PID 1 behaviour in a fresh PID namespace (needs root and util-linux `unshare`): orphans are
/// reaped, services in their own process groups are still seen to exit (this caught `waitpid(0)`
/// being used for "any child"), and SIGTERM ends in the power-off path (`reboot` in a PID namespace
/// terminates the namespace's init instead of the machine).
#[test]
fn pid1_in_pid_namespace_reaps_orphans_and_powers_off() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("workload.toml"),
        r#"name = "pid1"
[[service]]
name = "parent"
command = "/bin/sh"
args = ["-c", "sh -c 'sleep 0.3 &'; echo spawned orphan; exec sleep 1000"]
restart = "always"
"#,
    );
    let (api, local) = (free_port(), free_port());
    let child = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child"])
        .arg(env!("CARGO_BIN_EXE_cvm-agent"))
        .env("CVM_WORKLOAD_DIR", dir.path())
        .env("CVM_LISTEN", format!("127.0.0.1:{api}"))
        .env("CVM_LISTEN_LOCAL", format!("127.0.0.1:{local}"))
        .env("CVM_NETWORK", "off")
        .env("CVM_POWER_BUTTON", "off")
        .env("CVM_STOP_GRACE", "3")
        .stdout(Stdio::piped())
        .spawn()
        .expect("util-linux unshare is required for this test");
    let mut child = ChildGuard(child);
    let (tx, rx) = mpsc::channel();
    let stdout = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    let mut seen = Vec::new();
    let mut wait_line = |needle: &str| {
        while !seen.iter().any(|l: &String| l.contains(needle)) {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(l) => seen.push(l),
                Err(_) => panic!(
                    "no line containing {needle:?} (this test needs root for a PID namespace); got {seen:#?}"
                ),
            }
        }
    };
    wait_line("pid 1: true");
    wait_line("[parent] spawned orphan");
    wait_line("(exited with status 0)"); // the orphaned `sleep 0.3`, reaped by the agent
                                         // SIGTERM to the agent: its host pid is the only child of `unshare`.
    let out = Command::new("pgrep")
        .arg("-P")
        .arg(child.0.id().to_string())
        .output()
        .unwrap();
    let agent: i32 = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .expect("agent pid");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(agent).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    wait_line("service parent: killed by signal 15");
    wait_line("services stopped");
    wait_line("powering off");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.0.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "agent did not end after power-off"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !seen
            .iter()
            .any(|l| l.contains("did not exit") || l.contains("still running")),
        "{seen:#?}"
    );
}
