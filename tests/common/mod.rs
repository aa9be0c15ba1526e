//! Shared helpers of the integration tests: the default image built once per run for every test
//! binary ([`shared`]), through the real `cvm-image` executable, and small wrappers over the
//! independent tools that check it.
#![allow(dead_code)]

pub mod predict_boot;
pub mod shared;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

pub fn cvm_image() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cvm-image"))
}

/// A fresh scratch directory under the target dir (kept after the run for post-mortems).
pub fn scratch(name: &str) -> PathBuf {
    let d = repo()
        .join("target/test-scratch")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Run a command; panic with its output when it cannot start (a missing tool is a failure, not a skip).
pub fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e} (run `make deps`)"))
}

/// Run a command that must succeed; returns stdout.
pub fn ok(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{shown} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `cvm-image verify --golden GOLDEN` of offline evidence files that do not exist (`missing` as
/// both --eventlog and --pcrs) plus `extra`: for checks that must decide before any evidence is
/// read (a refusal), or that reach it (an input error naming `missing`).
pub fn verify_without_evidence(golden: &Path, missing: &Path, extra: &[&str]) -> Output {
    run(Command::new(cvm_image())
        .arg("verify")
        .arg("--golden")
        .arg(golden)
        .arg("--eventlog")
        .arg(missing)
        .arg("--pcrs")
        .arg(missing)
        .args(extra))
}

/// `cvm-image build` of `spec` into `out`, with the given cache; returns the process output.
pub fn build(spec: &Path, out: &Path, extra: &[&str], cache: Option<&Path>) -> Output {
    let mut cmd = Command::new(cvm_image());
    cmd.arg("build")
        .arg("--spec")
        .arg(spec)
        .arg("--out")
        .arg(out)
        .args(extra);
    if let Some(c) = cache {
        cmd.env("CVM_IMAGE_CACHE", c);
    }
    run(&mut cmd)
}

pub struct Built {
    pub out: PathBuf,
    pub manifest: Value,
}

impl Built {
    pub fn disk(&self) -> PathBuf {
        self.out.join("disk.raw")
    }

    pub fn partition(&self, name: &str) -> &Value {
        self.manifest["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no partition {name} in the manifest"))
    }

    /// Copy a partition's content bytes (not its padding) out of the disk with `dd`.
    pub fn extract_partition(&self, name: &str, dest: &Path, whole: bool) {
        let p = self.partition(name);
        let first = p["first_lba"].as_u64().unwrap();
        let bytes = if whole {
            p["size_bytes"].as_u64().unwrap()
        } else {
            p["content_bytes"].as_u64().unwrap()
        };
        assert_eq!(bytes % 512, 0);
        ok(Command::new("dd")
            .arg(format!("if={}", self.disk().display()))
            .arg(format!("of={}", dest.display()))
            .arg("bs=512")
            .arg(format!("skip={first}"))
            .arg(format!("count={}", bytes / 512))
            .arg("status=none"));
    }

    /// A private copy of the whole output directory in a fresh scratch directory `name`, to boot
    /// (a run writes run.json, console.log and ek-ca.pem beside the disk) or to modify.
    pub fn copy_to(&self, name: &str) -> PathBuf {
        let dir = scratch(name);
        ok(Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(self.out.join("."))
            .arg(&dir));
        dir
    }
}

/// The default image: the default spec built without options, shared by every test binary (see
/// [`shared_image`]).
pub fn default_image() -> &'static Built {
    shared_image(&[])
}

/// The build options of every deployment target (tests/targets.rs and the qcow2 boot share the image).
pub const ALL_TARGETS: [&str; 8] = [
    "--target", "gcp", "--target", "aws", "--target", "azure", "--target", "qemu",
];

/// The default spec built with `extra` build options, once per test run and reused by every test
/// binary of it (and by later runs while nothing it depends on changes): see [`shared`]. The
/// directory is shared: read it, never write into it — boot or modify a [`Built::copy_to`] copy.
pub fn shared_image(extra: &[&str]) -> &'static Built {
    shared::image(extra)
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(data))
}

/// How long `cvm-image run` may take to reach a healthy agent under TCG on a loaded 2-core machine.
pub const BOOT_TIMEOUT_SECS: &str = "400";

/// Downloads `url` to `dest` with curl (an independent HTTP client); panics on any error.
pub fn curl_to(url: &str, dest: &Path) {
    ok(Command::new("curl")
        .args(["-fsS", "--max-time", "20", "-o"])
        .arg(dest)
        .arg(url));
}

/// `cvm-image stop --grace 20 --out OUT`; a failed stop fails the test with its stderr.
pub fn stop_vm(out: &Path) {
    let stop = run(Command::new(cvm_image())
        .args(["stop", "--grace", "20", "--out"])
        .arg(out));
    assert!(
        stop.status.success(),
        "stop failed: {}",
        String::from_utf8_lossy(&stop.stderr)
    );
}

/// Boots `out` with `run --detach`, gives `with_agent` the agent's URL, then stops the VM — also
/// when `with_agent` panics, whose panic is raised again after the stop.
pub fn with_detached_vm<T>(out: &Path, with_agent: impl FnOnce(&str) -> T) -> T {
    let (state, _) = run_detached(out);
    let agent = state["agent_url"]
        .as_str()
        .expect("run.json names agent_url")
        .to_string();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| with_agent(&agent)));
    stop_vm(out);
    result.unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// The files a verifier reads, as a live agent served them.
pub struct Evidence {
    pub pcrs: PathBuf,
    pub eventlog: PathBuf,
    pub runtime: PathBuf,
}

/// `GET /pcrs`, `/eventlog` and `/eventlog/runtime` of `agent` into `dir`.
pub fn fetch_evidence(agent: &str, dir: &Path) -> Evidence {
    let e = Evidence {
        pcrs: dir.join("pcrs.json"),
        eventlog: dir.join("eventlog.bin"),
        runtime: dir.join("runtime-eventlog.jsonl"),
    };
    curl_to(&format!("{agent}/pcrs"), &e.pcrs);
    curl_to(&format!("{agent}/eventlog"), &e.eventlog);
    curl_to(&format!("{agent}/eventlog/runtime"), &e.runtime);
    e
}

/// The value `init` computes once per test binary (a boot); a failure is remembered, not retried,
/// and every caller panics with its message.
pub fn once<T: Send + Sync>(
    cell: &'static OnceLock<Result<T, String>>,
    init: impl FnOnce() -> T + std::panic::UnwindSafe,
) -> &'static T {
    cell.get_or_init(|| {
        std::panic::catch_unwind(init).map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into())
        })
    })
    .as_ref()
    .unwrap_or_else(|e| panic!("the boot failed: {e}"))
}

/// `cvm-image run --detach` of the default spec into `out` (built there before); asserts it came
/// up and returns its `run.json` and what it printed.
pub fn run_detached(out: &Path) -> (Value, String) {
    let o = run(Command::new(cvm_image())
        .args(["run", "--detach", "--timeout", BOOT_TIMEOUT_SECS])
        .arg("--spec")
        .arg(repo().join("image.toml"))
        .arg("--out")
        .arg(out));
    let console = std::fs::read_to_string(out.join("console.log")).unwrap_or_default();
    assert!(
        o.status.success(),
        "run --detach failed:\n{}\nconsole:\n{console}",
        String::from_utf8_lossy(&o.stderr)
    );
    let state = serde_json::from_slice(&std::fs::read(out.join("run.json")).expect("run.json"))
        .expect("run.json is JSON");
    (state, String::from_utf8_lossy(&o.stdout).into_owned())
}

/// What a spec directory holds besides the sources: the spec, its lock, the pinned reference boots and
/// the files the spec names.
pub const SPEC_ENTRIES: &[&str] = &[
    "image.toml",
    "cvm-image.lock",
    "reference",
    "workload",
    "rootfs",
    "esp",
    "kernel",
];

/// Copies the repository's spec directory entries into `dest` (created).
pub fn copy_spec(dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    for e in SPEC_ENTRIES {
        ok(Command::new("cp").arg("-a").arg(repo().join(e)).arg(dest));
    }
}

/// Copies what a build from source needs (the workspace — its members as Cargo.toml lists them —
/// and the spec directory) into `dest`.
pub fn copy_repo(dest: &Path) {
    copy_spec(dest);
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(repo().join("Cargo.toml")).unwrap()).unwrap();
    let members = manifest["workspace"]["members"].as_array().unwrap();
    let mut tops: Vec<&str> = members
        .iter()
        .map(|m| m.as_str().unwrap().split('/').next().unwrap())
        .collect();
    tops.extend(["Cargo.toml", "Cargo.lock"]);
    tops.sort();
    tops.dedup();
    for e in tops {
        if !dest.join(e).exists() {
            ok(Command::new("cp").arg("-a").arg(repo().join(e)).arg(dest));
        }
    }
}
