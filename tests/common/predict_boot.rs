//! The predicted event log of the `qemu` profile against ONE real boot of the default image
//! (QEMU TCG + the pinned OVMF + swtpm through `cvm-image run --detach`).
//!
//! * in every bank swtpm has active (SHA-1, SHA-256, SHA-384, SHA-512), every predicted PCR (2–9,
//!   11–15 from the firmware log, 23 from the init's runtime log): the value replayed from the booted
//!   log = the TPM's value (`/pcrs`) = the replay of our prediction, and the event-by-event diff finds
//!   nothing; the runtime log records a digest for every bank;
//! * golden-measurement.json: for every bank the qemu profile lists, every predicted/reference PCR
//!   equals the TPM's value and its listed events equal the booted log's, event by event;
//! * `tpm2_eventlog` (tpm2-tools, an independent parser) replays the booted log to the same values
//!   as our parser, for every PCR and bank it prints;
//! * without booting again: one byte of the cmdline changed → PCR 9 and 11 predictions change and
//!   the diff against the booted log names PCR 9 LoadOptions and PCR 11 `.cmdline` (and PCR 4/5,
//!   because the UKI's hash and the disk GUID derived from it change too).
//!
//! Run by predict_boot.rs (the spec's kernel, 6.12) and predict_boot_6_1.rs (Debian's 6.1) through
//! [`predict_boot_tests!`](crate::predict_boot_tests), which passes each check the binary's kernel
//! profile; `CVM_BOOT_KERNEL_PROFILE=…` overrides it.

use super::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use cvm_image::predict::{expected_events_for_output, BANKS};
use cvm_image::spec::Spec;
use cvm_measure::eventlog::{self, diff_pcrs, Event, EventLog, ExpectedEvent, HashAlg, LogEvents};
use cvm_measure::predict::{self, pcr23, PREDICTED_PCRS};
use cvm_measure::workload::{self, WORKLOAD_PCR};

/// Banks swtpm has active in `cvm-image run` (and the firmware logs, and the init extends).
const LOG_BANKS: [HashAlg; 4] = [
    HashAlg::SHA1,
    HashAlg::SHA256,
    HashAlg::SHA384,
    HashAlg::SHA512,
];

/// A kernel profile of the checks: `None` is the spec's own.
pub type Profile = Option<&'static str>;

/// The spec under test: the repository's, optionally with another kernel profile.
fn kernel_profile(profile: Profile) -> Option<String> {
    std::env::var("CVM_BOOT_KERNEL_PROFILE")
        .ok()
        .or(profile.map(String::from))
}

fn kernel_args(profile: Profile) -> Vec<String> {
    match kernel_profile(profile) {
        Some(p) => vec!["--kernel".into(), repo().join(p).display().to_string()],
        None => vec![],
    }
}

fn spec_at(path: &Path, profile: Profile) -> Spec {
    let kernel = kernel_profile(profile).map(|p| repo().join(p));
    Spec::load(path, kernel.as_deref()).unwrap()
}

/// Build `spec` into a fresh scratch directory.
fn build_into(name: &str, spec: &Path, profile: Profile) -> PathBuf {
    let out = scratch(name);
    let args = kernel_args(profile);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = build(spec, &out, &args, None);
    assert!(
        o.status.success(),
        "build of {} failed:\n{}",
        spec.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// The pinned VARS template `cvm-image run` copies for each boot.
fn ovmf_vars() -> PathBuf {
    cvm_image::qemu::firmware::resolve(&repo().join("image.toml"), None, None)
        .unwrap()
        .vars_template
}

struct Booted {
    out: PathBuf,
    /// `/pcrs`: bank → PCR → lower-case hex.
    pcrs: BTreeMap<HashAlg, BTreeMap<u32, String>>,
    log_path: PathBuf,
    log: EventLog,
    runtime: Vec<workload::RuntimeEvent>,
}

/// The one boot of this test binary (one profile per binary): a copy of the shared image, run
/// --detach, fetch /pcrs, /eventlog and /eventlog/runtime, stop. A failed boot is remembered (no
/// second attempt).
fn booted(profile: Profile) -> &'static Booted {
    static BOOT: OnceLock<Result<Booted, String>> = OnceLock::new();
    once(&BOOT, move || boot_once(profile))
}

fn boot_once(profile: Profile) -> Booted {
    let args = kernel_args(profile);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = shared_image(&args).copy_to("predict-boot-image");
    let Evidence {
        pcrs: pcrs_path,
        eventlog: log_path,
        runtime: runtime_path,
    } = with_detached_vm(&out, |agent| fetch_evidence(agent, &out));
    let pcrs: BTreeMap<String, BTreeMap<u32, String>> =
        serde_json::from_slice(&std::fs::read(&pcrs_path).unwrap()).unwrap();
    let pcrs = pcrs
        .into_iter()
        .map(|(bank, values)| (HashAlg::from_name(&bank).unwrap(), values))
        .collect();
    let log = eventlog::parse(&std::fs::read(&log_path).unwrap()).unwrap();
    let runtime = workload::parse_log(&std::fs::read_to_string(&runtime_path).unwrap()).unwrap();
    Booted {
        out,
        pcrs,
        log_path,
        log,
        runtime,
    }
}

/// The prediction for a build output, from the built files alone.
fn predicted(out: &Path, spec: &Path, profile: Profile) -> Vec<ExpectedEvent> {
    expected_events_for_output(out, &spec_at(spec, profile), &ovmf_vars(), &BANKS).unwrap()
}

/// Replayed value of `pcr` in `bank` (reset value when the log never extends it).
fn replayed(log: &EventLog, bank: HashAlg, pcr: u32) -> String {
    let len = bank.digest_len().unwrap();
    eventlog::replay(log)
        .value(bank, pcr)
        .map(hex::encode)
        .unwrap_or_else(|| "00".repeat(len))
}

/// The runtime log as TCG events, every bank (for the event-by-event diff of PCR 23).
fn runtime_as_events(runtime: &[workload::RuntimeEvent]) -> Vec<Event> {
    runtime
        .iter()
        .map(|e| Event {
            pcr: e.pcr,
            event_type: pcr23::RUNTIME_EVENT_TYPE,
            digests: e
                .digests
                .iter()
                .map(|(alg, digest)| eventlog::EventDigest {
                    alg: *alg,
                    digest: digest.clone(),
                })
                .collect(),
            data: Vec::new(),
        })
        .collect()
}

/// The booted events `pcr`'s value comes from: the runtime log for PCR 23, else the firmware log.
/// The booted events of `pcr`'s log, numbered as its tools number them: the runtime log
/// (`runtime`, lines from 1) for PCR 23, else the firmware log.
fn booted_events<'a>(b: &'a Booted, runtime: &'a [Event], pcr: u32) -> LogEvents<'a> {
    if pcr == WORKLOAD_PCR {
        LogEvents::numbered_from(runtime, 1)
    } else {
        LogEvents::of(&b.log)
    }
}

pub fn prediction_equals_the_booted_log_and_the_tpm(profile: Profile) {
    let b = booted(profile);
    let started = std::time::Instant::now();
    let expected = predicted(&b.out, &repo().join("image.toml"), profile);
    let elapsed = started.elapsed();
    assert_eq!(
        b.pcrs.keys().copied().collect::<Vec<_>>(),
        LOG_BANKS,
        "/pcrs serves every active bank"
    );
    for bank in LOG_BANKS {
        let tpm = &b.pcrs[&bank];
        let values = predict::pcr_values(&expected, &PREDICTED_PCRS, bank).unwrap();
        for pcr in PREDICTED_PCRS {
            let log_value = replayed(&b.log, bank, pcr);
            assert_eq!(
                tpm[&pcr], log_value,
                "PCR {pcr} {bank}: the TPM differs from the replayed log"
            );
            assert_eq!(
                hex::encode(&values[&pcr]),
                log_value,
                "PCR {pcr} {bank}: the prediction differs from the boot"
            );
        }
        let mismatches = diff_pcrs(&expected, &b.log, bank, &PREDICTED_PCRS);
        let text: Vec<String> = mismatches.iter().map(ToString::to_string).collect();
        assert!(text.is_empty(), "{bank}: {}", text.join("\n"));

        // PCR 23: the init's runtime log, the TPM and the prediction, in this bank too.
        let runtime_value = hex::encode(
            &workload::replay(&b.runtime, bank)
                .unwrap_or_else(|e| panic!("runtime log, {bank}: {e}"))[&WORKLOAD_PCR],
        );
        let predicted23 = predict::pcr_values(&expected, &[WORKLOAD_PCR], bank).unwrap();
        assert_eq!(
            tpm[&WORKLOAD_PCR], runtime_value,
            "PCR 23 {bank}: TPM vs runtime log"
        );
        assert_eq!(
            hex::encode(&predicted23[&WORKLOAD_PCR]),
            runtime_value,
            "PCR 23 {bank}: prediction vs boot"
        );
        assert_ne!(
            runtime_value,
            "00".repeat(bank.digest_len().unwrap()),
            "PCR 23 {bank} was never extended"
        );
        let runtime = runtime_as_events(&b.runtime);
        let m = diff_pcrs(
            &expected,
            LogEvents::numbered_from(&runtime, 1),
            bank,
            &[WORKLOAD_PCR],
        );
        assert!(m.is_empty(), "{bank}: {m:?}");
    }
    // The init logged (and extended) every active bank.
    for e in &b.runtime {
        assert_eq!(
            e.digests.keys().copied().collect::<Vec<_>>(),
            LOG_BANKS,
            "{}",
            e.description
        );
    }

    // The expected log encodes and re-parses to the same replayed values.
    let firmware: Vec<ExpectedEvent> = expected
        .iter()
        .filter(|e| e.pcr != WORKLOAD_PCR)
        .cloned()
        .collect();
    let written = eventlog::expected_log(&BANKS, &firmware).unwrap();
    let reparsed = eventlog::parse(&written.encode().unwrap()).unwrap();
    for bank in LOG_BANKS {
        for pcr in PREDICTED_PCRS {
            assert_eq!(
                replayed(&reparsed, bank, pcr),
                b.pcrs[&bank][&pcr],
                "PCR {pcr} {bank}"
            );
        }
    }
    eprintln!(
        "predicted and booted agree on PCRs {PREDICTED_PCRS:?} and 23 in {:?} ({} expected \
         events, predicted in {:.0} ms)",
        LOG_BANKS.map(HashAlg::name),
        expected.len(),
        elapsed.as_secs_f64() * 1000.0
    );
}

pub fn sha384_pcr23_is_the_prediction(profile: Profile) {
    // The bank the init used to leave at zero: spelled out on its own.
    let b = booted(profile);
    let expected = predicted(&b.out, &repo().join("image.toml"), profile);
    let predicted23 = predict::pcr_values(&expected, &[WORKLOAD_PCR], HashAlg::SHA384).unwrap();
    let tpm = &b.pcrs[&HashAlg::SHA384][&WORKLOAD_PCR];
    assert_eq!(&hex::encode(&predicted23[&WORKLOAD_PCR]), tpm);
    assert_ne!(tpm, &"00".repeat(48));
    eprintln!("sha384 PCR 23 = {tpm}");
}

/// The reference boot pinned in cvm-image.lock (Secure Boot off) against this boot, in every bank
/// the TPM has: its PCR 0/1 events are the booted firmware's, and so are the values.
pub fn pinned_reference_boot_matches_this_boot_in_every_bank(profile: Profile) {
    use cvm_image::reference::{parse, Variant};
    let b = booted(profile);
    let variant = Variant::SecureBootOff;
    let bytes = std::fs::read(repo().join(variant.file())).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (record it with `cvm-image lock --record-reference`)",
            variant.file()
        )
    });
    let reference = parse(&bytes, variant).unwrap();
    for bank in LOG_BANKS {
        let m = diff_pcrs(&reference.events, &b.log, bank, &[0, 1]);
        assert!(m.is_empty(), "bank {bank}: {m:?}");
        for pcr in [0, 1] {
            assert_eq!(
                reference.pcrs[&bank][&pcr],
                replayed(&b.log, bank, pcr),
                "PCR {pcr} bank {bank}"
            );
        }
    }
}

/// `tpm2_eventlog`'s replayed values: bank → PCR → lower-case hex.
fn tpm2_eventlog_pcrs(log: &Path) -> BTreeMap<String, BTreeMap<u32, String>> {
    let text = ok(Command::new("tpm2_eventlog").arg(log));
    let section = text
        .split("\npcrs:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("tpm2_eventlog printed no pcrs section:\n{text}"));
    let mut banks: BTreeMap<String, BTreeMap<u32, String>> = BTreeMap::new();
    let mut bank = String::new();
    for line in section.lines() {
        let t = line.trim();
        if let Some(name) = t.strip_suffix(':') {
            bank = name.to_string();
        } else if let Some((pcr, value)) = t.split_once(" : ") {
            banks.entry(bank.clone()).or_default().insert(
                pcr.trim().parse().unwrap(),
                value.trim().trim_start_matches("0x").to_ascii_lowercase(),
            );
        }
    }
    banks
}

pub fn tpm2_eventlog_replays_the_booted_log_like_we_do(profile: Profile) {
    let b = booted(profile);
    let theirs = tpm2_eventlog_pcrs(&b.log_path);
    assert_eq!(
        theirs.keys().cloned().collect::<Vec<_>>(),
        ["sha1", "sha256", "sha384", "sha512"],
        "banks of tpm2_eventlog"
    );
    let ours = eventlog::replay(&b.log);
    assert!(ours.problems.is_empty(), "{:?}", ours.problems);
    for (bank_name, values) in &theirs {
        let bank = HashAlg::from_name(bank_name).unwrap();
        let our_values: BTreeMap<u32, String> = ours.banks[&bank]
            .iter()
            .map(|(k, v)| (*k, hex::encode(v)))
            .collect();
        assert_eq!(values, &our_values, "bank {bank_name}");
    }
}

pub fn one_cmdline_byte_changes_pcr9_and_pcr11_and_the_diff_names_them(profile: Profile) {
    let b = booted(profile);
    // A spec copy whose esp/cmdline differs in one byte ("quiet" → "quies").
    let dir = scratch("predict-cmdline-spec");
    copy_spec(&dir);
    let cmdline = dir.join("esp/cmdline");
    let old = std::fs::read(&cmdline).unwrap();
    let pos = old
        .windows(5)
        .position(|w| w == b"quiet")
        .expect("esp/cmdline has no `quiet`")
        + 4;
    let mut new = old.clone();
    new[pos] = b's';
    std::fs::write(&cmdline, &new).unwrap();
    let spec = dir.join("image.toml");
    let out = build_into("predict-cmdline-image", &spec, profile);

    let before = predicted(&b.out, &repo().join("image.toml"), profile);
    let after = predicted(&out, &spec, profile);
    let value = |events: &[ExpectedEvent], pcr| {
        predict::pcr_values(events, &[pcr], HashAlg::SHA256).unwrap()[&pcr].clone()
    };
    for pcr in [9, 11] {
        assert_ne!(value(&before, pcr), value(&after, pcr), "PCR {pcr}");
    }
    for pcr in [2, 3, 6, 7, 23] {
        assert_eq!(value(&before, pcr), value(&after, pcr), "PCR {pcr}");
    }

    // The old image's boot against the new prediction.
    let mismatches = diff_pcrs(&after, &b.log, HashAlg::SHA256, &PREDICTED_PCRS);
    let named: Vec<(u32, usize)> = mismatches.iter().map(|m| (m.pcr, m.position)).collect();
    let text: Vec<String> = mismatches.iter().map(ToString::to_string).collect();
    // PCR 4 event 3 = the UKI's Authenticode; PCR 5 event 2 = the GPT (the disk GUID is derived
    // from the UKI's hash); PCR 9 event 1 = LoadOptions; PCR 11 event 6 = the .cmdline content.
    assert_eq!(named, [(4, 3), (5, 2), (9, 1), (11, 6)], "{text:#?}");
    assert!(
        text[2].starts_with("PCR 9: event 1 (EV_EVENT_TAG LoadOptions"),
        "{}",
        text[2]
    );
    assert!(
        text[3].starts_with("PCR 11: event 6 (EV_IPL UKI section .cmdline) differs"),
        "{}",
        text[3]
    );
    eprintln!("changed cmdline:\n{}", text.join("\n"));
}

/// The build's golden-measurement.json: in every bank its qemu profile lists, every PCR marked
/// predicted or reference equals the booted TPM's value and its events equal the booted log's; the
/// cloud profiles mark the firmware- and key-dependent PCRs as not enforced.
pub fn golden_measurement_qemu_profile_equals_the_boot(profile: Profile) {
    let b = booted(profile);
    let golden: cvm_verify::golden::Golden =
        serde_json::from_slice(&std::fs::read(b.out.join("golden-measurement.json")).unwrap())
            .unwrap();
    let qemu = &golden.profiles["qemu"].pcrs;
    assert_eq!(
        qemu.keys().map(String::as_str).collect::<Vec<_>>(),
        ["sha256", "sha384", "sha512"],
        "qemu profile banks"
    );
    let runtime = runtime_as_events(&b.runtime);
    for (bank_name, entries) in qemu {
        let bank = HashAlg::from_name(bank_name).unwrap();
        let mut predicted = vec![];
        let mut reference = vec![];
        for (pcr, entry) in entries {
            let n: u32 = pcr.parse().unwrap();
            match entry.source {
                cvm_verify::golden::Source::Predicted => predicted.push(n),
                cvm_verify::golden::Source::Reference => reference.push(n),
                cvm_verify::golden::Source::Unknown => continue,
            }
            assert_eq!(
                entry.value.as_deref(),
                Some(b.pcrs[&bank][&n].as_str()),
                "golden qemu PCR {pcr} ({bank}) differs from the TPM"
            );
            assert!(entry.enforce, "PCR {pcr} ({bank})");
            // The listed events: this bank's digests only, and exactly the booted ones.
            assert!(
                entry.events.iter().all(|e| e.digests.keys().eq([&bank])),
                "PCR {pcr} ({bank}): events carry other banks"
            );
            let m = diff_pcrs(&entry.events, booted_events(b, &runtime, n), bank, &[n]);
            let text: Vec<String> = m.iter().map(ToString::to_string).collect();
            assert!(text.is_empty(), "{bank}: {}", text.join("\n"));
        }
        predicted.sort();
        assert_eq!(
            predicted,
            [2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 23],
            "{bank}"
        );
        assert_eq!(
            reference,
            [0, 1],
            "{bank}: PCR 0/1 must come from the reference boot pinned in cvm-image.lock"
        );
        eprintln!("golden {bank}: predicted {predicted:?}, reference {reference:?} equal the boot");
    }
    for (cloud, banks) in [
        ("gcp", &["sha256", "sha384"][..]),
        ("aws", &["sha256", "sha384"]),
        ("azure", &["sha256"]),
    ] {
        let profile = &golden.profiles[cloud].pcrs;
        assert_eq!(
            profile.keys().map(String::as_str).collect::<Vec<_>>(),
            banks,
            "{cloud} banks"
        );
        for (bank, pcrs) in profile {
            for pcr in ["0", "1", "7"] {
                assert!(!pcrs[pcr].enforce, "{cloud} {bank} PCR {pcr}");
            }
            for pcr in ["9", "11", "23"] {
                assert_eq!(
                    pcrs[pcr].value, qemu[bank][pcr].value,
                    "{cloud} {bank} PCR {pcr}: same formula as qemu"
                );
                assert!(pcrs[pcr].enforce, "{cloud} {bank} PCR {pcr}");
            }
        }
    }
}

/// The checks as `#[test]`s of the calling test binary (which declares `mod common;`), each given
/// `$profile`, the kernel profile of the binary's boot.
#[macro_export]
macro_rules! predict_boot_tests {
    ($profile:expr) => {
        $crate::predict_boot_tests!(@each $profile; prediction_equals_the_booted_log_and_the_tpm, sha384_pcr23_is_the_prediction, pinned_reference_boot_matches_this_boot_in_every_bank, tpm2_eventlog_replays_the_booted_log_like_we_do, one_cmdline_byte_changes_pcr9_and_pcr11_and_the_diff_names_them, golden_measurement_qemu_profile_equals_the_boot);
    };
    (@each $profile:expr; $($check:ident),*) => {
        $(
            #[test]
            fn $check() {
                $crate::common::predict_boot::$check($profile)
            }
        )*
    };
}
