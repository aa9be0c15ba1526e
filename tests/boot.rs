//! Boots of the default image under QEMU (TCG) + OVMF + swtpm through the real `cvm-image run`.
//!
//! One shared build, four boots (one at a time: TCG is CPU-bound and the machines are shared):
//! * good: the agent becomes healthy, the workload's greeting comes through the forwarded port,
//!   `/pcrs` PCR 23 (and PCR 11) equal the manifest's predictions, the image file is unchanged, and
//!   `cvm-image stop` leaves no process behind;
//! * root squashfs corrupted (a byte of the agent binary's first data block): dm-verity error, the
//!   init's FATAL line, power-off, no agent;
//! * workload squashfs corrupted (a byte of the data holding `workload.toml`, which the init reads
//!   through verity to measure it): fails closed the same way — the read case, not the unread one;
//! * workload partition UUIDs altered: the init measures a different verity root hash into PCR 23
//!   (so PCR 23 differs from the prediction), then fails closed when verity rejects the partition.
//!
//! Plus argument checks without a boot: a missing or corrupt disk and missing qemu/swtpm give clear
//! errors. HTTP goes through curl, the disk surgery through sgdisk: tools independent of the builder.
//!
//! `CVM_BOOT_KERNEL_PROFILE=kernel/debian-6.1.toml` boots the default spec with another kernel profile.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

/// The init's fatal line (initrd/src/console.rs) and the kernel's messages we look for.
const INIT_FATAL: &str = "cvm-init: FATAL: ";
const VERITY_CORRUPTED: &str = "is corrupted";
const POWER_DOWN: &str = "reboot: Power down";
const AGENT_LINE: &str = "cvm-agent: ";

/// One boot at a time across the tests of this binary.
static BOOT_LOCK: Mutex<()> = Mutex::new(());

/// The image under test: the default spec (optionally with another kernel profile), shared with
/// the other test binaries.
fn image() -> &'static Built {
    match std::env::var("CVM_BOOT_KERNEL_PROFILE") {
        Ok(profile) => {
            let profile = repo().join(profile);
            shared_image(&["--kernel", profile.to_str().unwrap()])
        }
        Err(_) => default_image(),
    }
}

fn cvm(args: &[&str], out: &Path) -> Command {
    let mut c = Command::new(cvm_image());
    c.args(args).arg("--out").arg(out);
    c
}

/// `cvm-image run` with the repository's spec (for the pinned firmware).
fn run_cmd(out: &Path, extra: &[&str]) -> Command {
    let mut c = cvm(&["run"], out);
    c.arg("--spec")
        .arg(repo().join("image.toml"))
        .args(["--timeout", BOOT_TIMEOUT_SECS])
        .args(extra);
    c
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn curl(url: &str) -> String {
    ok(Command::new("curl").args(["-fsS", "--max-time", "20", url]))
}

/// A copy of the image's output directory (disk + manifest) to boot a modified disk from.
fn copy_image(name: &str) -> PathBuf {
    let dir = scratch(name);
    for f in ["disk.raw", "manifest.json"] {
        std::fs::copy(image().out.join(f), dir.join(f)).unwrap();
    }
    dir
}

/// XOR one byte of a file.
fn flip_byte(path: &Path, offset: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&[b[0] ^ 0xff]).unwrap();
}

/// Byte range (offset, length) inside a squashfs image of the compressed block holding the start of
/// `file`: its first data block, or its fragment block when the file is a tail-only fragment.
fn first_block_of(squashfs: &Path, file: &str) -> (u64, u64) {
    use backhand::{FilesystemReader, InnerNode, SquashfsFileReader};
    let reader = std::io::BufReader::new(std::fs::File::open(squashfs).unwrap());
    let fs = FilesystemReader::from_reader(reader).unwrap();
    let node = fs
        .files()
        .find(|n| n.fullpath == Path::new(file))
        .unwrap_or_else(|| panic!("{file} not in {}", squashfs.display()));
    let (blocks_start, frag_index, sizes) = match &node.inner {
        InnerNode::File(SquashfsFileReader::Basic(b)) => {
            (u64::from(b.blocks_start), b.frag_index, &b.block_sizes)
        }
        InnerNode::File(SquashfsFileReader::Extended(e)) => {
            (e.blocks_start, e.frag_index, &e.block_sizes)
        }
        _ => panic!("{file} is not a regular file"),
    };
    if let Some(first) = sizes.first() {
        return (blocks_start, u64::from(first.size()));
    }
    let frag = &fs.fragments.as_ref().expect("fragment table")[frag_index as usize];
    (frag.start, u64::from(frag.size.size()))
}

/// Disk offset of the middle of the compressed block that starts `file` in partition `part`.
fn offset_in_file(img: &Built, part: &str, file: &str) -> u64 {
    let dir = scratch(&format!("extract-{part}"));
    let sqfs = dir.join("fs.img");
    img.extract_partition(part, &sqfs, false);
    let (start, len) = first_block_of(&sqfs, file);
    assert!(len > 0, "{file}: empty block");
    img.partition(part)["first_lba"].as_u64().unwrap() * 512 + start + len / 2
}

/// Boots `out` in the foreground; the VM must stop by itself (fail closed). Returns (output, console).
fn boot_expecting_failure(out: &Path) -> (Output, String) {
    let _one = BOOT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let o = run(&mut run_cmd(out, &[]));
    let console = std::fs::read_to_string(out.join("console.log"))
        .unwrap_or_default()
        .replace('\r', "");
    (o, console)
}

fn assert_failed_closed(name: &str, o: &Output, console: &str) {
    let (_, stderr) = text(o);
    let ctx = || format!("{name}: stderr:\n{stderr}\nconsole:\n{console}");
    assert!(!o.status.success(), "{}", ctx());
    assert!(
        stderr.contains("stopped before the agent became healthy"),
        "{}",
        ctx()
    );
    assert!(
        stderr.contains(INIT_FATAL),
        "the error must quote the init's FATAL line: {}",
        ctx()
    );
    assert!(
        console.contains("device-mapper: verity") && console.contains(VERITY_CORRUPTED),
        "no verity error: {}",
        ctx()
    );
    assert!(
        console.lines().any(|l| l.starts_with(INIT_FATAL)),
        "no FATAL line: {}",
        ctx()
    );
    assert!(console.contains(POWER_DOWN), "no power-off: {}", ctx());
    assert!(!console.contains(AGENT_LINE), "the agent ran: {}", ctx());
    assert!(!console.contains("Kernel panic"), "{}", ctx());
    eprintln!(
        "{name}: {}",
        console.lines().find(|l| l.starts_with(INIT_FATAL)).unwrap()
    );
}

fn no_process_mentions(marker: &str) {
    let ps = ok(Command::new("ps").args(["-eo", "stat=,args="]));
    let live: Vec<&str> = ps
        .lines()
        .filter(|l| l.contains(marker) && !l.trim_start().starts_with('Z'))
        .collect();
    assert!(
        live.is_empty(),
        "processes left behind:\n{}",
        live.join("\n")
    );
}

#[test]
fn default_image_boots_to_a_healthy_agent_with_the_predicted_pcrs() {
    let img = image();
    let out = copy_image("boot-good");
    let state: Value;
    {
        let _one = BOOT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let o = run(&mut run_cmd(&out, &["--detach"]));
        let (stdout, stderr) = text(&o);
        let console = std::fs::read_to_string(out.join("console.log")).unwrap_or_default();
        assert!(
            o.status.success(),
            "run --detach failed:\nstderr:\n{stderr}\nconsole:\n{console}"
        );
        state = serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
        let agent = state["agent_url"].as_str().unwrap().to_string();
        let workload = state["workload_url"].as_str().unwrap().to_string();
        assert!(stdout.contains(&format!("agent    {agent}")), "{stdout}");
        assert!(stdout.contains(&format!("workload {workload}")), "{stdout}");

        let checks = std::panic::catch_unwind(|| {
            assert_eq!(
                curl(&format!("{agent}/health")).trim(),
                r#"{"status":"ok"}"#
            );

            let pcrs: Value = serde_json::from_str(&curl(&format!("{agent}/pcrs"))).unwrap();
            let predicted23 = img.manifest["measurements"]["pcr23"]["value"]
                .as_str()
                .unwrap();
            assert_eq!(
                pcrs["sha256"]["23"], predicted23,
                "PCR 23 from the TPM differs from the prediction"
            );
            let predicted11 = img.manifest["measurements"]["pcr11"]["value"]
                .as_str()
                .unwrap();
            assert_eq!(
                pcrs["sha256"]["11"], predicted11,
                "PCR 11 from the TPM differs from the prediction"
            );

            // The greeting through the forwarded workload port; the workload read its PCR 23 via 7999.
            let greeting_file =
                std::fs::read_to_string(repo().join("workload/config/greeting.txt")).unwrap();
            let hello: Value = serde_json::from_str(&curl(&workload)).unwrap();
            assert_eq!(
                hello["greeting"].as_str().unwrap().trim(),
                greeting_file.trim(),
                "{hello}"
            );
            assert_eq!(hello["pcr23"], predicted23, "{hello}");

            let wl: Value = serde_json::from_str(&curl(&format!("{agent}/workload"))).unwrap();
            assert_eq!(wl["services"][0]["name"], "hello", "{wl}");
            assert_eq!(wl["services"][0]["state"], "running", "{wl}");

            let runtime = curl(&format!("{agent}/eventlog/runtime"));
            assert_eq!(
                runtime.lines().count(),
                2,
                "two PCR 23 events expected:\n{runtime}"
            );
        });

        let stop = run(&mut cvm(&["stop", "--grace", "20"], &out));
        let (_, stop_err) = text(&stop);
        assert!(stop.status.success(), "stop failed: {stop_err}");
        eprintln!("good: {}", stop_err.trim());
        if let Err(e) = checks {
            eprintln!(
                "console:\n{}",
                std::fs::read_to_string(out.join("console.log")).unwrap_or_default()
            );
            std::panic::resume_unwind(e);
        }
    }
    // Nothing left: no QEMU or swtpm of this run, no state file, no run directory.
    let run_dir = state["run_dir"].as_str().unwrap();
    no_process_mentions(run_dir);
    assert!(!Path::new(run_dir).exists(), "{run_dir} left behind");
    assert!(!out.join("run.json").exists());

    // The image is never modified by a run (snapshot=on): the booted copy equals the built disk.
    assert_eq!(
        sha256_hex(&std::fs::read(out.join("disk.raw")).unwrap()),
        sha256_hex(&std::fs::read(img.disk()).unwrap()),
        "the run modified disk.raw"
    );

    let timing = cvm_image::qemu::boot_timing(&out.join("console.log")).unwrap();
    eprintln!("good: boot timing: {}", timing.summary());
    assert!(
        timing.firmware_secs.unwrap() > 0.0 && timing.kernel_secs > 0.0,
        "{timing:?}"
    );
    assert!(
        timing.initramfs_secs > 0.0 && timing.agent_secs >= 0.0,
        "{timing:?}"
    );
}

#[test]
fn corrupt_root_fails_closed() {
    let img = image();
    let out = copy_image("boot-corrupt-root");
    // A byte in the middle of the agent binary's first compressed block: exec reads it.
    let off = offset_in_file(img, "root-x86-64", "/usr/bin/cvm-agent");
    flip_byte(&out.join("disk.raw"), off);
    let (o, console) = boot_expecting_failure(&out);
    assert_failed_closed("corrupt root", &o, &console);
}

#[test]
fn corrupt_workload_fails_closed() {
    let img = image();
    let out = copy_image("boot-corrupt-workload");
    // workload.toml is read through verity by the init (to measure it) before anything runs:
    // a flipped byte in its block must stop the boot.
    let off = offset_in_file(img, "workload", "/workload.toml");
    flip_byte(&out.join("disk.raw"), off);
    let (o, console) = boot_expecting_failure(&out);
    assert_failed_closed("corrupt workload", &o, &console);
}

#[test]
fn altered_workload_uuids_change_pcr23_and_fail_closed() {
    let img = image();
    let out = copy_image("boot-workload-uuids");
    let number = |name: &str| img.partition(name)["number"].as_u64().unwrap();
    // Another "root hash": the first half of each UUID inverted (still valid GPT, CRCs by sgdisk).
    let alter = |name: &str| {
        let u = img.partition(name)["uuid"].as_str().unwrap().to_string();
        let flipped: String = u[..8]
            .chars()
            .map(|c| if c == 'f' { '0' } else { 'f' })
            .collect();
        format!("{flipped}{}", &u[8..])
    };
    let (data, hash) = (alter("workload"), alter("workload-verity"));
    ok(Command::new("sgdisk")
        .arg("-u")
        .arg(format!("{}:{data}", number("workload")))
        .arg("-u")
        .arg(format!("{}:{hash}", number("workload-verity")))
        .arg(out.join("disk.raw")));
    let (o, console) = boot_expecting_failure(&out);

    // The init measured the (wrong) root hash into PCR 23 before opening the partition: the digest
    // of that event differs from the predicted one, so PCR 23 differs from the prediction.
    let predicted = &img.manifest["measurements"]["pcr23"]["events"][0];
    assert_eq!(predicted["description"], "workload verity root hash");
    let measured = console
        .lines()
        .find(|l| l.contains("measured \"workload verity root hash\" into PCR 23"))
        .unwrap_or_else(|| panic!("no PCR 23 root-hash event on the console:\n{console}"));
    let new_root = format!("{}{}", data.replace('-', ""), hash.replace('-', ""));
    assert!(
        console.contains(&new_root),
        "the init did not use the altered UUIDs:\n{console}"
    );
    assert!(
        !measured.contains(predicted["digest"].as_str().unwrap()),
        "same PCR 23 event: {measured}"
    );
    // …and verity refuses the partition with the altered root hash: fail closed.
    let (_, stderr) = text(&o);
    assert!(
        !o.status.success() && stderr.contains(INIT_FATAL),
        "{stderr}\n{console}"
    );
    assert!(
        console.contains(POWER_DOWN) && !console.contains(AGENT_LINE),
        "{console}"
    );
    eprintln!("altered UUIDs: {measured}");
    eprintln!(
        "altered UUIDs: {}",
        console.lines().find(|l| l.starts_with(INIT_FATAL)).unwrap()
    );
}

#[test]
fn run_refuses_missing_or_corrupt_disks_and_missing_tools() {
    // Missing disk.
    let empty = scratch("run-missing");
    let o = run(&mut run_cmd(&empty, &[]));
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("disk.raw does not exist: build the image first"),
        "{err}"
    );

    // Corrupt disk: the GPT is gone.
    let corrupt = scratch("run-corrupt");
    std::fs::write(corrupt.join("disk.raw"), vec![0u8; 4 << 20]).unwrap();
    let o = run(&mut run_cmd(&corrupt, &[]));
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("is not a cvm-image disk (no valid GPT)"),
        "{err}"
    );

    // A GPT disk without our partitions.
    let foreign = scratch("run-foreign");
    let disk = foreign.join("disk.raw");
    std::fs::write(&disk, vec![0u8; 8 << 20]).unwrap();
    ok(Command::new("sgdisk")
        .args(["-n", "1:2048:4095", "-t", "1:8300"])
        .arg(&disk));
    let o = run(&mut run_cmd(&foreign, &[]));
    let (_, err) = text(&o);
    assert!(
        err.contains("is not a cvm-image disk: it has no EFI system partition"),
        "{err}"
    );

    // qemu, then swtpm, missing from PATH: an install hint. (The good image passes the disk check.)
    let bin = scratch("run-path");
    let o = run(run_cmd(&image().out, &[])
        .env("PATH", &bin)
        .env_remove("CVM_IMAGE_QEMU"));
    let (_, err) = text(&o);
    assert!(
        err.contains("qemu-system-x86_64 not found on PATH: install it with `make deps`"),
        "{err}"
    );
    assert!(err.contains("apt-get install qemu-system-x86"), "{err}");
    let qemu = ok(Command::new("sh").args(["-c", "command -v qemu-system-x86_64"]));
    std::os::unix::fs::symlink(qemu.trim(), bin.join("qemu-system-x86_64")).unwrap();
    let o = run(run_cmd(&image().out, &[])
        .env("PATH", &bin)
        .env_remove("CVM_IMAGE_SWTPM"));
    let (_, err) = text(&o);
    assert!(
        err.contains("swtpm not found on PATH") && err.contains("apt-get install swtpm"),
        "{err}"
    );

    // stop without a running VM.
    let o = run(&mut cvm(&["stop"], &empty));
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("no VM recorded in"), "{err}");
}

/// The qcow2 of `build --target …` boots under `cvm-image run --disk`, with every cloud target's
/// drivers in the image (absent hardware is skipped by the init), and reports the predicted PCRs.
#[test]
fn qcow2_with_every_target_boots_with_the_predicted_pcrs() {
    let built = shared_image(&ALL_TARGETS);
    let manifest = &built.manifest;
    let out = built.copy_to("boot-qcow2");
    let modules: Vec<&str> = manifest["initramfs"]["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    for m in ["/hv_storvsc.ko", "/ena.ko", "/gve.ko", "/nvme.ko"] {
        assert!(
            modules.iter().any(|p| p.contains(m)),
            "{m} missing from the initramfs: {modules:?}"
        );
    }
    let _one = BOOT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let qcow2 = out.join("disk.qcow2");
    let o = run(&mut run_cmd(
        &out,
        &["--detach", "--disk", qcow2.to_str().unwrap()],
    ));
    let console = std::fs::read_to_string(out.join("console.log")).unwrap_or_default();
    let (_, stderr) = text(&o);
    let result = std::panic::catch_unwind(|| {
        assert!(
            o.status.success(),
            "run --detach --disk disk.qcow2 failed:\n{stderr}\nconsole:\n{console}"
        );
        let state: Value =
            serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
        let agent = state["agent_url"].as_str().unwrap();
        let pcrs: Value = serde_json::from_str(&curl(&format!("{agent}/pcrs"))).unwrap();
        for pcr in ["11", "23"] {
            assert_eq!(
                pcrs["sha256"][pcr],
                manifest["measurements"][format!("pcr{pcr}")]["value"],
                "PCR {pcr}"
            );
        }
        // Hyper-V's VMBus is absent under QEMU: the init skips it (and the drivers that need it).
        assert!(
            console.contains("hv_vmbus.ko.xz: no such device here, skipped"),
            "{console}"
        );
    });
    ok(&mut cvm(&["stop"], &out));
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
