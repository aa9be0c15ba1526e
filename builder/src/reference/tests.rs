use super::*;
use crate::inputs::atomic::TempDir;
use crate::inputs::lock::{LockedPackage, LockedReference};
use crate::qemu::Accel;
use sha2::{Digest, Sha256};

/// The separator digest every TCG reference lists: SHA-256 of 00000000.
const SEPARATOR_SHA256: &str = "df3f619804a92fdb4057192dc43dd748ea778adc52bc498ce80524c014b81119";
const OVMF_CODE: &[u8] = b"pretend OVMF_CODE_4M.fd";

fn event(pcr: u32, event_type: EventType, data: &[u8]) -> ExpectedEvent {
    ExpectedEvent::new(pcr, event_type, "test")
        .with_digest(HashAlg::SHA256, Sha256::digest(data).to_vec())
        .with_digest(HashAlg::SHA1, sha1_of(data))
}

fn sha1_of(data: &[u8]) -> Vec<u8> {
    // SHA-1 is not among the builder's dependencies: use the system tool, an independent oracle.
    let dir = TempDir::new_in(&std::env::temp_dir(), "ref-sha1").unwrap();
    let f = dir.path().join("d");
    std::fs::write(&f, data).unwrap();
    let out = std::process::Command::new("sha1sum")
        .arg(&f)
        .output()
        .expect("sha1sum (coreutils) is needed");
    hex::decode(&String::from_utf8(out.stdout).unwrap()[..40]).unwrap()
}

/// PCR_new = SHA-256(PCR_old ‖ digest), from zero: computed here, not by the code under test.
fn extend_chain(digests: &[&[u8]]) -> String {
    let mut pcr = vec![0u8; 32];
    for d in digests {
        let mut h = Sha256::new();
        h.update(&pcr);
        h.update(d);
        pcr = h.finalize().to_vec();
    }
    hex::encode(pcr)
}

fn package() -> LockedPackage {
    LockedPackage {
        name: "ovmf".into(),
        version: "2022.11-6+deb12u2".into(),
        suite: "bookworm".into(),
        arch: "all".into(),
        sha256: "e".repeat(64),
        size: 1,
        filename: "pool/main/e/edk2/ovmf.deb".into(),
    }
}

fn reference() -> Reference {
    let crtm = event(0, EventType::EV_S_CRTM_VERSION, &[0, 0]);
    let sep0 = event(0, EventType::EV_SEPARATOR, &[0; 4]);
    let boot = event(1, EventType::EV_EFI_VARIABLE_BOOT, b"BootOrder");
    let sep1 = event(1, EventType::EV_SEPARATOR, &[0; 4]);
    let digest = |e: &ExpectedEvent| e.digests[&HashAlg::SHA256].clone();
    let pcr0 = extend_chain(&[&digest(&crtm), &digest(&sep0)]);
    let pcr1 = extend_chain(&[&digest(&boot), &digest(&sep1)]);
    Reference {
        format: FORMAT,
        name: Variant::SecureBootOff.name().into(),
        description: "test".into(),
        secure_boot: false,
        recorded_with: RecordedWith {
            qemu_version: "QEMU emulator version 7.2.19".into(),
            qemu_package: None,
            swtpm_version: "TPM emulator version 0.7.1".into(),
            ovmf: OvmfBuild {
                package: "ovmf".into(),
                version: "2022.11-6+deb12u2".into(),
                deb_sha256: "e".repeat(64),
                code: "OVMF_CODE_4M.fd".into(),
                code_sha256: hex::encode(Sha256::digest(OVMF_CODE)),
                vars: "template".into(),
            },
            machine: crate::qemu::cmdline::machine(false, Accel::Tcg, 1024, 1),
        },
        pcrs: BTreeMap::from([(HashAlg::SHA256, BTreeMap::from([(0, pcr0), (1, pcr1)]))]),
        events: vec![crtm, boot, sep0, sep1],
    }
}

/// A lock directory with the reference file pinned, the OVMF code file, and the lock.
struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new(r: &Reference) -> Self {
        let dir = TempDir::new_in(&std::env::temp_dir(), "reference-test").unwrap();
        let json = serde_json::to_vec_pretty(r).unwrap();
        std::fs::create_dir(dir.path().join(DIR)).unwrap();
        std::fs::write(dir.path().join(Variant::SecureBootOff.file()), &json).unwrap();
        std::fs::write(dir.path().join("OVMF_CODE_4M.fd"), OVMF_CODE).unwrap();
        let mut lock = Lockfile {
            packages: vec![package()],
            ..Lockfile::default()
        };
        lock.upsert_reference(LockedReference {
            name: Variant::SecureBootOff.name().into(),
            file: Variant::SecureBootOff.file(),
            sha256: hex::encode(Sha256::digest(&json)),
        });
        lock.save(&dir.path().join("cvm-image.lock")).unwrap();
        Fixture { dir }
    }

    fn lock(&self) -> PathBuf {
        self.dir.path().join("cvm-image.lock")
    }

    fn load(&self, pkg: &LockedPackage) -> Result<Pinned> {
        let code = self.dir.path().join("OVMF_CODE_4M.fd");
        load_pinned(
            &self.lock(),
            Variant::SecureBootOff,
            &FirmwareInUse {
                package: pkg,
                code: &code,
            },
        )
    }
}

#[test]
fn a_pinned_reference_gives_enforced_reference_entries_with_its_events() {
    let r = reference();
    let f = Fixture::new(&r);
    let pinned = f.load(&package()).unwrap();
    for (pcr, n_events) in [(0, 2), (1, 2)] {
        let e = pinned
            .entry(pcr, HashAlg::SHA256, &[HashAlg::SHA256])
            .unwrap();
        assert_eq!(e.source, Source::Reference);
        assert!(e.enforce);
        assert_eq!(e.value.as_ref(), Some(&r.pcrs[&HashAlg::SHA256][&pcr]));
        assert_eq!(e.events.len(), n_events);
        // Only the banks the golden file lists.
        assert!(e.events.iter().all(|ev| ev.digests.len() == 1));
        assert!(e
            .note
            .unwrap()
            .contains("reference boot reference/qemu-ovmf.json"));
    }
    let e1 = pinned
        .entry(1, HashAlg::SHA256, &[HashAlg::SHA256])
        .unwrap();
    assert_eq!(
        hex::encode(&e1.events[1].digests[&HashAlg::SHA256]),
        SEPARATOR_SHA256
    );
    // Every bank the reference has replays from the same events (SHA-1 chain by sha1sum).
    let sha1 = pinned.entry(0, HashAlg::SHA1, &[HashAlg::SHA1]).unwrap();
    let mut pcr = vec![0u8; 20];
    for e in &r.events[..] {
        if e.pcr == 0 {
            pcr = sha1_of(&[pcr, e.digests[&HashAlg::SHA1].clone()].concat());
        }
    }
    assert_eq!(sha1.value, Some(hex::encode(pcr)));
    assert!(sha1
        .events
        .iter()
        .all(|ev| ev.digests.keys().eq([&HashAlg::SHA1])));
}

#[test]
fn an_edited_reference_file_is_an_error_naming_the_file_and_the_command() {
    let f = Fixture::new(&reference());
    let path = f.dir.path().join(Variant::SecureBootOff.file());
    let mut text = std::fs::read_to_string(&path).unwrap();
    text = text.replacen("7.2.19", "7.2.20", 1);
    std::fs::write(&path, text).unwrap();
    let err = format!("{:#}", f.load(&package()).unwrap_err());
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains(RECORD_COMMAND), "{err}");
    assert!(err.contains("differs from the pin"), "{err}");
}

#[test]
fn a_reference_of_another_ovmf_leaves_pcr0_and_1_unknown_with_the_reason() {
    let f = Fixture::new(&reference());
    let mut newer = package();
    newer.version = "2022.11-6+deb12u3".into();
    newer.sha256 = "f".repeat(64);
    let pinned = f.load(&newer).unwrap();
    let Pinned::Unusable(why) = &pinned else {
        panic!("a reference of another OVMF was used: {pinned:?}");
    };
    assert!(why.contains("2022.11-6+deb12u2"), "{why}");
    assert!(why.contains("2022.11-6+deb12u3"), "{why}");
    assert!(why.contains(RECORD_COMMAND), "{why}");
    let e = pinned
        .entry(0, HashAlg::SHA256, &[HashAlg::SHA256])
        .unwrap();
    assert_eq!(e.source, Source::Unknown);
    assert!(!e.enforce);
    assert_eq!(e.value, None);
    assert_eq!(e.note.as_deref(), Some(why.as_str()));

    // Same package, but the code file booted is not the recorded one.
    std::fs::write(f.dir.path().join("OVMF_CODE_4M.fd"), b"another build").unwrap();
    let Pinned::Unusable(why) = f.load(&package()).unwrap() else {
        panic!("a reference of another OVMF_CODE was used");
    };
    assert!(why.contains("OVMF_CODE_4M.fd"), "{why}");
}

#[test]
fn no_pin_leaves_pcr0_and_1_unknown() {
    let f = Fixture::new(&reference());
    let mut lock = Lockfile::load(&f.lock()).unwrap();
    lock.references.clear();
    lock.save(&f.lock()).unwrap();
    let Pinned::Unusable(why) = f.load(&package()).unwrap() else {
        panic!("used a reference that is not pinned");
    };
    assert!(
        why.contains("no reference boot qemu-ovmf is pinned"),
        "{why}"
    );
}

#[test]
fn parse_rejects_foreign_pcrs_inconsistent_values_and_the_wrong_variant() {
    let good = serde_json::to_vec(&reference()).unwrap();
    assert!(parse(&good, Variant::SecureBootOff).is_ok());
    let err = parse(&good, Variant::SecureBootOn).unwrap_err().to_string();
    assert!(err.contains("not qemu-ovmf-secureboot"), "{err}");

    let mut r = reference();
    r.events[0].pcr = 4;
    let err = parse(&serde_json::to_vec(&r).unwrap(), Variant::SecureBootOff)
        .unwrap_err()
        .to_string();
    assert!(err.contains("PCR 4"), "{err}");

    let mut r = reference();
    r.pcrs
        .get_mut(&HashAlg::SHA256)
        .unwrap()
        .insert(1, "00".repeat(32));
    let err = parse(&serde_json::to_vec(&r).unwrap(), Variant::SecureBootOff)
        .unwrap_err()
        .to_string();
    assert!(err.contains("PCR 1 sha256 events replay to"), "{err}");
}

#[test]
fn run_warns_only_when_the_qemu_version_differs() {
    let r = reference();
    assert_eq!(
        qemu_version_warning(&r, "QEMU emulator version 7.2.19"),
        None
    );
    let w = qemu_version_warning(&r, "QEMU emulator version 8.2.2").unwrap();
    assert!(
        w.contains("8.2.2") && w.contains("7.2.19") && w.contains("PCR 1"),
        "{w}"
    );
    assert_eq!(w.lines().count(), 1);
}

/// The committed reference boots against the pinned OVMF files: the DXE volume SEC decompresses is
/// measured byte for byte as stored (so that event could be predicted), the PEI volume is not (PEI ran
/// in place from it before it was hashed) — which is why PCR 0 is a reference value. The oracle is
/// the firmware's own measurement, recorded in reference/*.json.
#[test]
fn pinned_ovmf_dxe_volume_is_measured_as_stored_but_the_pei_volume_is_not() {
    use sha2::Sha384;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (variant, code) in [
        (Variant::SecureBootOff, "OVMF_CODE_4M.fd"),
        (Variant::SecureBootOn, "OVMF_CODE_4M.secboot.fd"),
    ] {
        let code = std::fs::read(crate::testutil::fixture(&format!(
            "ovmf/usr/share/OVMF/{code}"
        )))
        .unwrap();
        let volumes = super::ovmf::decompressed_volumes(&code).unwrap();
        let file = repo.join(variant.file());
        let bytes = std::fs::read(&file)
            .unwrap_or_else(|e| panic!("{}: {e} (record it: `{RECORD_COMMAND}`)", file.display()));
        let reference = parse(&bytes, variant).unwrap();
        let blobs: Vec<&ExpectedEvent> = reference
            .events
            .iter()
            .filter(|e| e.event_type == EventType::EV_EFI_PLATFORM_FIRMWARE_BLOB)
            .collect();
        assert_eq!(blobs.len(), 2, "{}: PEIFV and DXEFV", variant.name());
        // UEFI_PLATFORM_FIRMWARE_BLOB: BlobBase (u64), BlobLength (u64).
        let length = |e: &ExpectedEvent| {
            let d = e.data.as_ref().unwrap();
            u64::from_le_bytes(d[8..16].try_into().unwrap()) as usize
        };
        let volume = |e: &ExpectedEvent| {
            volumes
                .iter()
                .find(|v| v.len() == length(e))
                .unwrap_or_else(|| panic!("no decompressed volume of {} bytes", length(e)))
        };
        let (pei, dxe) = (blobs[0], blobs[1]);
        let dxe_fv = volume(dxe);
        assert_eq!(
            dxe.digests[&HashAlg::SHA256],
            Sha256::digest(dxe_fv).to_vec(),
            "{}: DXEFV sha256",
            variant.name()
        );
        assert_eq!(
            dxe.digests[&HashAlg::SHA384],
            Sha384::digest(dxe_fv).to_vec(),
            "{}: DXEFV sha384",
            variant.name()
        );
        assert_ne!(
            pei.digests[&HashAlg::SHA256],
            Sha256::digest(volume(pei)).to_vec(),
            "{}: PEIFV is measured as stored after all: PCR 0 could then be predicted",
            variant.name()
        );
    }
}
