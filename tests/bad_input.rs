//! Bad input of every kind gets a clear error (exit code 2) naming the culprit, and leaves no file under
//! a final output name.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A spec directory next to the repository's sources, with `edit` applied to one of its files.
fn spec_copy(name: &str, file: &str, edit: impl Fn(String) -> String) -> PathBuf {
    let dir = scratch(name);
    copy_spec(&dir);
    let p = dir.join(file);
    let text = std::fs::read_to_string(&p).unwrap();
    let edited = edit(text.clone());
    assert_ne!(text, edited, "the edit of {file} changed nothing");
    std::fs::write(&p, edited).unwrap();
    dir
}

/// Build and expect failure: exit code 2, every `needles` in stderr, nothing under the final names.
fn expect_failure(dir: &Path, needles: &[&str]) -> String {
    let out = dir.join("out");
    let o = Command::new(cvm_image())
        .arg("build")
        .arg("--spec")
        .arg(dir.join("image.toml"))
        .arg("--out")
        .arg(&out)
        .env("CVM_IMAGE_WORKSPACE", repo())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "expected exit code 2:\n{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "error message lacks {n:?}:\n{stderr}");
    }
    for f in ["disk.raw", "uki.efi", "manifest.json"] {
        assert!(
            !out.join(f).exists(),
            "{f} left behind after a failed build"
        );
    }
    if out.exists() {
        let left: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            left.is_empty(),
            "files left in the output directory: {left:?}"
        );
    }
    stderr
}

#[test]
fn missing_file_is_named() {
    let dir = spec_copy("missing-file", "image.toml", |t| {
        t.replace("esp/os-release", "esp/no-such-os-release")
    });
    expect_failure(
        &dir,
        &["[uki] os_release", "no-such-os-release", "image.toml"],
    );
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let dir = spec_copy("unknown-key", "image.toml", |t| {
        t.replace("[rootfs]\n", "[rootfs]\nsize = 1\n")
    });
    let line = std::fs::read_to_string(dir.join("image.toml"))
        .unwrap()
        .lines()
        .position(|l| l == "size = 1")
        .unwrap()
        + 1;
    expect_failure(&dir, &["image.toml", "size", &format!("line {line}")]);
}

#[test]
fn partition_too_small_says_how_much_is_needed() {
    let dir = spec_copy("too-small", "image.toml", |t| {
        t.replace("root = \"fit\"", "root = \"4KiB\"")
    });
    expect_failure(&dir, &["[partitions] root", "needs", "\"fit\""]);
}

#[test]
fn corrupt_stub_is_refused() {
    // The ELF build of the stub sits in the same package: a real file that is not a PE image.
    let dir = spec_copy("corrupt-stub", "image.toml", |t| {
        t.replace("linuxx64.efi.stub", "linuxx64.elf.stub")
    });
    expect_failure(&dir, &["systemd-stub", "linuxx64.elf.stub"]);
}

#[test]
fn hash_mismatch_is_refused() {
    let dir = spec_copy("hash-mismatch", "cvm-image.lock", |t| {
        let mut out = String::new();
        let mut in_stub = false;
        for line in t.lines() {
            if line.starts_with("name = ") {
                in_stub = line.contains("\"systemd-boot-efi\"");
            }
            if in_stub && line.starts_with("sha256 = ") {
                out.push_str(&format!("sha256 = \"{}\"\n", "0".repeat(64)));
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    });
    expect_failure(&dir, &["systemd-boot-efi", "sha256", "0000000000000000"]);
}

#[test]
fn vanished_version_names_the_relock_command() {
    let dir = spec_copy("vanished", "cvm-image.lock", |t| {
        let mut out = String::new();
        let mut in_stub = false;
        for line in t.lines() {
            if line.starts_with("name = ") {
                in_stub = line.contains("\"systemd-boot-efi\"");
            }
            // A version the mirror no longer has (with its own hash, so no cached .deb can stand in).
            if in_stub && line.starts_with("version = ") {
                out.push_str("version = \"0.0.1-gone\"\n");
            } else if in_stub && line.starts_with("sha256 = ") {
                out.push_str(&format!("sha256 = \"{}\"\n", "1".repeat(64)));
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    });
    expect_failure(&dir, &["systemd-boot-efi", "cvm-image lock"]);
}
