//! `cvm-image run --print-command`: the swtpm and QEMU command lines of a run, printed without
//! starting anything. No image build and no boot: the disk is an empty GPT with the partitions a
//! run checks for (made with sgdisk), the firmware the spec's pinned OVMF from the input cache.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// GPT partition types a run requires (ESP, root x86-64, root verity x86-64).
const PARTITIONS: [&str; 3] = [
    "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
    "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
    "2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5",
];

/// An output directory holding only `disk.raw`: 8 MiB, a GPT with the three partitions.
fn out_with_disk(name: &str) -> PathBuf {
    let out = scratch(name);
    let disk = out.join("disk.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let mut sgdisk = Command::new("sgdisk");
    for (i, ty) in PARTITIONS.iter().enumerate() {
        let n = i + 1;
        let first = 2048 * n;
        sgdisk
            .arg(format!("--new={n}:{first}:{}", first + 2047))
            .arg(format!("--typecode={n}:{ty}"));
    }
    ok(sgdisk.arg(&disk));
    out
}

fn print_command(out: &Path, extra: &[&str]) -> Output {
    run(Command::new(cvm_image())
        .current_dir(repo())
        .args(["run", "--print-command", "--out"])
        .arg(out)
        .args(extra))
}

/// Exit 2 (a usage or input error) with `needle` in stderr.
fn assert_usage_error(o: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(needle), "want {needle:?} in:\n{stderr}");
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The line of the script that runs `program`.
fn line_of<'a>(script: &'a str, program: &str) -> &'a str {
    script
        .lines()
        .find(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.ends_with(program))
        })
        .unwrap_or_else(|| panic!("no {program} line in:\n{script}"))
}

#[test]
fn print_command_shows_the_qemu_and_swtpm_lines_and_starts_nothing() {
    let out = out_with_disk("run-print-command");
    let o = print_command(&out, &[]);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{stderr}");

    let qemu = line_of(&stdout, "qemu-system-x86_64");
    for want in [
        // No default devices: no NIC with an iPXE ROM, no CD-ROM, no VGA.
        "-nodefaults",
        "-machine q35 ",
        "-m 1024 -smp 1",
        "-drive if=pflash,format=raw,unit=0,readonly=on,file=",
        "OVMF_CODE_4M.fd",
        "\"if=pflash,format=raw,unit=1,file=${RUN}/OVMF_VARS.fd\"",
        // The image is never written, and is the first boot option.
        &format!("snapshot=on,file={}", out.join("disk.raw").display()),
        "-device virtio-blk-pci,drive=disk0,bootindex=1",
        // No option ROM on the NIC.
        "-device virtio-net-pci,netdev=net0,romfile= ",
        "hostfwd=tcp:127.0.0.1:",
        "-device tpm-crb,tpmdev=tpm0",
        "-no-reboot",
    ] {
        assert!(qemu.contains(want), "missing {want:?} in\n{qemu}");
    }
    // The device order assigns the PCI slots OVMF's boot options (PCR 1) name.
    let at = |d: &str| qemu.find(d).unwrap_or_else(|| panic!("{d} in {qemu}"));
    assert!(at("virtio-blk-pci") < at("virtio-net-pci") && at("virtio-net-pci") < at("tpm-crb"));
    assert!(!qemu.contains("smm=on"), "{qemu}");

    let swtpm = line_of(&stdout, "swtpm");
    assert!(
        swtpm.contains("socket --tpm2 --terminate") && swtpm.ends_with(" &"),
        "{swtpm}"
    );
    let setup = line_of(&stdout, "swtpm_setup");
    assert!(setup.contains("--create-ek-cert"), "{setup}");
    assert!(stdout.contains("RUN=$(mktemp -d)"), "{stdout}");
    assert!(stdout.contains("nothing was started"), "{stdout}");

    // Nothing ran: no run record, console log, EK CA or QEMU log in OUT.
    assert_eq!(files(&out), ["disk.raw"], "{stderr}");
}

#[test]
fn print_command_with_secure_boot_and_errors_checked_as_for_a_run() {
    let out = out_with_disk("run-print-command-sb");
    // --secure-boot needs the enrolled variable store `build --keys` writes.
    assert_usage_error(
        &print_command(&out, &["--secure-boot"]),
        "OVMF_VARS.fd with the owner's keys",
    );
    std::fs::write(out.join("OVMF_VARS.fd"), b"stand-in").unwrap();
    let o = print_command(&out, &["--secure-boot", "--memory", "2048", "--cpus", "2"]);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let qemu = line_of(&stdout, "qemu-system-x86_64");
    for want in [
        "-machine q35,smm=on -global driver=cfi.pflash01,property=secure,value=on",
        "OVMF_CODE_4M.secboot.fd",
        "-m 2048 -smp 2",
    ] {
        assert!(qemu.contains(want), "missing {want:?} in\n{qemu}");
    }
    assert!(
        stdout.contains(&format!("cp {} ", out.join("OVMF_VARS.fd").display())),
        "{stdout}"
    );
    assert_eq!(files(&out), ["OVMF_VARS.fd", "disk.raw"]);

    // A missing disk is refused as a run refuses it; --detach makes no sense with it.
    let empty = scratch("run-print-command-empty");
    assert_usage_error(
        &print_command(&empty, &[]),
        "does not exist: build the image first",
    );
    assert_usage_error(&print_command(&out, &["--detach"]), "--detach");
}
