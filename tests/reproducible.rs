//! Reproducibility: the same spec built in another directory, later, with nothing cached but the
//! downloaded packages, gives the same bytes; changing only the workload leaves the base image alone.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn default_cache() -> PathBuf {
    if let Some(c) = std::env::var_os("CVM_IMAGE_CACHE") {
        return c.into();
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(x).join("cvm-image");
    }
    PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/cvm-image")
}

fn manifest(out: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap()
}

fn assert_built(o: &std::process::Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn two_builds_in_different_directories_are_byte_identical() {
    let first = default_image();
    // Different directory, later time, fresh stage cache: only the downloaded .debs are shared.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let dir = scratch("repro");
    let copy = dir.join("elsewhere/checkout");
    copy_repo(&copy);
    let cache = dir.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::os::unix::fs::symlink(default_cache().join("debs"), cache.join("debs")).unwrap();
    let out = dir.join("out");
    let o = build(&copy.join("image.toml"), &out, &[], Some(&cache));
    assert_built(&o, "second build");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !stderr.contains("reused cached result"),
        "the second build must not reuse stages:\n{stderr}"
    );
    for f in ["disk.raw", "uki.efi", "manifest.json"] {
        let (a, b) = (
            std::fs::read(first.out.join(f)).unwrap(),
            std::fs::read(out.join(f)).unwrap(),
        );
        assert!(a == b, "{f} differs between the two builds");
    }
}

#[test]
fn changing_only_the_workload_keeps_the_base_image() {
    let first = default_image();
    let dir = scratch("workload-change");
    let copy = dir.join("checkout");
    copy_repo(&copy);
    let greeting = copy.join("workload/config/greeting.txt");
    let mut text = std::fs::read_to_string(&greeting).unwrap();
    text.push_str("changed\n");
    std::fs::write(&greeting, text).unwrap();
    let out = dir.join("out");
    let started = std::time::Instant::now();
    let o = build(&copy.join("image.toml"), &out, &[], None);
    assert_built(&o, "workload-changed build");
    eprintln!(
        "rebuild with a changed workload took {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    for stage in ["root-squashfs-verity", "initramfs", "uki", "esp"] {
        assert!(
            stderr.contains(&format!("{stage}: reused cached result")),
            "{stage} was rebuilt:\n{stderr}"
        );
    }
    assert_eq!(
        std::fs::read(first.out.join("uki.efi")).unwrap(),
        std::fs::read(out.join("uki.efi")).unwrap()
    );
    let second = manifest(&out);
    let part = |m: &Value, name: &str| {
        m["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()
            .clone()
    };
    for same in ["root-x86-64", "root-x86-64-verity"] {
        assert_eq!(
            part(&first.manifest, same),
            part(&second, same),
            "{same} changed"
        );
    }
    // The ESP keeps its place, size, UUID and UKI; its bytes differ by the embedded golden file
    // (the new workload's prediction), which no PCR measures.
    let without_content = |mut p: Value| {
        p.as_object_mut().unwrap().remove("content_sha256");
        p
    };
    assert_eq!(
        without_content(part(&first.manifest, "esp")),
        without_content(part(&second, "esp")),
        "the ESP's partition entry changed"
    );
    let esp_file = |disk: &Path, path: &str| {
        let offset = part(&first.manifest, "esp")["first_lba"].as_u64().unwrap() * 512;
        let o = run(Command::new("mtype")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(format!("{}@@{offset}", disk.display()))
            .arg(path));
        assert!(o.status.success(), "mtype {path}: {o:?}");
        o.stdout
    };
    let (first_disk, second_disk) = (first.out.join("disk.raw"), out.join("disk.raw"));
    assert!(
        esp_file(&first_disk, "::/EFI/BOOT/BOOTX64.EFI")
            == esp_file(&second_disk, "::/EFI/BOOT/BOOTX64.EFI"),
        "the UKI in the ESP changed"
    );
    assert_eq!(
        esp_file(&second_disk, "::/cvm/golden-measurement.json"),
        std::fs::read(out.join("golden-measurement.json")).unwrap(),
        "the ESP does not carry the new prediction"
    );
    for changed in ["workload", "workload-verity"] {
        assert_ne!(
            part(&first.manifest, changed)["content_sha256"],
            part(&second, changed)["content_sha256"],
            "{changed} did not change"
        );
    }
    assert_ne!(
        first.manifest["measurements"]["pcr23"],
        second["measurements"]["pcr23"]
    );
    assert_eq!(
        first.manifest["measurements"]["pcr11"],
        second["measurements"]["pcr11"]
    );
}
