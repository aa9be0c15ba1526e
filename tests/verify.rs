//! `cvm-image verify` and `cvm-image golden export` against ONE real boot of the default image
//! (QEMU TCG + the pinned OVMF + swtpm through `cvm-image run --detach`).
//!
//! * while the VM runs: `verify --agent URL` succeeds, and the agent's /pcrs, /eventlog and
//!   /eventlog/runtime are saved;
//! * offline, the saved files verify against the build's golden file (exit 0, every enforced PCR ok);
//! * without booting again, each must exit 1 and name the right PCR and event:
//!   (a) the golden file of an image whose initramfs differs (one module fewer in a spec copy):
//!   PCR 9 initrd and PCR 11 `.initrd`;
//!   (b) the golden file of an image whose workload differs (one config byte): PCR 23
//!   "workload verity root hash";
//!   (c) the booted log with one event's digest byte flipped: the log no longer replays to the
//!   TPM's PCR 11, and the diff names the `.cmdline` event;
//!   (d) the PCR file with one value changed: PCR 7.
//! * usage/input errors exit 2; the Automata export carries the enforced values.

mod common;
use common::*;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

struct Booted {
    golden: PathBuf,
    eventlog: PathBuf,
    pcrs: PathBuf,
    runtime: PathBuf,
    /// `cvm-image verify --agent URL --json` run against the live VM.
    live: Output,
}

/// The one boot of this test binary (a failed boot is remembered, not retried).
fn booted() -> &'static Booted {
    static BOOT: OnceLock<Result<Booted, String>> = OnceLock::new();
    once(&BOOT, boot_once)
}

fn boot_once() -> Booted {
    let out = default_image().copy_to("verify-boot");
    let dir = scratch("verify-evidence");
    let golden = out.join("golden-measurement.json");
    let (evidence, live) = with_detached_vm(&out, |agent| {
        let evidence = fetch_evidence(agent, &dir);
        let live = run(Command::new(cvm_image())
            .arg("verify")
            .arg("--golden")
            .arg(&golden)
            .args(["--agent", agent, "--json"])
            .arg("--ek-ca")
            .arg(out.join("ek-ca.pem")));
        (evidence, live)
    });
    Booted {
        golden,
        eventlog: evidence.eventlog,
        pcrs: evidence.pcrs,
        runtime: evidence.runtime,
        live,
    }
}

/// `cvm-image verify --json` of the booted evidence files against `golden` (optionally with other
/// files); returns the exit code and the parsed verdict.
fn verify_files(golden: &Path, eventlog: &Path, pcrs: &Path) -> (i32, Value, String) {
    let b = booted();
    let o = run(Command::new(cvm_image())
        .arg("verify")
        .arg("--golden")
        .arg(golden)
        .arg("--eventlog")
        .arg(eventlog)
        .arg("--pcrs")
        .arg(pcrs)
        .arg("--runtime-log")
        .arg(&b.runtime)
        .arg("--json"));
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let verdict: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("verify printed no JSON verdict ({e}); stderr:\n{stderr}"));
    (o.status.code().unwrap_or(-1), verdict, stderr)
}

/// The `message` of every difference of a verdict.
fn messages(v: &Value) -> Vec<String> {
    v["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["message"].as_str().unwrap().to_string())
        .collect()
}

fn pcr_status(v: &Value, pcr: u64) -> String {
    v["pcrs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pcr"] == pcr)
        .unwrap_or_else(|| panic!("no PCR {pcr} row"))["status"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Copy of the spec directory, edited by `edit`, built; returns its golden file.
fn rebuilt_golden(name: &str, edit: impl FnOnce(&Path)) -> PathBuf {
    let dir = scratch(&format!("{name}-spec"));
    copy_spec(&dir);
    edit(&dir);
    let out = scratch(&format!("{name}-image"));
    let o = run(Command::new(cvm_image())
        .env("CVM_IMAGE_WORKSPACE", repo())
        .arg("build")
        .arg("--spec")
        .arg(dir.join("image.toml"))
        .arg("--out")
        .arg(&out));
    assert!(
        o.status.success(),
        "build of the {name} spec copy failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out.join("golden-measurement.json")
}

fn golden_events(golden: &Path, pcr: &str) -> Vec<Value> {
    let g: Value = serde_json::from_slice(&std::fs::read(golden).unwrap()).unwrap();
    g["profiles"]["qemu"]["pcrs"]["sha256"][pcr]["events"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn live_agent_and_saved_files_verify() {
    let b = booted();
    let live: Value = serde_json::from_slice(&b.live.stdout).unwrap_or_else(|e| {
        panic!(
            "verify --agent printed no JSON ({e}): {}",
            String::from_utf8_lossy(&b.live.stderr)
        )
    });
    assert_eq!(b.live.status.code(), Some(0), "{live:#}");
    assert_eq!(live["evidence"]["origin"]["kind"], "agent");

    let (code, v, stderr) = verify_files(&b.golden, &b.eventlog, &b.pcrs);
    assert_eq!(code, 0, "{v:#}\n{stderr}");
    assert_eq!(v["ok"], true);
    assert_eq!(v["failures"], Value::Array(vec![]));
    // `/pcrs` carries every active bank: each bank the qemu profile lists is compared.
    let mut enforced: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for row in v["pcrs"].as_array().unwrap() {
        if row["enforce"] == true {
            assert_eq!(row["status"], "ok", "{row}");
            let bank = row["bank"].as_str().unwrap().to_string();
            enforced
                .entry(bank)
                .or_default()
                .push(row["pcr"].as_u64().unwrap());
        }
    }
    assert_eq!(
        enforced.keys().map(String::as_str).collect::<Vec<_>>(),
        ["sha256", "sha384", "sha512"]
    );
    // PCR 0/1: the pinned reference boot; the others predicted.
    for (bank, pcrs) in &enforced {
        assert_eq!(
            pcrs,
            &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 23],
            "{bank}"
        );
    }
    assert_eq!(v["evidence"]["banks_not_reported"], serde_json::json!([]));
    assert_eq!(v["logs"][0]["status"], "ok");
    assert_eq!(v["logs"][1]["status"], "ok");
    for bank in ["sha1", "sha256", "sha384", "sha512"] {
        assert_eq!(
            v["logs"][1]["checked"][bank],
            serde_json::json!([23]),
            "{bank}"
        );
    }
    assert_eq!(v["evidence"]["quoted"], false);

    // The text form: a table row per PCR and the verdict line.
    let o = run(Command::new(cvm_image())
        .arg("verify")
        .arg("--golden")
        .arg(&b.golden)
        .arg("--eventlog")
        .arg(&b.eventlog)
        .arg("--pcrs")
        .arg(&b.pcrs));
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(text.contains(" 11  sha256  enforced       ok "), "{text}");
    assert!(text.contains("runtime log: not provided"), "{text}");
    assert!(text.contains("verdict: OK"), "{text}");
}

#[test]
fn a_changed_initramfs_is_named_in_pcr9_and_pcr11() {
    let b = booted();
    // One module fewer in the kernel profile: the initramfs (and only the boot chain) changes.
    let golden = rebuilt_golden("verify-initrd", |dir| {
        let profile = dir.join("kernel/debian-6.12.toml");
        let text = std::fs::read_to_string(&profile).unwrap();
        let edited = text.replacen(", \"evdev\"]", "]", 1);
        assert_ne!(
            text, edited,
            "kernel/debian-6.12.toml has no evdev module to drop"
        );
        std::fs::write(&profile, edited).unwrap();
    });
    let (code, v, stderr) = verify_files(&golden, &b.eventlog, &b.pcrs);
    assert_eq!(code, 1, "{v:#}\n{stderr}");
    let text = messages(&v);
    assert!(
        text.iter()
            .any(|m| m.starts_with("PCR 9: event 2 (EV_EVENT_TAG initrd")),
        "{text:#?}"
    );
    let initrd_position = golden_events(&golden, "11")
        .iter()
        .position(|e| e["description"] == "UKI section .initrd")
        .expect("no .initrd event in PCR 11")
        + 1;
    let want = format!("PCR 11: event {initrd_position} (EV_IPL UKI section .initrd) differs");
    assert!(
        text.iter().any(|m| m.starts_with(&want)),
        "{want}\n{text:#?}"
    );
    assert_eq!(pcr_status(&v, 23), "ok", "the workload did not change");
    // The logs themselves are genuine: only the prediction differs.
    assert_eq!(v["logs"][0]["status"], "ok");
}

#[test]
fn a_changed_workload_is_named_in_pcr23() {
    let b = booted();
    let golden = rebuilt_golden("verify-workload", |dir| {
        let f = dir.join("workload/config/greeting.txt");
        let mut bytes = std::fs::read(&f).unwrap();
        bytes[0] ^= 0x20;
        std::fs::write(&f, bytes).unwrap();
    });
    let (code, v, stderr) = verify_files(&golden, &b.eventlog, &b.pcrs);
    assert_eq!(code, 1, "{v:#}\n{stderr}");
    assert_eq!(pcr_status(&v, 23), "differs");
    let text = messages(&v);
    assert!(
        text.iter()
            .any(|m| m.starts_with("PCR 23: event 1 (EV_IPL workload verity root hash) differs")),
        "{text:#?}"
    );
    // workload.toml itself is unchanged: event 2 is not the first difference.
    assert!(
        !text.iter().any(|m| m.contains("workload.toml")),
        "{text:#?}"
    );
    for pcr in [4, 9, 11] {
        assert_eq!(
            pcr_status(&v, pcr),
            "ok",
            "PCR {pcr}: the boot chain did not change"
        );
    }
}

#[test]
fn a_changed_log_event_no_longer_replays_to_the_tpm() {
    let b = booted();
    // The .cmdline content event's SHA-256 digest, located in the raw log and one byte flipped.
    let cmdline = golden_events(&b.golden, "11")
        .into_iter()
        .find(|e| e["description"] == "UKI section .cmdline")
        .expect("no .cmdline event in the golden PCR 11");
    let digest = hex::decode(cmdline["digests"]["sha256"].as_str().unwrap()).unwrap();
    let mut log = std::fs::read(&b.eventlog).unwrap();
    let at: Vec<usize> = log
        .windows(digest.len())
        .enumerate()
        .filter(|(_, w)| *w == digest.as_slice())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        at.len(),
        1,
        "the .cmdline digest occurs {} times in the log",
        at.len()
    );
    log[at[0] + 5] ^= 0x01;
    let tampered = scratch("verify-tampered-log").join("eventlog.bin");
    std::fs::write(&tampered, log).unwrap();

    let (code, v, stderr) = verify_files(&b.golden, &tampered, &b.pcrs);
    assert_eq!(code, 1, "{v:#}\n{stderr}");
    assert_eq!(v["logs"][0]["status"], "differs");
    let mismatches = v["logs"][0]["mismatches"].as_array().unwrap();
    assert_eq!(mismatches.len(), 1, "{mismatches:#?}");
    assert_eq!(mismatches[0]["pcr"], 11);
    assert!(
        v["failures"][0]
            .as_str()
            .unwrap()
            .starts_with("PCR 11 (sha256): the firmware event log replays to"),
        "{:#?}",
        v["failures"]
    );
    // The TPM's value still equals the prediction; the log is what lies.
    assert_eq!(pcr_status(&v, 11), "ok");
    let text = messages(&v);
    assert!(
        text.iter()
            .any(|m| m.starts_with("PCR 11: event 6 (EV_IPL UKI section .cmdline) differs")),
        "{text:#?}"
    );
}

#[test]
fn a_changed_pcr_value_is_named() {
    let b = booted();
    let mut pcrs: Value = serde_json::from_slice(&std::fs::read(&b.pcrs).unwrap()).unwrap();
    let old = pcrs["sha256"]["7"].as_str().unwrap().to_string();
    let mut new = hex::decode(&old).unwrap();
    new[0] ^= 0x80;
    pcrs["sha256"]["7"] = Value::String(hex::encode(new));
    let path = scratch("verify-changed-pcr").join("pcrs.json");
    std::fs::write(&path, serde_json::to_vec(&pcrs).unwrap()).unwrap();

    let (code, v, stderr) = verify_files(&b.golden, &b.eventlog, &path);
    assert_eq!(code, 1, "{v:#}\n{stderr}");
    assert_eq!(pcr_status(&v, 7), "differs");
    let failures: Vec<&str> = v["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(failures.len(), 2, "{failures:#?}");
    assert!(failures[0].starts_with("PCR 7 (sha256): the firmware event log replays to"));
    assert_eq!(
        failures[1],
        "PCR 7 (sha256): enforced value differs from the golden file"
    );
    for pcr in [4, 9, 11, 23] {
        assert_eq!(pcr_status(&v, pcr), "ok");
    }
}

#[test]
fn input_errors_exit_2() {
    let b = booted();
    let verify = |args: &[&str]| {
        let o = run(Command::new(cvm_image()).arg("verify").args(args));
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let golden = b.golden.to_str().unwrap();
    let log = b.eventlog.to_str().unwrap();
    let pcrs = b.pcrs.to_str().unwrap();
    let (code, err) = verify(&[
        "--golden",
        golden,
        "--eventlog",
        log,
        "--pcrs",
        "/nonexistent",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/nonexistent"), "{err}");
    // The PCR file given as the event log.
    let (code, err) = verify(&["--golden", golden, "--eventlog", pcrs, "--pcrs", pcrs]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("is not a TCG event log"), "{err}");
    let (code, err) = verify(&[
        "--golden",
        golden,
        "--eventlog",
        log,
        "--pcrs",
        pcrs,
        "--profile",
        "nope",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("no profile \"nope\"; it has: aws, azure, gcp, qemu"),
        "{err}"
    );
    // Neither source.
    let (code, err) = verify(&["--golden", golden]);
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn automata_export_pins_the_enforced_values() {
    let golden_path = &default_image().out.join("golden-measurement.json");
    let golden: Value = serde_json::from_slice(&std::fs::read(golden_path).unwrap()).unwrap();
    for profile in ["qemu", "gcp"] {
        let text = ok(Command::new(cvm_image())
            .args([
                "golden",
                "export",
                "--format",
                "automata",
                "--profile",
                profile,
            ])
            .arg("--golden")
            .arg(golden_path));
        let doc: Value = serde_json::from_str(&text).unwrap();
        let pcrs = doc["golden_measurement"]["pcrs"].as_array().unwrap();
        let indices: Vec<&str> = pcrs.iter().map(|p| p["index"].as_str().unwrap()).collect();
        assert_eq!(
            indices,
            ["0x0", "0x4", "0x5", "0x7", "0x9", "0xb", "0x10", "0x17"]
        );
        let ours = &golden["profiles"][profile]["pcrs"]["sha256"];
        for p in pcrs {
            let index =
                u32::from_str_radix(p["index"].as_str().unwrap().trim_start_matches("0x"), 16)
                    .unwrap();
            let entry = &ours[index.to_string()];
            let want = if entry["enforce"] == true {
                format!("0x{}", entry["value"].as_str().unwrap())
            } else {
                format!("0x{}", "00".repeat(32))
            };
            assert_eq!(p["pcr"], want.as_str(), "{profile} PCR {index}");
            assert_eq!(p["measure_events"], serde_json::json!([]));
            assert_eq!(p["measure_events_idx"], serde_json::json!([]));
        }
    }
}
