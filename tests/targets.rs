//! CSP/VMM artifacts: each holds exactly disk.raw, as independent readers (qemu-img, GNU tar) see it,
//! and a second build writes the same bytes.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

const ARTIFACTS: &[(&str, &str)] = &[
    ("aws-disk.vmdk", "vmdk"),
    ("azure-disk.vhd", "vpc"),
    ("disk.qcow2", "qcow2"),
];

/// A build of every target into a fresh scratch directory `name`.
fn build_all_targets(name: &str) -> std::path::PathBuf {
    let out = scratch(name);
    let o = build(&repo().join("image.toml"), &out, &ALL_TARGETS, None);
    assert!(
        o.status.success(),
        "build with all targets failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// The image of every target, shared with the other test binaries.
fn all_targets() -> &'static Path {
    &shared_image(&ALL_TARGETS).out
}

#[test]
fn disk_size_satisfies_every_target() {
    let len = std::fs::metadata(all_targets().join("disk.raw"))
        .unwrap()
        .len();
    assert_eq!(len % (1 << 30), 0, "GCP needs a whole GiB, got {len}");
    // The backup GPT sits at the real end of the resized disk.
    let out = ok(Command::new("sgdisk")
        .arg("-v")
        .arg(all_targets().join("disk.raw")));
    assert!(out.contains("No problems found"), "{out}");
}

#[test]
fn qemu_img_reads_each_artifact_as_disk_raw() {
    let out = all_targets();
    for (file, format) in ARTIFACTS {
        let info = ok(Command::new("qemu-img")
            .args(["info", "-f", format])
            .arg(out.join(file)));
        assert!(info.contains("virtual size: 1 GiB"), "{file}: {info}");
        if *format != "vpc" {
            // qemu-img 7.2 cannot check vpc images ("This image format does not support checks").
            ok(Command::new("qemu-img")
                .args(["check", "-f", format])
                .arg(out.join(file)));
        }
        let cmp = ok(Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", format])
            .arg(out.join("disk.raw"))
            .arg(out.join(file)));
        assert!(cmp.contains("Images are identical"), "{file}: {cmp}");
    }
    // Read the VMDK back with an independent reader, byte for byte.
    let back = scratch("vmdk-back").join("back.raw");
    ok(Command::new("qemu-img")
        .args(["convert", "-f", "vmdk", "-O", "raw"])
        .arg(out.join("aws-disk.vmdk"))
        .arg(&back));
    assert!(
        std::fs::read(&back).unwrap() == std::fs::read(out.join("disk.raw")).unwrap(),
        "VMDK read back differs"
    );
}

#[test]
fn gcp_tarball_holds_only_disk_raw() {
    let out = all_targets();
    let listing = ok(Command::new("tar")
        .arg("-tvzf")
        .arg(out.join("gcp-disk.tar.gz")));
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 1, "{listing}");
    assert!(
        lines[0].contains(" 0/0 ") && lines[0].ends_with(" disk.raw"),
        "{listing}"
    );
    assert!(lines[0].contains(" 1073741824 "), "{listing}");
    let extracted = scratch("gcp-extract");
    ok(Command::new("tar")
        .arg("-xzf")
        .arg(out.join("gcp-disk.tar.gz"))
        .arg("-C")
        .arg(&extracted));
    assert!(
        std::fs::read(extracted.join("disk.raw")).unwrap()
            == std::fs::read(out.join("disk.raw")).unwrap()
    );
}

#[test]
fn artifacts_are_reproducible_and_in_the_manifest() {
    let first = all_targets();
    let second = build_all_targets("targets-again");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(first.join("manifest.json")).unwrap()).unwrap();
    for name in [
        "gcp-disk.tar.gz",
        "aws-disk.vmdk",
        "azure-disk.vhd",
        "disk.qcow2",
    ] {
        let a = std::fs::read(first.join(name)).unwrap();
        assert!(
            a == std::fs::read(second.join(name)).unwrap(),
            "{name} differs between two builds"
        );
        let entry = manifest["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["path"] == name)
            .expect(name);
        assert_eq!(entry["sha256"].as_str().unwrap(), sha256_hex(&a), "{name}");
    }
}
