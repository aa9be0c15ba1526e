//! Shared helpers of the integration tests: one build of the default image per test binary, run
//! through the real `cvm-image` executable, and small wrappers over the independent tools that check it.
#![allow(dead_code)]

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
}

/// The default image, built once per test binary.
pub fn default_image() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = scratch("default-image");
        let o = build(&repo().join("image.toml"), &out, &[], None);
        assert!(
            o.status.success(),
            "default build failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
        Built { out, manifest }
    })
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(data))
}
