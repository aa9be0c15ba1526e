//! The SEV / SEV-ES / SEV-SNP launch digest (cvm_measure::snp, `cvm-image tee snp-measure`) equals
//! sev-snp-measure's, byte for byte, over a matrix of firmware files, vCPU counts and types, VMM
//! types, guest features, kernel hashes and precomputed firmware digests (docs/tee.md §1–§2).
//!
//! The oracle is sev-snp-measure from PyPI, pinned in scripts/snp-measure-requirements.txt and
//! installed by scripts/deps.sh into `$CVM_IMAGE_CACHE/sev-snp-measure`; the matrix runs its own
//! digest functions in one interpreter (tests/snp_oracle.py), the CLI cases its CLI. The test fails,
//! never skips, when the oracle or a pinned firmware is missing.

mod common;

use common::{ok, repo, run, scratch, sha256_hex};
use cvm_measure::snp::kernel_hashes::KernelHashes;
use cvm_measure::snp::vmsa::{vcpu_type_sig, VCPU_TYPES};
use cvm_measure::snp::{launch_digest, snp_ovmf_hash, LaunchInputs, SevMode, VmmType};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Bookworm's ovmf 2022.11-6+deb12u2 (the lock's pin), as scripts/deps.sh installs it.
const BOOKWORM_OVMF: &str = "/usr/share/ovmf/OVMF.fd";
const BOOKWORM_OVMF_SHA256: &str =
    "7b456907dd0786d415999e801a1ac4637b8ed4d7cf5378cfc6edbe5e574dd773";
/// Trixie's ovmf 2025.02-8+deb13u1 package (scripts/deps.sh downloads it under this pin).
const TRIXIE_OVMF_DEB_SHA256: &str =
    "78e0d54df11fc77406cb7a0bc9a39e5bca6d1cbe06556b91d9a73491c52decdf";
/// Files of the trixie package: (path in the package, sha256).
const TRIXIE_FILES: &[(&str, &str)] = &[
    (
        "usr/share/ovmf/OVMF.fd",
        "14954040cc754ade0c625ac3470ea46d4c14318b5b1396de4ef77090203d76db",
    ),
    (
        "usr/share/OVMF/OVMF_CODE_4M.fd",
        "624e06de18b4fa535e90db7160d00d3d07d206422b89999bf1e27d920264e4e0",
    ),
];
/// sev-snp-measure's test fixtures: the last 4 KiB of edk2-stable202405 AmdSevX64 (the only build
/// here with an SNP_KERNEL_HASHES section) and OvmfPkgX64 (tests/fixtures/sev-snp-measure/README.md).
const FIXTURES: &[(&str, &str)] = &[
    (
        "ovmf_AmdSev_suffix.bin",
        "8f765dfabc127fc0a938a0744a3103ec15864d7d794eb4c398aa976b6d6ab16c",
    ),
    (
        "ovmf_OvmfX64_suffix.bin",
        "b4c021e085fb83ceffe6571a3d357b4a98773c83c474e47f76c876708fe316da",
    ),
];

fn cache() -> PathBuf {
    std::env::var_os("CVM_IMAGE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/cvm-image"))
}

/// The venv scripts/deps.sh installs the pinned oracle into; panics when missing or stale.
fn oracle_venv() -> PathBuf {
    let venv = cache().join("sev-snp-measure");
    let pins =
        std::fs::read_to_string(repo().join("scripts/snp-measure-requirements.txt")).unwrap();
    let installed = std::fs::read_to_string(venv.join("requirements.txt")).unwrap_or_default();
    assert!(
        installed == pins && venv.join("bin/sev-snp-measure").is_file(),
        "the pinned sev-snp-measure is not installed in {}: run scripts/deps.sh",
        venv.display()
    );
    venv
}

fn pinned(path: &Path, sha256: &str) -> Vec<u8> {
    let bytes = std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/deps.sh)", path.display()));
    assert_eq!(
        sha256_hex(&bytes),
        sha256,
        "{} is not the pinned file",
        path.display()
    );
    bytes
}

struct Firmware {
    name: &'static str,
    path: PathBuf,
    bytes: Vec<u8>,
}

/// Every firmware of the matrix, each checked against its pin.
fn firmware() -> &'static [Firmware] {
    static FW: OnceLock<Vec<Firmware>> = OnceLock::new();
    FW.get_or_init(|| {
        let mut fw = vec![Firmware {
            name: "bookworm OVMF.fd",
            path: BOOKWORM_OVMF.into(),
            bytes: pinned(Path::new(BOOKWORM_OVMF), BOOKWORM_OVMF_SHA256),
        }];
        let deb = cache()
            .join("debs")
            .join(format!("{TRIXIE_OVMF_DEB_SHA256}.deb"));
        pinned(&deb, TRIXIE_OVMF_DEB_SHA256);
        let dir = scratch("snp-trixie-ovmf");
        ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir));
        for (i, (rel, sha)) in TRIXIE_FILES.iter().enumerate() {
            let path = dir.join(rel);
            fw.push(Firmware {
                name: ["trixie OVMF.fd", "trixie OVMF_CODE_4M.fd"][i],
                bytes: pinned(&path, sha),
                path,
            });
        }
        for (i, (file, sha)) in FIXTURES.iter().enumerate() {
            let path = repo().join("tests/fixtures/sev-snp-measure").join(file);
            fw.push(Firmware {
                name: ["AmdSevX64 tail", "OvmfPkgX64 tail"][i],
                bytes: pinned(&path, sha),
                path,
            });
        }
        fw
    })
}

/// Direct-boot inputs: a fake kernel and initrd (the table hashes bytes, whatever they are).
struct Boot {
    kernel: PathBuf,
    initrd: Option<PathBuf>,
    append: Option<&'static str>,
}

fn boots() -> &'static [Boot] {
    static B: OnceLock<Vec<Boot>> = OnceLock::new();
    B.get_or_init(|| {
        let dir = scratch("snp-boot-inputs");
        let kernel = dir.join("bzImage");
        let initrd = dir.join("initrd.img");
        let empty = dir.join("empty");
        std::fs::write(
            &kernel,
            (0..300_000u32)
                .map(|i| (i * 7 % 251) as u8)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        std::fs::write(
            &initrd,
            (0..70_001u32).map(|i| (i % 13) as u8).collect::<Vec<_>>(),
        )
        .unwrap();
        std::fs::write(&empty, b"").unwrap();
        vec![
            Boot {
                kernel: kernel.clone(),
                initrd: None,
                append: None,
            },
            Boot {
                kernel: kernel.clone(),
                initrd: Some(initrd.clone()),
                append: Some("console=ttyS0 loglevel=7"),
            },
            Boot {
                kernel: empty.clone(),
                initrd: Some(empty.clone()),
                append: Some(""),
            },
            Boot {
                kernel,
                initrd: Some(initrd),
                append: Some("root=/dev/vda ü\u{1F512}"),
            },
        ]
    })
}

#[derive(Clone)]
struct Case {
    mode: &'static str,
    fw: usize,
    vcpus: u32,
    vcpu_sig: u32,
    vmm: VmmType,
    guest_features: u64,
    boot: Option<usize>,
    snp_ovmf_hash: Option<String>,
}

impl Case {
    fn describe(&self) -> String {
        format!(
            "{} {:?} fw={} vcpus={} sig={:#x} gf={:#x} boot={:?} seed={}",
            self.mode,
            self.vmm,
            firmware()[self.fw].name,
            self.vcpus,
            self.vcpu_sig,
            self.guest_features,
            self.boot,
            self.snp_ovmf_hash.is_some()
        )
    }

    fn oracle_json(&self) -> Value {
        let boot = self.boot.map(|b| &boots()[b]);
        json!({
            "mode": self.mode,
            "vcpus": self.vcpus,
            "vcpu_sig": self.vcpu_sig,
            "ovmf": firmware()[self.fw].path,
            "kernel": boot.map(|b| &b.kernel),
            "initrd": boot.and_then(|b| b.initrd.as_ref()),
            "append": boot.and_then(|b| b.append),
            "guest_features": self.guest_features,
            "snp_ovmf_hash": self.snp_ovmf_hash,
            "vmm": format!("{:?}", self.vmm).to_lowercase(),
        })
    }

    /// Ours, through the library: hex, or "error: …".
    fn ours(&self, files: &mut HashMap<PathBuf, Vec<u8>>) -> String {
        let ovmf = &firmware()[self.fw].bytes;
        let result = if self.mode == "snp:ovmf-hash" {
            snp_ovmf_hash(ovmf).map(|d| d.to_vec())
        } else {
            let mut read = |p: &PathBuf| {
                files
                    .entry(p.clone())
                    .or_insert_with(|| std::fs::read(p).unwrap())
                    .clone()
            };
            let kernel_hashes = self.boot.map(|b| {
                let b = &boots()[b];
                let initrd = b.initrd.as_ref().map(&mut read);
                KernelHashes::new(&read(&b.kernel), initrd.as_deref(), b.append)
            });
            let inputs = LaunchInputs {
                mode: match self.mode {
                    "snp" => SevMode::Snp,
                    "seves" => SevMode::SevEs,
                    _ => SevMode::Sev,
                },
                ovmf,
                vcpus: self.vcpus,
                vcpu_sig: self.vcpu_sig,
                vmm: self.vmm,
                guest_features: self.guest_features,
                kernel_hashes,
                snp_ovmf_hash: self
                    .snp_ovmf_hash
                    .as_ref()
                    .map(|h| hex::decode(h).unwrap().try_into().unwrap()),
            };
            launch_digest(&inputs)
        };
        match result {
            Ok(d) => hex::encode(d),
            Err(e) => format!("error: {e}"),
        }
    }
}

/// The oracle's answers, one line per case, from one interpreter.
fn oracle(cases: &[Case]) -> Vec<String> {
    let venv = oracle_venv();
    let input = Value::Array(cases.iter().map(Case::oracle_json).collect()).to_string();
    let mut child = Command::new(venv.join("bin/python"))
        .arg(repo().join("tests/snp_oracle.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start the oracle's python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "oracle failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), cases.len(), "one oracle line per case");
    lines
}

const VCPUS: &[u32] = &[1, 2, 3, 4, 16, 64];
const GUEST_FEATURES: &[u64] = &[0x0, 0x1, 0x21];

/// (VMM, vCPU signature) pairs: QEMU with every vCPU type; EC2 and GCE ignore the signature, so
/// they get a non-zero one the digest must not depend on.
fn vmm_sigs() -> Vec<(VmmType, u32)> {
    let mut v: Vec<(VmmType, u32)> = VCPU_TYPES
        .iter()
        .map(|t| (VmmType::Qemu, vcpu_type_sig(t.0).unwrap()))
        .collect();
    let milan = vcpu_type_sig("EPYC-Milan").unwrap();
    v.push((VmmType::Ec2, milan));
    v.push((VmmType::Gce, milan));
    v
}

/// One guest shape in mode snp with each guest-features value, then in mode seves.
fn snp_and_seves(shape: Case, guest_features: &'static [u64]) -> impl Iterator<Item = Case> {
    let seves = Case {
        mode: "seves",
        ..shape.clone()
    };
    guest_features
        .iter()
        .map(move |&guest_features| Case {
            guest_features,
            ..shape.clone()
        })
        .chain([seves])
}

fn matrix() -> Vec<Case> {
    let fws = firmware().len();
    let base = Case {
        mode: "snp",
        fw: 0,
        vcpus: 1,
        vcpu_sig: 0,
        vmm: VmmType::Qemu,
        guest_features: 1,
        boot: None,
        snp_ovmf_hash: None,
    };
    let mut cases = Vec::new();
    for fw in 0..fws {
        for &vcpus in VCPUS {
            for (vmm, vcpu_sig) in vmm_sigs() {
                let shape = Case {
                    fw,
                    vcpus,
                    vcpu_sig,
                    vmm,
                    ..base.clone()
                };
                cases.extend(snp_and_seves(shape, GUEST_FEATURES));
            }
        }
        // With and without kernel hashes: only AmdSevX64 has the section and the hash table;
        // the others must be refused by both.
        for boot in 0..boots().len() {
            for &vcpus in &[1, 4] {
                for (vmm, vcpu_sig) in [
                    (VmmType::Qemu, vcpu_type_sig("EPYC-v4").unwrap()),
                    (VmmType::Qemu, vcpu_type_sig("EPYC-Genoa").unwrap()),
                    (VmmType::Ec2, 0),
                    (VmmType::Gce, 0),
                ] {
                    let boot = Some(boot);
                    let shape = Case {
                        fw,
                        vcpus,
                        vcpu_sig,
                        vmm,
                        boot,
                        ..base.clone()
                    };
                    cases.extend(snp_and_seves(shape, &[0x1, 0x21]));
                }
            }
            cases.push(Case {
                mode: "sev",
                fw,
                vcpus: 0,
                boot: Some(boot),
                ..base.clone()
            });
        }
        cases.push(Case {
            mode: "sev",
            fw,
            vcpus: 0,
            ..base.clone()
        });
        cases.push(Case {
            mode: "snp:ovmf-hash",
            fw,
            ..base.clone()
        });
    }
    cases
}

fn compare(cases: &[Case]) -> (usize, usize) {
    // The oracle's interpreter and our digests run at the same time (two cores).
    let (theirs, ours) = std::thread::scope(|s| {
        let theirs = s.spawn(|| oracle(cases));
        let mut files = HashMap::new();
        let ours: Vec<String> = cases.iter().map(|c| c.ours(&mut files)).collect();
        (theirs.join().unwrap(), ours)
    });
    let mut bad = Vec::new();
    let mut digests = 0;
    for ((c, t), o) in cases.iter().zip(&theirs).zip(ours) {
        let agree = if t.starts_with("error:") {
            o.starts_with("error:")
        } else {
            &o == t
        };
        if !agree {
            bad.push(format!("{}\n  ours   {o}\n  oracle {t}", c.describe()));
        }
        digests += usize::from(!t.starts_with("error:"));
    }
    assert!(
        bad.is_empty(),
        "{} of {} cases differ from sev-snp-measure:\n{}",
        bad.len(),
        cases.len(),
        bad.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
    (cases.len(), digests)
}

#[test]
fn launch_digest_equals_sev_snp_measure_over_the_matrix() {
    let start = std::time::Instant::now();
    let cases = matrix();
    let (n, digests) = compare(&cases);
    // Most cases are digests, not agreed refusals: the AmdSev tail alone has 4 boots × 2 vCPU
    // counts × 4 VMMs × 3 modes that must succeed.
    assert!(
        digests > n * 3 / 4,
        "only {digests} of {n} cases produced a digest"
    );
    eprintln!(
        "{n} cases ({digests} digests) equal sev-snp-measure in {:?}",
        start.elapsed()
    );
}

#[test]
fn precomputed_ovmf_digest_equals_sev_snp_measure() {
    // The seed is the digest of another firmware's pages: the file then only supplies metadata.
    let fws = firmware().len();
    let mut cases = Vec::new();
    for fw in 0..fws {
        let seed = hex::encode(snp_ovmf_hash(&firmware()[(fw + 1) % fws].bytes).unwrap());
        for (vmm, vcpu_sig) in vmm_sigs().into_iter().step_by(4) {
            for &vcpus in &[1, 3] {
                cases.push(Case {
                    mode: "snp",
                    fw,
                    vcpus,
                    vcpu_sig,
                    vmm,
                    guest_features: 1,
                    boot: (fw == 3).then_some(1),
                    snp_ovmf_hash: Some(seed.clone()),
                });
            }
        }
    }
    compare(&cases);
    // Seeding with a firmware's own page digest is the same as measuring it.
    let fw = &firmware()[1];
    let inputs = |seed| LaunchInputs {
        mode: SevMode::Snp,
        ovmf: &fw.bytes,
        vcpus: 2,
        vcpu_sig: 0x800f12,
        vmm: VmmType::Qemu,
        guest_features: 1,
        kernel_hashes: None,
        snp_ovmf_hash: seed,
    };
    assert_eq!(
        launch_digest(&inputs(Some(snp_ovmf_hash(&fw.bytes).unwrap()))).unwrap(),
        launch_digest(&inputs(None)).unwrap()
    );
}

/// `cvm-image tee snp-measure` and `sev-snp-measure` with the same arguments.
fn both(args: &[&str]) -> (String, String) {
    let ours = run(Command::new(common::cvm_image())
        .args(["tee", "snp-measure"])
        .args(args));
    let theirs = run(Command::new(oracle_venv().join("bin/sev-snp-measure")).args(args));
    let text = |o: &std::process::Output| {
        if o.status.success() {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .last()
                .unwrap_or("")
                .to_string()
        } else {
            "failed".to_string()
        }
    };
    (text(&ours), text(&theirs))
}

#[test]
fn cli_prints_the_oracle_digest_as_its_last_line_and_json() {
    let fw = firmware();
    let p = |i: usize| fw[i].path.to_str().unwrap().to_string();
    let b = &boots()[1];
    let (kernel, initrd) = (
        b.kernel.to_str().unwrap(),
        b.initrd.as_ref().unwrap().to_str().unwrap(),
    );
    let seed = hex::encode(snp_ovmf_hash(&fw[2].bytes).unwrap());
    let (bookworm, trixie, code4m, amdsev) = (p(0), p(1), p(2), p(3));
    let runs: Vec<String> = vec![
        format!("--mode snp --vcpus 4 --vcpu-type EPYC-Genoa --ovmf {trixie}"),
        format!("--mode snp --vcpus 2 --vcpu-type EPYC-Milan --ovmf {bookworm} --guest-features 0x21"),
        format!("--mode snp --vcpus 3 --vmm-type ec2 --ovmf {code4m}"),
        format!("--mode snp --vcpus 16 --vmm-type gce --ovmf {amdsev} --kernel {kernel} --initrd {initrd} --append console=ttyS0"),
        format!("--mode snp --vcpus 1 --vcpu-type EPYC-Turin --ovmf {amdsev} --kernel {kernel}"),
        format!("--mode snp --vcpus 2 --vcpu-sig 0xa00f11 --ovmf {bookworm} --snp-ovmf-hash {seed}"),
        // `--append=`: an empty command line.
        format!("--mode seves --vcpus 4 --vcpu-type EPYC-Rome --ovmf {amdsev} --kernel {kernel} --append="),
        format!("--mode sev --ovmf {amdsev} --kernel {kernel} --initrd {initrd}"),
        format!("--mode snp:ovmf-hash --ovmf {trixie}"),
        // Refused by both: no SNP_KERNEL_HASHES section in bookworm's OVMF.
        format!("--mode snp --vcpus 1 --vcpu-type EPYC-v4 --ovmf {bookworm} --kernel {kernel}"),
    ];
    for args in &runs {
        let args: Vec<&str> = args.split_whitespace().collect();
        let (ours, theirs) = both(&args);
        assert_eq!(ours, theirs, "cvm-image tee snp-measure {}", args.join(" "));
        if ours != "failed" {
            assert!(
                ours.chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
                "{ours}"
            );
            assert!(ours.len() == 96 || ours.len() == 64, "{ours}");
            let json = ok(Command::new(common::cvm_image())
                .args(["tee", "snp-measure"])
                .args(&args)
                .arg("--json"));
            let j: Value = serde_json::from_str(&json).expect("--json prints one JSON object");
            assert_eq!(j["measurement"], ours.as_str(), "{json}");
            assert_eq!(
                j["ovmf"]["sha256"],
                sha256_hex(
                    &std::fs::read(args[args.iter().position(|a| *a == "--ovmf").unwrap() + 1])
                        .unwrap()
                )
            );
        }
    }
    // Our vCPU-type and VMM spellings: an unknown type is an input error, exit 2.
    let bad = run(Command::new(common::cvm_image()).args([
        "tee",
        "snp-measure",
        "--mode",
        "snp",
        "--vcpus",
        "1",
        "--vcpu-type",
        "EPYC-Zen9",
        "--ovmf",
        &p(0),
    ]));
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("EPYC-Turin"),
        "lists the known types"
    );
}
