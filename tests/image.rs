//! The default image, checked with independent tools: veritysetup, unsquashfs, fsck.fat, sgdisk, cpio,
//! objdump and systemd-measure.

mod common;
use common::*;
use std::process::Command;

#[test]
fn gpt_is_valid_for_sgdisk() {
    let img = default_image();
    let out = ok(Command::new("sgdisk").arg("-v").arg(img.disk()));
    assert!(out.contains("No problems found"), "sgdisk -v:\n{out}");
    // sgdisk prints our partition GUIDs and types.
    for (n, name) in [
        "esp",
        "root-x86-64",
        "root-x86-64-verity",
        "workload",
        "workload-verity",
    ]
    .iter()
    .enumerate()
    {
        let p = img.partition(name);
        let info = ok(Command::new("sgdisk")
            .arg("-i")
            .arg((n + 1).to_string())
            .arg(img.disk()));
        let uuid = p["uuid"].as_str().unwrap().to_uppercase();
        let ty = p["type_guid"].as_str().unwrap().to_uppercase();
        assert!(
            info.contains(&format!("Partition unique GUID: {uuid}")),
            "{name}: {info}"
        );
        assert!(
            info.contains(&format!("Partition GUID code: {ty}")),
            "{name}: {info}"
        );
        assert!(
            info.contains(&format!("First sector: {} ", p["first_lba"])),
            "{name}: {info}"
        );
    }
}

#[test]
fn verity_pairs_verify_and_detect_corruption() {
    let img = default_image();
    let dir = scratch("verity");
    for (data, hash, key) in [
        ("root-x86-64", "root-x86-64-verity", "root"),
        ("workload", "workload-verity", "workload"),
    ] {
        let root_hash = img.manifest["verity"][key]["root_hash"]
            .as_str()
            .unwrap()
            .to_string();
        // The pair's partition UUIDs carry the root hash (systemd-repart convention).
        let uuids = format!(
            "{}{}",
            img.partition(data)["uuid"]
                .as_str()
                .unwrap()
                .replace('-', ""),
            img.partition(hash)["uuid"]
                .as_str()
                .unwrap()
                .replace('-', "")
        );
        assert_eq!(
            uuids, root_hash,
            "{key}: partition UUIDs do not carry the root hash"
        );
        let (d, h) = (
            dir.join(format!("{key}.data")),
            dir.join(format!("{key}.hash")),
        );
        img.extract_partition(data, &d, false);
        img.extract_partition(hash, &h, false);
        ok(Command::new("veritysetup")
            .arg("verify")
            .arg(&d)
            .arg(&h)
            .arg(&root_hash));

        // One flipped byte in the data must make verification fail.
        let mut bytes = std::fs::read(&d).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x01;
        std::fs::write(&d, &bytes).unwrap();
        let o = run(Command::new("veritysetup")
            .arg("verify")
            .arg(&d)
            .arg(&h)
            .arg(&root_hash));
        assert!(
            !o.status.success(),
            "{key}: veritysetup verify accepted corrupted data"
        );
    }
}

#[test]
fn root_squashfs_lists_fixed_owners_modes_and_times() {
    let img = default_image();
    let dir = scratch("unsquashfs");
    let data = dir.join("root.img");
    img.extract_partition("root-x86-64", &data, false);
    let listing = ok(Command::new("unsquashfs")
        .arg("-lln")
        .arg("-UTC")
        .arg(&data));
    let epoch = img.manifest["image"]["source_date_epoch"].as_u64().unwrap();
    // unsquashfs -lln -UTC prints "YYYY-MM-DD HH:MM" of every inode: all must be SOURCE_DATE_EPOCH.
    let date = ok(Command::new("date")
        .arg("-u")
        .arg("-d")
        .arg(format!("@{epoch}"))
        .arg("+%Y-%m-%d %H:%M"));
    let date = date.trim();
    let mut paths = vec![];
    for line in listing.lines().filter(|l| l.contains("squashfs-root")) {
        assert!(line.contains(" 0/0 "), "owner not 0/0: {line}");
        assert!(line.contains(date), "mtime not {date}: {line}");
        paths.push(line.split_whitespace().nth(5).unwrap().to_string());
    }
    for want in [
        "squashfs-root/usr/bin/cvm-agent",
        "squashfs-root/etc/os-release",
        "squashfs-root/workload",
    ] {
        assert!(
            paths.iter().any(|p| p == want),
            "{want} missing from:\n{listing}"
        );
    }
    let agent = listing
        .lines()
        .find(|l| l.ends_with("/usr/bin/cvm-agent"))
        .unwrap();
    assert!(agent.starts_with("-rwxr-xr-x"), "{agent}");
    // Nothing from the build host: only our overlay, the agent and mount points.
    for line in &paths {
        let rel = line.trim_start_matches("squashfs-root");
        let allowed = [
            "",
            "/dev",
            "/proc",
            "/sys",
            "/run",
            "/tmp",
            "/workload",
            "/usr",
            "/usr/bin",
            "/usr/bin/cvm-agent",
        ];
        let from_overlay = repo()
            .join("rootfs")
            .join(rel.trim_start_matches('/'))
            .exists();
        assert!(
            allowed.contains(&rel) || from_overlay,
            "unexpected {rel} in the root"
        );
    }
}

#[test]
fn esp_is_clean_for_fsck_and_holds_the_uki() {
    let img = default_image();
    let dir = scratch("esp");
    let esp = dir.join("esp.img");
    img.extract_partition("esp", &esp, true);
    let out = ok(Command::new("fsck.fat").arg("-n").arg(&esp));
    assert!(
        !out.contains("differ") && !out.to_lowercase().contains("warning"),
        "fsck.fat -n:\n{out}"
    );
    let uki = dir.join("BOOTX64.EFI");
    ok(Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(&esp)
        .arg("::/EFI/BOOT/BOOTX64.EFI")
        .arg(&uki));
    assert_eq!(
        std::fs::read(&uki).unwrap(),
        std::fs::read(img.out.join("uki.efi")).unwrap()
    );
}

/// The ESP carries the golden measurement (`\cvm\golden-measurement.json`) byte for byte as
/// out/ has it, and embedding it changed nothing measured: the GPT bytes the prediction's PCR 5
/// event holds are the final disk's, and the ESP's UKI is out/uki.efi (PCR 4). An unsigned build
/// embeds no signature. The guest agent's reader finds the same bytes through the disk's GPT.
#[test]
fn esp_embeds_the_golden_measurement_without_changing_the_measured_bytes() {
    let img = default_image();
    let dir = scratch("esp-golden");
    let esp = dir.join("esp.img");
    img.extract_partition("esp", &esp, true);
    let golden = std::fs::read(img.out.join("golden-measurement.json")).unwrap();
    let mtype = |path: &str| {
        run(Command::new("mtype")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&esp)
            .arg(path))
    };
    let embedded = mtype("::/cvm/golden-measurement.json");
    assert!(embedded.status.success(), "{embedded:?}");
    assert!(
        embedded.stdout == golden,
        "the embedded golden file differs from out/"
    );
    assert!(
        !mtype("::/cvm/golden-measurement.json.sig").status.success(),
        "an unsigned build embedded a signature"
    );
    assert!(!img.out.join("golden-measurement.json.sig").exists());

    // PCR 5: the predicted EV_EFI_GPT_EVENT is the final disk's header (LBA 1, 92 bytes), the
    // count of used entries, and those entries (from LBA 2), read here straight off the disk.
    let g: serde_json::Value = serde_json::from_slice(&golden).unwrap();
    let events = g["profiles"]["qemu"]["pcrs"]["sha256"]["5"]["events"]
        .as_array()
        .unwrap();
    let gpt_event = events
        .iter()
        .find(|e| e["type"] == "EV_EFI_GPT_EVENT")
        .expect("a GPT event");
    let data = hex::decode(gpt_event["data"].as_str().unwrap()).unwrap();
    let disk = std::fs::read(img.disk()).unwrap();
    let parts = img.manifest["partitions"].as_array().unwrap().len();
    let mut expected = disk[512..512 + 92].to_vec();
    expected.extend_from_slice(&(parts as u64).to_le_bytes());
    expected.extend_from_slice(&disk[1024..1024 + parts * 128]);
    assert!(
        data == expected,
        "PCR 5's predicted GPT bytes are not the disk's"
    );

    let read = cvm_agent::golden::load(&cvm_agent::golden::GoldenSource::Disk(img.disk()))
        .unwrap()
        .expect("the agent finds the embedded golden file");
    assert!(read.golden == golden && read.signature.is_none());
}

/// Dump a UKI section with objcopy (an independent PE reader).
fn dump_section(uki: &std::path::Path, name: &str, dest: &std::path::Path) -> Vec<u8> {
    ok(Command::new("objcopy")
        .arg("-O")
        .arg("binary")
        .arg("--only-section")
        .arg(name)
        .arg(uki)
        .arg(dest));
    std::fs::read(dest).unwrap()
}

#[test]
fn uki_sections_show_in_objdump() {
    let img = default_image();
    let out = ok(Command::new("objdump")
        .arg("-h")
        .arg(img.out.join("uki.efi")));
    for s in [
        ".osrel", ".cmdline", ".initrd", ".linux", ".sdmagic", ".text",
    ] {
        assert!(
            out.lines().any(|l| l.split_whitespace().nth(1) == Some(s)),
            "{s} missing:\n{out}"
        );
    }
    let dir = scratch("objdump");
    let cmdline = dump_section(&img.out.join("uki.efi"), ".cmdline", &dir.join("cmdline"));
    assert_eq!(
        String::from_utf8_lossy(&cmdline).trim_end_matches('\0'),
        img.manifest["kernel"]["cmdline"].as_str().unwrap()
    );
}

#[test]
fn initramfs_lists_init_modules_and_boot_config() {
    let img = default_image();
    let dir = scratch("cpio");
    let initrd = dump_section(&img.out.join("uki.efi"), ".initrd", &dir.join("initrd.zst"));
    assert_eq!(
        sha256_hex(&initrd),
        img.manifest["initramfs"]["sha256"].as_str().unwrap()
    );
    ok(Command::new("zstd")
        .arg("-d")
        .arg("-q")
        .arg("-f")
        .arg(dir.join("initrd.zst"))
        .arg("-o")
        .arg(dir.join("initrd.cpio")));
    let listing = ok(Command::new("cpio")
        .arg("-itv")
        .arg("-F")
        .arg(dir.join("initrd.cpio")));
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.split_whitespace().last().unwrap())
        .collect();
    assert!(names.contains(&"init"), "{listing}");
    assert!(names.contains(&"etc/cvm/boot.json"), "{listing}");
    for m in img.manifest["initramfs"]["modules"].as_array().unwrap() {
        assert!(
            names.contains(&m.as_str().unwrap()),
            "module {m} missing:\n{listing}"
        );
    }
    assert!(names.iter().any(|n| n.contains("dm-verity")), "{listing}");
    // Boot config carries the ROOT hash only.
    ok(Command::new("cpio")
        .current_dir(&dir)
        .arg("-idm")
        .arg("-F")
        .arg(dir.join("initrd.cpio"))
        .arg("etc/cvm/boot.json"));
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("etc/cvm/boot.json")).unwrap()).unwrap();
    assert_eq!(
        cfg["root"]["root_hash"],
        img.manifest["verity"]["root"]["root_hash"]
    );
    let text = serde_json::to_string(&cfg).unwrap();
    let wl = img.manifest["verity"]["workload"]["root_hash"]
        .as_str()
        .unwrap();
    assert!(
        !text.contains(wl),
        "the initramfs must not depend on the workload"
    );
}

#[test]
fn pcr11_agrees_with_systemd_measure() {
    let img = default_image();
    let dir = scratch("measure");
    let uki = img.out.join("uki.efi");
    let mut cmd = Command::new("/lib/systemd/systemd-measure");
    cmd.arg("calculate").arg("--bank=sha256");
    // systemd-measure wants the parts as files: take them out of our UKI with objcopy.
    for (flag, section) in [
        ("linux", ".linux"),
        ("osrel", ".osrel"),
        ("cmdline", ".cmdline"),
        ("initrd", ".initrd"),
    ] {
        let path = dir.join(flag);
        dump_section(&uki, section, &path);
        cmd.arg(format!("--{flag}={}", path.display()));
    }
    let out = ok(&mut cmd);
    // systemd-measure 252 prints phase values only; the first phase is the stub's PCR 11 extended
    // once more with sha256("enter-initrd").
    let first = out
        .lines()
        .find_map(|l| {
            l.split_once("11:sha256=")
                .map(|(_, v)| v.trim().to_string())
        })
        .or_else(|| {
            out.lines()
                .find_map(|l| l.trim().strip_prefix("11:sha256=").map(str::to_string))
        })
        .unwrap_or_else(|| panic!("no PCR 11 value in systemd-measure output:\n{out}"));
    let ours = hex::decode(
        img.manifest["measurements"]["pcr11"]["value"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let mut data = ours.clone();
    data.extend_from_slice(&hex::decode(sha256_hex(b"enter-initrd")).unwrap());
    assert_eq!(
        first.to_lowercase(),
        sha256_hex(&data),
        "systemd-measure output:\n{out}"
    );
}

#[test]
fn the_6_1_kernel_builds_too() {
    let profile = repo().join("kernel/debian-6.1.toml");
    let built = shared_image(&["--kernel", profile.to_str().unwrap()]);
    let (out, m) = (&built.out, &built.manifest);
    assert_eq!(m["kernel"]["release"], "6.1.0-56-amd64");
    // On 6.1 the virtio transport is modular: the closure must carry it.
    let modules = m["initramfs"]["modules"].as_array().unwrap();
    for needed in [
        "virtio_pci.ko",
        "virtio_blk.ko",
        "dm-verity.ko",
        "virtio.ko",
    ] {
        assert!(
            modules
                .iter()
                .any(|p| p.as_str().unwrap().ends_with(&format!("/{needed}"))),
            "{needed} missing: {modules:?}"
        );
    }
    ok(Command::new("sgdisk").arg("-v").arg(out.join("disk.raw")));
    // The base image differs from the 6.12 one, the workload does not.
    let default = default_image();
    assert_ne!(m["uki"]["sha256"], default.manifest["uki"]["sha256"]);
    assert_eq!(
        m["verity"]["workload"],
        default.manifest["verity"]["workload"]
    );
}
