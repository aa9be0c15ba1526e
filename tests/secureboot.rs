//! Secure Boot end to end through the real `cvm-image` executable:
//! * `keys generate` writes the owner's keys and refuses to overwrite them;
//! * `build --keys` signs the UKI (sbverify accepts it with db.crt, rejects it with another
//!   owner's db.crt), puts the signed UKI on the ESP, writes OVMF_VARS.fd and secure-boot/, lists
//!   the certificates' sha256 (never keys) in the manifest, and is reproducible: a second build
//!   that signs again gives the same disk.raw;
//! * `build --golden-key` (same build) signs the golden measurement and embeds both files on the
//!   ESP beside the signed UKI, byte-identical to out/, with the ESP still `fsck.fat` clean and
//!   the signature accepted by `openssl dgst`;
//! * `run --secure-boot` boots it with the enrolled store under the SMM firmware: the agent
//!   becomes healthy and `/pcrs` PCR 7 equals the manifest's Secure Boot prediction (PCR 11 and 23
//!   as well);
//! * the same disk with one byte of the UKI changed on the ESP is refused by the firmware
//!   ("Access Denied" / "Security Violation" on the console, no kernel, `run` fails).
//!
//! Independent checks: sbverify for signatures, openssl for certificates, curl for the agent.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Seconds to wait for a boot that the firmware must refuse.
const REFUSED_TIMEOUT_SECS: &str = "120";
/// What edk2 prints when image verification fails (BDS: "Access Denied"; the boot manager's
/// load failure "Security Violation").
const REFUSALS: [&str; 2] = ["Access Denied", "Security Violation"];
/// base64 of the AWS blob's magic "AMZNUEFI": its first 10 characters encode 60 bits of the
/// 8-byte magic and do not depend on what follows.
const AMZNUEFI_BASE64: &str = "QU1aTlVFRk";
/// The kernel's first line: must not appear when the UKI is refused.
const KERNEL_BANNER: &str = "Linux version";

struct SbImage {
    keys: PathBuf,
    other_keys: PathBuf,
    built: Built,
}

fn cvm(args: &[&str]) -> Command {
    let mut c = Command::new(cvm_image());
    c.args(args);
    c
}

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn generate_keys(dir: &Path) {
    ok(&mut cvm(&[
        "keys",
        "generate",
        "--dir",
        dir.to_str().unwrap(),
    ]));
}

fn manifest_of(out: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap()
}

fn build_with_keys(out: &Path, keys: &Path) -> Built {
    let o = build(
        &repo().join("image.toml"),
        out,
        &[
            "--keys",
            keys.to_str().unwrap(),
            "--golden-key",
            keys.join("golden.key").to_str().unwrap(),
        ],
        None,
    );
    assert!(
        o.status.success(),
        "build --keys --golden-key failed:\n{}",
        text(&o)
    );
    Built {
        out: out.to_path_buf(),
        manifest: manifest_of(out),
    }
}

/// Keys, a second owner's keys, and the image built with the first, once per test binary.
fn image() -> &'static SbImage {
    static IMG: OnceLock<SbImage> = OnceLock::new();
    IMG.get_or_init(|| {
        let dir = scratch("secureboot");
        let keys = dir.join("keys");
        let other_keys = dir.join("other-keys");
        generate_keys(&keys);
        generate_keys(&other_keys);
        let built = build_with_keys(&dir.join("out"), &keys);
        SbImage {
            keys,
            other_keys,
            built,
        }
    })
}

#[test]
fn keys_generate_writes_every_file_and_refuses_to_overwrite() {
    let img = image();
    for name in [
        "PK.key",
        "PK.crt",
        "PK.der",
        "KEK.key",
        "KEK.crt",
        "KEK.der",
        "db.key",
        "db.crt",
        "db.der",
        "golden.key",
        "golden.pub",
    ] {
        assert!(img.keys.join(name).is_file(), "{name} missing");
    }
    let o = run(&mut cvm(&[
        "keys",
        "generate",
        "--dir",
        img.keys.to_str().unwrap(),
    ]));
    assert!(!o.status.success());
    assert!(text(&o).contains("refusing to overwrite"), "{}", text(&o));
}

fn sbverify(cert: &Path, file: &Path) -> Output {
    run(Command::new("sbverify").arg("--cert").arg(cert).arg(file))
}

/// Byte offset of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Disk offset of the UKI's bytes inside the ESP: FAT stores the file contiguously on our
/// freshly written volume, which this checks by comparing the whole file at that offset.
fn uki_offset_on_disk(img: &Built) -> u64 {
    let esp_file = scratch("sb-esp").join("esp.img");
    img.extract_partition("esp", &esp_file, true);
    let esp = std::fs::read(&esp_file).unwrap();
    let uki = std::fs::read(img.out.join("uki.efi")).unwrap();
    let at = find(&esp, &uki[..4096]).expect("the UKI's first 4 KiB are not on the ESP");
    assert_eq!(
        &esp[at..at + uki.len()],
        &uki[..],
        "the ESP's BOOTX64.EFI is not out/uki.efi stored contiguously"
    );
    img.partition("esp")["first_lba"].as_u64().unwrap() * 512 + at as u64
}

#[test]
fn build_signs_the_uki_and_writes_the_key_material() {
    let img = image();
    let out = &img.built.out;
    let uki = out.join("uki.efi");
    let o = sbverify(&img.keys.join("db.crt"), &uki);
    assert!(
        o.status.success(),
        "sbverify rejected out/uki.efi:\n{}",
        text(&o)
    );
    let o = sbverify(&img.other_keys.join("db.crt"), &uki);
    assert!(!o.status.success(), "sbverify accepted another owner's db");
    // The ESP carries the signed UKI.
    uki_offset_on_disk(&img.built);

    let m = &img.built.manifest;
    let certs = m["secure_boot"]["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 3);
    for (cert, name) in certs.iter().zip(["PK", "KEK", "db"]) {
        assert_eq!(cert["name"], name);
        let der = std::fs::read(img.keys.join(format!("{name}.der"))).unwrap();
        assert_eq!(cert["sha256"], sha256_hex(&der), "{name}");
        let copied = std::fs::read(out.join(format!("secure-boot/{name}.der"))).unwrap();
        assert_eq!(copied, der, "{name}");
    }
    let uefi_data = std::fs::read_to_string(out.join("secure-boot/aws-uefi-data.bin")).unwrap();
    assert!(
        uefi_data.starts_with(AMZNUEFI_BASE64),
        "not base64 of AMZNUEFI: {uefi_data:.20}"
    );
    assert_eq!(
        m["secure_boot"]["ovmf_vars_sha256"],
        sha256_hex(&std::fs::read(out.join("OVMF_VARS.fd")).unwrap())
    );
    assert_eq!(
        m["uki"]["sha256"],
        sha256_hex(&std::fs::read(&uki).unwrap())
    );
    // Keys never leave the key directory.
    let manifest_text = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    assert!(!manifest_text.contains("PRIVATE KEY"));
    for entry in walk(out) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            find(&bytes, b"PRIVATE KEY").is_none(),
            "{} holds a private key",
            entry.display()
        );
    }
    let listed: Vec<&str> = m["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["path"].as_str().unwrap())
        .collect();
    for want in [
        "OVMF_VARS.fd",
        "secure-boot/db.der",
        "secure-boot/aws-uefi-data.bin",
    ] {
        assert!(listed.contains(&want), "{want} not in outputs {listed:?}");
    }
    // No temporaries left behind.
    for entry in std::fs::read_dir(out).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".tmp"), "temporary {name} left in out/");
    }
}

/// The signed golden measurement sits on the ESP (`\cvm\`) as out/ has it; the ESP stays clean
/// for `fsck.fat -n` and keeps the UKI at `\EFI\BOOT\BOOTX64.EFI`; openssl accepts the signature
/// with golden.pub over the embedded bytes.
#[test]
fn signed_golden_is_embedded_beside_the_signed_uki() {
    use base64::Engine;
    let img = image();
    let out = &img.built.out;
    let dir = scratch("sb-esp-golden");
    let esp = dir.join("esp.img");
    img.built.extract_partition("esp", &esp, true);
    let fsck = ok(Command::new("fsck.fat").arg("-n").arg(&esp));
    assert!(
        !fsck.contains("differ") && !fsck.to_lowercase().contains("warning"),
        "fsck.fat -n:\n{fsck}"
    );
    let mtype = |path: &str| -> Vec<u8> {
        let o = run(Command::new("mtype")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&esp)
            .arg(path));
        assert!(o.status.success(), "mtype {path}: {}", text(&o));
        o.stdout
    };
    let golden = std::fs::read(out.join("golden-measurement.json")).unwrap();
    let sig = std::fs::read(out.join("golden-measurement.json.sig")).unwrap();
    assert!(mtype("::/cvm/golden-measurement.json") == golden);
    assert!(mtype("::/cvm/golden-measurement.json.sig") == sig);
    assert!(mtype("::/EFI/BOOT/BOOTX64.EFI") == std::fs::read(out.join("uki.efi")).unwrap());

    let sig_json: Value = serde_json::from_slice(&sig).unwrap();
    assert_eq!(sig_json["algorithm"], "ecdsa-p256-sha256");
    let der = base64::engine::general_purpose::STANDARD
        .decode(sig_json["signature"].as_str().unwrap())
        .unwrap();
    let (sig_der, embedded) = (dir.join("sig.der"), dir.join("golden.json"));
    std::fs::write(&sig_der, der).unwrap();
    std::fs::write(&embedded, mtype("::/cvm/golden-measurement.json")).unwrap();
    let verified = ok(Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(img.keys.join("golden.pub"))
        .arg("-signature")
        .arg(&sig_der)
        .arg(&embedded));
    assert!(verified.contains("Verified OK"), "{verified}");
}

/// Every regular file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files.extend(walk(&p));
        } else {
            files.push(p);
        }
    }
    files
}

/// A second build with the same keys signs again (its signed-UKI stage is removed from the
/// cache first) and produces the same bytes.
#[test]
fn signed_build_is_reproducible() {
    let img = image();
    let cache = std::env::var_os("CVM_IMAGE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(cvm_image::inputs::cache::Cache::default_location);
    let stages = cache.join("stages");
    let mut removed = 0;
    for e in std::fs::read_dir(&stages).unwrap() {
        let p = e.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("uki-signed-")
        {
            std::fs::remove_dir_all(&p).unwrap();
            removed += 1;
        }
    }
    assert!(removed >= 1, "no signed-UKI stage in {}", stages.display());
    let again = build_with_keys(&scratch("secureboot-again"), &img.keys);
    for f in [
        "disk.raw",
        "uki.efi",
        "OVMF_VARS.fd",
        "manifest.json",
        "secure-boot/aws-uefi-data.bin",
        "golden-measurement.json",
        "golden-measurement.json.sig",
    ] {
        assert_eq!(
            sha256_hex(&std::fs::read(img.built.out.join(f)).unwrap()),
            sha256_hex(&std::fs::read(again.out.join(f)).unwrap()),
            "{f} differs between two builds with the same keys"
        );
    }
}

/// A copy of the build's output directory to boot from.
fn boot_dir(name: &str) -> PathBuf {
    let dir = scratch(name);
    for f in ["disk.raw", "manifest.json", "OVMF_VARS.fd"] {
        std::fs::copy(image().built.out.join(f), dir.join(f)).unwrap();
    }
    dir
}

fn run_secure_boot(out: &Path, extra: &[&str]) -> Output {
    let mut c = cvm(&["run", "--secure-boot", "--out", out.to_str().unwrap()]);
    c.arg("--spec").arg(repo().join("image.toml")).args(extra);
    run(&mut c)
}

fn console(out: &Path) -> String {
    std::fs::read_to_string(out.join("console.log"))
        .unwrap_or_default()
        .replace('\r', "")
}

fn curl(url: &str) -> String {
    ok(Command::new("curl").args(["-fsS", "--max-time", "20", url]))
}

/// One boot at a time (TCG is CPU-bound).
static BOOT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn signed_image_boots_with_secure_boot_and_the_predicted_pcr7() {
    let img = image();
    let out = boot_dir("sb-boot-good");
    let _one = BOOT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let o = run_secure_boot(&out, &["--detach", "--timeout", BOOT_TIMEOUT_SECS]);
    assert!(
        o.status.success(),
        "run --secure-boot --detach failed:\n{}\nconsole:\n{}",
        text(&o),
        console(&out)
    );
    let state: Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    let agent = state["agent_url"].as_str().unwrap().to_string();
    let checks = std::panic::catch_unwind(|| {
        assert_eq!(
            curl(&format!("{agent}/health")).trim(),
            r#"{"status":"ok"}"#
        );
        let pcrs: Value = serde_json::from_str(&curl(&format!("{agent}/pcrs"))).unwrap();
        let m = &img.built.manifest;
        assert_eq!(
            pcrs["sha256"]["7"], m["secure_boot"]["pcr7"]["value"],
            "PCR 7 from the TPM differs from the Secure Boot prediction"
        );
        assert_eq!(pcrs["sha256"]["11"], m["measurements"]["pcr11"]["value"]);
        assert_eq!(pcrs["sha256"]["23"], m["measurements"]["pcr23"]["value"]);
        // The golden file of a signed build predicts the Secure Boot boot: every predicted PCR of
        // its qemu profile (PCR 7 from the enrolled store, PCR 4 without a kernel event) is the TPM's,
        // and so are PCR 0/1 from the Secure Boot reference boot pinned in cvm-image.lock (recorded
        // with other, throw-away keys: PCR 0/1 do not depend on the owner's keys).
        let golden: Value = serde_json::from_slice(
            &std::fs::read(img.built.out.join("golden-measurement.json")).unwrap(),
        )
        .unwrap();
        let qemu = &golden["profiles"]["qemu"]["pcrs"]["sha256"];
        for pcr in ["0", "1"] {
            assert_eq!(qemu[pcr]["source"], "reference", "golden qemu PCR {pcr}");
            assert!(
                qemu[pcr]["note"]
                    .as_str()
                    .unwrap()
                    .contains("qemu-ovmf-secureboot.json"),
                "PCR {pcr}: {}",
                qemu[pcr]["note"]
            );
        }
        let mut checked = vec![];
        for (pcr, entry) in qemu.as_object().unwrap() {
            if entry["source"] == "predicted" || entry["source"] == "reference" {
                assert_eq!(
                    entry["value"],
                    pcrs["sha256"][pcr.as_str()],
                    "golden qemu PCR {pcr} ({})",
                    entry["source"]
                );
                checked.push(pcr.parse::<u32>().unwrap());
            }
        }
        checked.sort();
        assert_eq!(checked[..2], [0, 1], "{checked:?}");
        let c = console(&out);
        assert!(!REFUSALS.iter().any(|r| c.contains(r)), "{c}");

        // The firmware's log, event by event against the prediction (a diagnostic when the
        // value differs), and what PCR 4 holds with Secure Boot on, for the record.
        let log_path = out.join("eventlog.bin");
        ok(Command::new("curl")
            .args(["-fsS", "--max-time", "20", "-o"])
            .arg(&log_path)
            .arg(format!("{agent}/eventlog")));
        let log = cvm_measure::eventlog::parse(&std::fs::read(&log_path).unwrap()).unwrap();
        let sha256 = |e: &cvm_measure::eventlog::Event| {
            e.digests
                .iter()
                .find(|d| d.alg == cvm_measure::eventlog::HashAlg::SHA256)
                .map(|d| hex::encode(&d.digest))
                .unwrap()
        };
        let logged7: Vec<String> = log
            .events
            .iter()
            .filter(|e| e.pcr == 7)
            .map(sha256)
            .collect();
        let predicted7: Vec<String> = m["secure_boot"]["pcr7"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["digest"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            logged7, predicted7,
            "PCR 7 events differ from the prediction"
        );
        for e in log.events.iter().filter(|e| e.pcr == 4) {
            eprintln!("secure boot PCR 4: {} {}", sha256(e), e.description());
        }
    });
    let stop = run(&mut cvm(&[
        "stop",
        "--grace",
        "20",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(stop.status.success(), "stop failed: {}", text(&stop));
    if let Err(e) = checks {
        eprintln!("console:\n{}", console(&out));
        std::panic::resume_unwind(e);
    }
}

#[test]
fn modified_uki_is_refused_by_the_firmware() {
    let img = image();
    let out = boot_dir("sb-boot-tampered");
    let uki_len = std::fs::metadata(img.built.out.join("uki.efi"))
        .unwrap()
        .len();
    // A byte in the middle of the UKI: inside the .linux/.initrd sections the signature covers.
    let offset = uki_offset_on_disk(&img.built) + uki_len / 2;
    {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(out.join("disk.raw"))
            .unwrap();
        let mut b = [0u8; 1];
        f.seek(SeekFrom::Start(offset)).unwrap();
        f.read_exact(&mut b).unwrap();
        f.seek(SeekFrom::Start(offset)).unwrap();
        f.write_all(&[b[0] ^ 0xff]).unwrap();
    }
    let _one = BOOT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let o = run_secure_boot(&out, &["--timeout", REFUSED_TIMEOUT_SECS]);
    let c = console(&out);
    assert!(!o.status.success(), "a modified UKI booted:\n{}", text(&o));
    assert!(
        REFUSALS.iter().any(|r| c.contains(r)),
        "no firmware refusal on the console:\n{c}"
    );
    assert!(!c.contains(KERNEL_BANNER), "the kernel started:\n{c}");
    eprintln!(
        "tampered: {}",
        c.lines()
            .find(|l| REFUSALS.iter().any(|r| l.contains(r)))
            .unwrap_or_default()
    );
}
