//! `cvm-image lock --record-reference`: boot the default image like `cvm-image run` does, keep the
//! firmware's PCR 0/1 events and write `reference/<variant>.json` + its pin in the lock.
//!
//! It drives both the build ([`crate::pipeline`]) and the runner ([`crate::qemu`]), and the runner
//! reads the reference data ([`crate::reference`]); so the recorder sits above all three, and
//! `reference` depends on neither.
//!
//! The boot goes through [`crate::qemu::prepare`] and [`crate::qemu::Vm`], the code of `cvm-image
//! run`, with the default memory and CPUs, so the recorded machine is the one users boot. The
//! Secure Boot variant needs a signed UKI and an enrolled variable store: it is built with a
//! throw-away key set generated for the recording (PCR 0/1 do not measure the keys: they go to PCR 7).
//! Before anything is written, the recorded events must replay to the TPM's PCR 0/1 in every bank.

use crate::inputs::lock::{LockedReference, Lockfile};
use crate::pipeline::{self, Options};
use crate::qemu::{self, cmdline, http, Accel, Outcome, RunArgs, Vm};
use crate::reference::{
    firmware_events, lock_dir, OvmfBuild, RecordedWith, Reference, Variant, FORMAT, PCRS,
    RECORD_COMMAND,
};
use crate::spec::Spec;
use anyhow::{bail, Context, Result};
use cvm_measure::eventlog::{self, HashAlg};
use cvm_measure::predict::pcr_values;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// Seconds the guest gets to power off at the end of a recording.
const GRACE_SECS: u64 = 20;
/// Timeout of one request to the agent.
const AGENT_REQUEST: Duration = Duration::from_secs(30);
/// Debian's package of `qemu-system-x86_64`.
const QEMU_DEB: &str = "qemu-system-x86";

/// How to record.
pub struct RecordOptions {
    pub spec: PathBuf,
    pub lock: Option<PathBuf>,
    pub cache: Option<PathBuf>,
    pub variants: Vec<Variant>,
    pub accel: Accel,
    /// Seconds to wait for the agent.
    pub timeout: u64,
}

/// Record every requested variant; each one's file and lock pin are written as soon as it is
/// recorded (so a later failure keeps the earlier ones).
pub fn record(opts: &RecordOptions) -> Result<()> {
    let spec = Spec::load(&opts.spec, None)?;
    let crate::fetch::InputPaths {
        lock: lock_path,
        cache,
    } = crate::fetch::InputPaths::resolve(&spec, opts.lock.clone(), opts.cache.clone());
    let mut variants = opts.variants.clone();
    variants.sort();
    variants.dedup();
    for variant in variants {
        let scratch = crate::inputs::atomic::TempDir::new_in(&cache.join("tmp"), "reference")?;
        let reference = record_variant(&spec, opts, &lock_path, &cache, scratch.path(), variant)
            .with_context(|| format!("recording the reference boot {}", variant.name()))?;
        let file = write(&lock_path, variant, &reference)?;
        for (pcr, value) in &reference.pcrs[&HashAlg::SHA256] {
            println!("{} PCR {pcr} sha256 {value}", variant.name());
        }
        println!(
            "wrote {} and pinned it in {}",
            file.display(),
            lock_path.display()
        );
    }
    Ok(())
}

fn record_variant(
    spec: &Spec,
    opts: &RecordOptions,
    lock_path: &Path,
    cache: &Path,
    scratch: &Path,
    variant: Variant,
) -> Result<Reference> {
    let out = scratch.join("out");
    let mut build_opts = Options::new(
        spec,
        out.clone(),
        Some(lock_path.into()),
        Some(cache.into()),
    );
    build_opts.keys = None;
    if variant.secure_boot() {
        let keys = scratch.join("keys");
        crate::secureboot::keys::generate(&keys)?;
        build_opts.keys = Some(keys);
    }
    eprintln!(
        "cvm-image: building the image for the {} reference boot",
        variant.name()
    );
    pipeline::build(spec, &build_opts)?;

    let args = RunArgs {
        out: out.clone(),
        disk: None,
        accel: opts.accel,
        detach: false,
        memory: cmdline::DEFAULT_MEMORY_MIB,
        cpus: cmdline::DEFAULT_CPUS,
        timeout: opts.timeout,
        grace: GRACE_SECS,
        secure_boot: variant.secure_boot(),
        spec: spec.path.clone(),
        lock: Some(lock_path.into()),
        cache: Some(cache.into()),
        print_command: false,
    };
    let mut cfg = qemu::prepare(&args)?;
    cfg.echo_console = false;
    let machine = cmdline::machine(cfg.secure_boot, cfg.accel, cfg.memory_mib, cfg.cpus);
    let recorded_with = RecordedWith {
        qemu_version: qemu::tools::first_line_of(&cfg.qemu, "--version")?,
        qemu_package: debian_package_version(QEMU_DEB),
        swtpm_version: qemu::tools::first_line_of(&cfg.swtpm, "--version")?,
        ovmf: ovmf_build(spec, lock_path, &cfg.ovmf_code, variant)?,
        machine,
    };
    let (log_bytes, tpm) = boot_and_fetch(&cfg, &args)?;
    std::fs::write(scratch.join("eventlog.bin"), &log_bytes).ok();
    let log =
        eventlog::parse(&log_bytes).context("the agent's /eventlog is not a TCG event log")?;
    let events = firmware_events(&log);
    let pcrs = checked_values(&events, &log.banks(), &tpm)?;
    Ok(Reference {
        format: FORMAT,
        name: variant.name().into(),
        description: description(variant),
        secure_boot: variant.secure_boot(),
        recorded_with,
        pcrs,
        events,
    })
}

/// The values the events replay to in every bank of the log, each checked against the TPM's value
/// where the agent reports that bank (SHA-256 always: a log that does not replay to the TPM is not
/// recorded).
fn checked_values(
    events: &[cvm_measure::eventlog::ExpectedEvent],
    banks: &[HashAlg],
    tpm: &serde_json::Value,
) -> Result<BTreeMap<HashAlg, BTreeMap<u32, String>>> {
    if tpm.get(HashAlg::SHA256.name().as_str()).is_none() {
        bail!("the agent's /pcrs has no sha256 bank");
    }
    let mut pcrs = BTreeMap::new();
    for &bank in banks {
        let values = pcr_values(events, &PCRS, bank)?;
        let mut bank_values = BTreeMap::new();
        for pcr in PCRS {
            let replayed = values.get(&pcr).map(hex::encode).unwrap_or_default();
            if let Some(reported_bank) = tpm.get(bank.name().as_str()) {
                let reported = reported_bank
                    .get(pcr.to_string())
                    .and_then(|v| v.as_str())
                    .with_context(|| format!("the agent's /pcrs lacks PCR {pcr} in {bank}"))?;
                if !reported.eq_ignore_ascii_case(&replayed) {
                    bail!(
                        "PCR {pcr} {bank}: the firmware's events replay to {replayed} but the TPM \
                         reports {reported}; not recording an inconsistent reference"
                    );
                }
            }
            bank_values.insert(pcr, replayed);
        }
        pcrs.insert(bank, bank_values);
    }
    Ok(pcrs)
}

fn description(variant: Variant) -> String {
    let run = if variant.secure_boot() {
        "`cvm-image run --secure-boot`"
    } else {
        "`cvm-image run`"
    };
    format!(
        "PCR 0 and 1 of {run} as the pinned OVMF measures them (every bank of the swtpm vTPM); \
         recorded by `{}`, do not edit",
        RECORD_COMMAND
    )
}

/// The pinned OVMF package and the code file booted.
fn ovmf_build(spec: &Spec, lock_path: &Path, code: &Path, variant: Variant) -> Result<OvmfBuild> {
    let lock = Lockfile::load(lock_path)?;
    let pkg = lock.get(&spec.firmware.package).with_context(|| {
        format!(
            "{} does not pin the firmware package {}",
            lock_path.display(),
            spec.firmware.package
        )
    })?;
    let vars = if variant.secure_boot() {
        "the template with PK/KEK/db enrolled by `cvm-image build --keys` (throw-away keys)"
    } else {
        "the package's VARS template (spec [firmware])"
    };
    Ok(OvmfBuild {
        package: pkg.name.clone(),
        version: pkg.version.clone(),
        deb_sha256: pkg.sha256.clone(),
        code: code
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        code_sha256: crate::inputs::sha256_file(code)?,
        vars: vars.into(),
    })
}

/// Boot, wait for the agent, fetch `/eventlog` (raw TCG log) and `/pcrs`, shut down.
fn boot_and_fetch(cfg: &qemu::VmConfig, args: &RunArgs) -> Result<(Vec<u8>, serde_json::Value)> {
    let never = AtomicBool::new(false);
    let mut vm = Vm::start(cfg)?;
    eprintln!(
        "cvm-image: booting {} for the reference boot (console: {})",
        cfg.disk.display(),
        vm.console_log().display()
    );
    let fetched = match vm.wait_healthy(Duration::from_secs(args.timeout), &never)? {
        Outcome::Healthy(_) => fetch(vm.agent_url()),
        other => Err(anyhow::anyhow!(
            "the agent did not become healthy ({other:?}); console log: {}",
            vm.console_log().display()
        )),
    };
    vm.shutdown(Duration::from_secs(args.grace), None);
    fetched
}

fn fetch(agent: &str) -> Result<(Vec<u8>, serde_json::Value)> {
    let log = http::get_bytes(&format!("{agent}/eventlog"), AGENT_REQUEST)?;
    let pcrs = http::get(&format!("{agent}/pcrs"), AGENT_REQUEST)?;
    if log.status != 200 || pcrs.status != 200 {
        bail!(
            "the agent answered /eventlog {} and /pcrs {}",
            log.status,
            pcrs.status
        );
    }
    let pcrs = serde_json::from_str(&pcrs.body).context("the agent's /pcrs is not JSON")?;
    Ok((log.body, pcrs))
}

/// Write the file atomically, then pin its hash in the lock (also atomically).
fn write(lock_path: &Path, variant: Variant, reference: &Reference) -> Result<PathBuf> {
    let mut json = serde_json::to_vec_pretty(reference)?;
    json.push(b'\n');
    let path = lock_dir(lock_path).join(variant.file());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    crate::inputs::atomic::write_file(&path, &json)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let mut lock = Lockfile::load(lock_path)?;
    lock.upsert_reference(LockedReference {
        name: variant.name().into(),
        file: variant.file(),
        sha256: hex::encode(crate::ids::sha256(&json)),
    });
    lock.save(lock_path)?;
    Ok(path)
}

/// `NAME VERSION` of an installed Debian package, None when dpkg does not know it.
fn debian_package_version(name: &str) -> Option<String> {
    let o = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", name])
        .output()
        .ok()?;
    let version = String::from_utf8_lossy(&o.stdout).trim().to_string();
    (o.status.success() && !version.is_empty()).then(|| format!("{name} {version}"))
}
