//! `GET /golden-measurement` and the ESP reader behind it, on disks made by the reference tools:
//! `mkfs.fat` + mtools (`mmd`, `mcopy`, `mdel`) for the FAT volume, `sgdisk` for the GPT, `dd` to
//! place the volume in its partition. The builder's own ESP is read back in tests/image.rs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use common::*;
use cvm_agent::golden::{load, routes_for, Embedded, GoldenSource};

/// 1 MiB: where sgdisk puts the first partition (LBA 2048).
const FIRST_PARTITION: u64 = 1 << 20;

fn tool(program: &str, args: &[&str]) -> String {
    run_tool(
        Command::new(program)
            .args(args)
            .env("MTOOLS_SKIP_CHECK", "1")
            .env("TZ", "UTC"),
    )
}

/// Pseudo-random, non-repeating bytes (no randomness: xorshift from `seed`).
fn payload(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A FAT volume of `mib` MiB made by `mkfs.fat` with `extra` arguments (e.g. `-F 32`).
fn mkfs(dir: &Path, mib: u64, extra: &[&str]) -> PathBuf {
    let img = dir.join("esp.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(mib << 20)
        .unwrap();
    let mut args = extra.to_vec();
    args.push(img.to_str().unwrap());
    tool("mkfs.fat", &args);
    img
}

fn mcopy(img: &Path, dir: &Path, name: &str, data: &[u8], dest: &str) {
    let src = dir.join(name);
    std::fs::write(&src, data).unwrap();
    tool(
        "mcopy",
        &["-i", img.to_str().unwrap(), src.to_str().unwrap(), dest],
    );
}

/// A GPT disk (sgdisk) whose partition 1, at 1 MiB, has type `type_code` and holds `volume`.
fn disk_with(dir: &Path, volume: &Path, type_code: &str) -> PathBuf {
    let disk = dir.join("disk.raw");
    let vol_len = std::fs::metadata(volume).unwrap().len();
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(FIRST_PARTITION + vol_len + (1 << 20))
        .unwrap();
    let last = (FIRST_PARTITION + vol_len) / 512 - 1;
    tool(
        "sgdisk",
        &[
            "-n",
            &format!("1:2048:{last}"),
            "-t",
            &format!("1:{type_code}"),
            disk.to_str().unwrap(),
        ],
    );
    tool(
        "dd",
        &[
            &format!("if={}", volume.display()),
            &format!("of={}", disk.display()),
            "bs=1M",
            "seek=1",
            "conv=notrunc",
            "status=none",
        ],
    );
    disk
}

const GOLDEN: &[u8] = b"{\n  \"format\": 1,\n  \"image\": {\"name\": \"t\"}\n}\n";
const SIG: &[u8] = b"{\n  \"format\": 1,\n  \"algorithm\": \"ecdsa-p256-sha256\",\n  \"key_id\": \"00\",\n  \"signature\": \"AA==\"\n}\n";

#[test]
fn reads_both_files_from_a_mkfs_fat32_esp_in_a_gpt_disk() {
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(dir.path(), 40, &["-F", "32"]);
    let i = img.to_str().unwrap();
    tool("mmd", &["-i", i, "::/EFI", "::/EFI/BOOT", "::/cvm"]);
    mcopy(
        &img,
        dir.path(),
        "boot",
        &payload(200_000, 1),
        "::/EFI/BOOT/BOOTX64.EFI",
    );
    mcopy(
        &img,
        dir.path(),
        "g",
        GOLDEN,
        "::/cvm/golden-measurement.json",
    );
    mcopy(
        &img,
        dir.path(),
        "s",
        SIG,
        "::/cvm/golden-measurement.json.sig",
    );
    let disk = disk_with(dir.path(), &img, "EF00");
    let got = load(&GoldenSource::Disk(disk)).unwrap().expect("embedded");
    assert_eq!(
        got,
        Embedded {
            golden: GOLDEN.to_vec(),
            signature: Some(SIG.to_vec()),
        }
    );
}

/// FAT16 (what mkfs.fat picks for a small volume), names in another case (FAT ignores case), a
/// multi-cluster file whose chain is fragmented, and no signature.
#[test]
fn fat16_other_case_fragmented_and_unsigned() {
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(dir.path(), 16, &["-F", "16", "-s", "1"]);
    let i = img.to_str().unwrap();
    tool("mmd", &["-i", i, "::/CVM"]);
    // A hole of 20 clusters before "b": the 300 kB golden file fills it, then continues after b.
    mcopy(&img, dir.path(), "a", &payload(10_000, 2), "::/a.bin");
    mcopy(&img, dir.path(), "b", &payload(5_000, 3), "::/b.bin");
    tool("mdel", &["-i", i, "::/a.bin"]);
    let big = payload(300_000, 4);
    mcopy(
        &img,
        dir.path(),
        "g",
        &big,
        "::/CVM/Golden-Measurement.JSON",
    );
    let disk = disk_with(dir.path(), &img, "EF00");
    // mtools agrees that the file is fragmented: mshowfat lists its cluster runs as "<a-b> <c-d>".
    let fat = tool("mshowfat", &["-i", i, "::/CVM/Golden-Measurement.JSON"]);
    assert_eq!(fat.matches('<').count(), 2, "not in two runs: {fat}");

    let got = load(&GoldenSource::Disk(disk)).unwrap().expect("embedded");
    assert!(got.golden == big, "fragmented file read back differs");
    assert_eq!(got.signature, None);
}

#[test]
fn no_golden_file_is_none_and_no_esp_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(dir.path(), 40, &["-F", "32"]);
    tool("mmd", &["-i", img.to_str().unwrap(), "::/cvm"]);
    let disk = disk_with(dir.path(), &img, "EF00");
    assert_eq!(load(&GoldenSource::Disk(disk)).unwrap(), None);

    let other = tempfile::tempdir().unwrap();
    let img = mkfs(other.path(), 40, &["-F", "32"]);
    let disk = disk_with(other.path(), &img, "8300");
    let err = format!("{:#}", load(&GoldenSource::Disk(disk)).unwrap_err());
    assert!(err.contains("no EFI System Partition"), "{err}");
}

/// Serves `routes_for(source)` on a fresh port; returns the port.
fn serve(source: GoldenSource) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            serve_api(listener, routes_for::<()>(source).with_state(()), false).await;
        });
    });
    port
}

#[test]
fn endpoint_serves_the_exact_bytes_or_a_json_404() {
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(dir.path(), 40, &["-F", "32"]);
    tool("mmd", &["-i", img.to_str().unwrap(), "::/cvm"]);
    mcopy(
        &img,
        dir.path(),
        "g",
        GOLDEN,
        "::/cvm/golden-measurement.json",
    );
    mcopy(
        &img,
        dir.path(),
        "s",
        SIG,
        "::/cvm/golden-measurement.json.sig",
    );
    let disk = disk_with(dir.path(), &img, "EF00");
    let port = serve(GoldenSource::Disk(disk.clone()));
    let r = request(port, "GET", "/golden-measurement");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(
        b64.decode(v["golden_b64"].as_str().unwrap()).unwrap(),
        GOLDEN
    );
    let golden: serde_json::Value = serde_json::from_slice(GOLDEN).unwrap();
    assert_eq!(v["golden"], golden);
    let sig: serde_json::Value = serde_json::from_slice(SIG).unwrap();
    assert_eq!(v["signature"], sig);
    assert_eq!(v["source"], "esp:/cvm/golden-measurement.json");
    // The answer is cached for the boot: it survives the disk going away.
    std::fs::remove_file(&disk).unwrap();
    assert_eq!(request(port, "GET", "/golden-measurement").json(), v);

    let empty = tempfile::tempdir().unwrap();
    let img = mkfs(empty.path(), 40, &["-F", "32"]);
    let port = serve(GoldenSource::Disk(disk_with(empty.path(), &img, "EF00")));
    let r = request(port, "GET", "/golden-measurement");
    assert_eq!(r.status, 404);
    let err = r.json()["error"].as_str().unwrap().to_string();
    assert!(err.contains("no embedded golden measurement"), "{err}");

    // An unreadable disk is a JSON 500 naming it (and is retried, not cached).
    let port = serve(GoldenSource::Disk(empty.path().join("missing.raw")));
    let r = request(port, "GET", "/golden-measurement");
    assert_eq!(r.status, 500);
    assert!(r.json()["error"].as_str().unwrap().contains("missing.raw"));
}
