//! Images built once per test run and shared by every integration-test binary.
//!
//! A build of the default spec takes minutes; each test binary used to build its own. Here a build
//! lands in `target/test-scratch/shared-images/INPUTS/VARIANT/`, where
//! * INPUTS is a hash of everything the build reads: the `cvm-image` executable itself, the spec
//!   directory (the spec, its lock, the pinned reference boots and every file the spec names) and
//!   the workspace the guest binaries are compiled from (its Cargo.toml and Cargo.lock and every file
//!   of every member crate). The downloaded inputs are pinned by hash in the lock, so they are
//!   covered by it. A change to any of these gives another directory: a stale image is never used.
//! * VARIANT is a hash of the build options (`--kernel …`, `--target …`).
//!
//! Two test binaries may start at once (two `cargo test` runs): the first takes the variant's build
//! lock and builds into `VARIANT.partial-PID`, renamed to `VARIANT` only when complete; the other
//! waits on the lock and then finds the finished directory. A process holds a shared lock on
//! `INPUTS.use` while it uses images of INPUTS, so pruning the images of older inputs (done after
//! each new build) never removes one in use.
//!
//! The stage cache of the builder (~/.cache/cvm-image) is filled by the build that made the shared
//! image; tests that expect cached stages (reproducible.rs) rely on it, as they did when each binary
//! built its own image.

use super::{build, cvm_image, repo, Built, SPEC_ENTRIES};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Bumped when the layout of a shared image directory changes.
const LAYOUT: &str = "cvm-image shared test image v1";
/// Hex digits of a hash kept in a directory name.
const NAME_DIGITS: usize = 16;

/// The images of this process, by build options (each built or found once).
static IMAGES: Mutex<BTreeMap<Vec<String>, &'static Built>> = Mutex::new(BTreeMap::new());

/// The default spec built with `extra`, shared with every other test binary.
pub fn image(extra: &[&str]) -> &'static Built {
    let options: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let mut images = IMAGES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(built) = images.get(&options) {
        return built;
    }
    let built: &'static Built = Box::leak(Box::new(find_or_build(extra)));
    images.insert(options, built);
    built
}

fn root() -> PathBuf {
    repo().join("target/test-scratch/shared-images")
}

/// The INPUTS hash and this process's shared lock on `INPUTS.use` (held until the process exits).
fn inputs() -> &'static str {
    static INPUTS: OnceLock<(String, File)> = OnceLock::new();
    &INPUTS
        .get_or_init(|| {
            let key = inputs_hash();
            std::fs::create_dir_all(root()).unwrap();
            let use_lock = lock_file(&root().join(format!("{key}.use")));
            use_lock
                .lock_shared()
                .unwrap_or_else(|e| panic!("locking the shared images of {key}: {e}"));
            (key, use_lock)
        })
        .0
}

fn find_or_build(extra: &[&str]) -> Built {
    let key = inputs();
    let dir = root().join(key);
    let variant = variant_name(extra);
    let done = dir.join(&variant);
    if !done.is_dir() {
        std::fs::create_dir_all(&dir).unwrap();
        let build_lock = lock_file(&dir.join(format!("{variant}.lock")));
        build_lock
            .lock()
            .unwrap_or_else(|e| panic!("locking the build of {}: {e}", done.display()));
        // Another binary may have finished it while this one waited for the lock.
        if !done.is_dir() {
            build_into(&dir, &variant, extra);
            prune_other_inputs(key);
            return Built::load(&done);
        }
    }
    say(&format!(
        "reusing the shared image {} (options {extra:?})",
        done.display()
    ));
    Built::load(&done)
}

/// Builds into `VARIANT.partial-PID` and renames it to `VARIANT` when the build succeeded. Called
/// with the variant's build lock held, so no other process is building it.
fn build_into(dir: &Path, variant: &str, extra: &[&str]) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{variant}.partial-")) {
            // Left by a build that was interrupted.
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let partial = dir.join(format!("{variant}.partial-{}", std::process::id()));
    say(&format!(
        "building the shared image {} (with {extra:?})",
        partial.display()
    ));
    let started = std::time::Instant::now();
    let o = build(&repo().join("image.toml"), &partial, extra, None);
    assert!(
        o.status.success(),
        "build of the shared image (options {extra:?}) failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::rename(&partial, dir.join(variant)).unwrap();
    say(&format!(
        "built the shared image in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
}

/// Removes the images of other inputs that no process uses (their `.use` lock is free).
fn prune_other_inputs(current: &str) {
    let Ok(entries) = std::fs::read_dir(root()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == current || !e.path().is_dir() {
            continue;
        }
        let lock = lock_file(&root().join(format!("{name}.use")));
        if lock.try_lock().is_ok() {
            // The `.use` file stays: a process waiting on it then finds no directory and builds.
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn lock_file(path: &Path) -> File {
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
}

/// Straight to the process's stderr, past the test harness's capture: which image a binary used
/// belongs in every run's output.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "tests: {line}");
}

fn variant_name(extra: &[&str]) -> String {
    let mut h = Sha256::new();
    for a in extra {
        h.update(a.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())[..NAME_DIGITS].to_string()
}

/// The hash of everything a build of the default spec reads (module docs).
fn inputs_hash() -> String {
    let repo = repo();
    let mut files = BTreeSet::new();
    let mut tops: Vec<String> = SPEC_ENTRIES.iter().map(|s| s.to_string()).collect();
    tops.extend(["Cargo.toml".into(), "Cargo.lock".into()]);
    tops.extend(workspace_members(&repo));
    for top in &tops {
        collect(&repo, &repo.join(top), &mut files);
    }
    let mut h = Sha256::new();
    h.update(LAYOUT.as_bytes());
    hash_file(&mut h, "cvm-image", &cvm_image());
    for rel in &files {
        hash_file(&mut h, rel, &repo.join(rel));
    }
    hex::encode(h.finalize())[..NAME_DIGITS].to_string()
}

fn workspace_members(repo: &Path) -> Vec<String> {
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(repo.join("Cargo.toml")).unwrap()).unwrap();
    manifest["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect()
}

/// Every file under `path` (or `path` itself), relative to `repo`; build output directories
/// (`target`) are not inputs.
fn collect(repo: &Path, path: &Path, files: &mut BTreeSet<String>) {
    let meta =
        std::fs::metadata(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    if meta.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            let e = e.unwrap();
            if e.file_name() != "target" {
                collect(repo, &e.path(), files);
            }
        }
    } else {
        let rel = path.strip_prefix(repo).unwrap();
        files.insert(rel.to_string_lossy().into_owned());
    }
}

/// Name, length and content, so that no two file lists hash alike.
fn hash_file(h: &mut Sha256, name: &str, path: &Path) {
    let data =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    h.update(name.as_bytes());
    h.update([0]);
    h.update((data.len() as u64).to_le_bytes());
    h.update(&data);
}

impl Built {
    /// A finished build output directory and its manifest.
    pub fn load(out: &Path) -> Built {
        let manifest: Value = serde_json::from_slice(
            &std::fs::read(out.join("manifest.json"))
                .unwrap_or_else(|e| panic!("{}/manifest.json: {e}", out.display())),
        )
        .unwrap();
        Built {
            out: out.to_path_buf(),
            manifest,
        }
    }
}
