//! The build, top to bottom: spec → inputs → root and workload trees → squashfs → dm-verity →
//! initramfs → UKI → ESP → GPT disk → manifest.
//!
//! Each step is a function of its inputs only. The expensive ones go through the stage cache; the disk
//! itself is always re-assembled (cheap: it is a sparse copy of the partition images).
//!
//! The golden measurement is embedded in the image it predicts, on the ESP, without a cycle: the
//! firmware measures the UKI (PCR 4, Authenticode) and the partition table (PCR 5), never the
//! ESP's files. So the layout is planned with the UKI-only ESP (its size and partition UUID follow
//! from the UKI alone), the boot is predicted from the partition table, and only then is the ESP
//! rebuilt with `cvm/golden-measurement.json` (+ `.sig`) and the disk written — the build checks
//! that the measured table bytes did not change.

use crate::fetch;
use crate::formats::{self, Target};
use crate::gpt::{self, PartitionPlan};
use crate::guest::{self, GuestBinaries};
use crate::manifest::{self, Manifest};
use crate::output::OutputDir;
use crate::spec::{PartSize, Spec};
use crate::stages::StageCache;
use crate::{boot, esp, golden, ids, predict, rootfs, secureboot, verity_image};
use anyhow::{bail, ensure, Context, Result};
use cvm_verify::golden_sign;
use std::path::PathBuf;

/// The detached signature beside `golden-measurement.json` (`golden_sign`'s default name).
pub const GOLDEN_SIG_FILE: &str = "golden-measurement.json.sig";

/// Where things go and come from.
pub struct Options {
    pub out: PathBuf,
    pub lock: PathBuf,
    pub cache: PathBuf,
    /// Cloud/VMM artifacts to write beside disk.raw.
    pub targets: Vec<Target>,
    /// Secure Boot key directory (`build --keys`, else the spec's `[secure_boot] keys`): sign the
    /// UKI with db and write the enrolled OVMF_VARS.fd and secure-boot/. None: unsigned, SB off.
    pub keys: Option<PathBuf>,
    /// Golden-measurement signing key (`build --golden-key`, else the spec's `[golden]
    /// signing_key`): write `golden-measurement.json.sig` and embed it beside the golden file.
    pub golden_key: Option<PathBuf>,
}

impl Options {
    pub fn new(spec: &Spec, out: PathBuf, lock: Option<PathBuf>, cache: Option<PathBuf>) -> Self {
        let fetch::InputPaths { lock, cache } = fetch::InputPaths::resolve(spec, lock, cache);
        Options {
            out,
            lock,
            cache,
            targets: vec![],
            keys: spec.secure_boot.as_ref().map(|sb| sb.keys.clone()),
            golden_key: spec.golden.as_ref().map(|g| g.signing_key.clone()),
        }
    }
}

/// What a build produced (the manifest is also written to `out/manifest.json`).
pub struct BuildResult {
    pub out: PathBuf,
    pub manifest: Manifest,
    pub seconds: f64,
}

impl BuildResult {
    pub fn print_summary(&self) {
        let m = &self.manifest;
        println!(
            "built {} in {:.1} s",
            self.out.join("disk.raw").display(),
            self.seconds
        );
        for p in &m.partitions {
            println!(
                "  {:>2} {:<20} {:>8} KiB  uuid {}",
                p.number,
                p.name,
                p.size_bytes / 1024,
                p.uuid
            );
        }
        println!("  root verity hash      {}", m.verity.root.root_hash);
        if let Some(w) = &m.verity.workload {
            println!("  workload verity hash  {}", w.root_hash);
        }
        println!("  predicted PCR 11      {}", m.measurements.pcr11.value);
        if let Some(p) = &m.measurements.pcr23 {
            println!("  predicted PCR 23      {}", p.value);
        }
        if let Some(sb) = &m.secure_boot {
            println!("  Secure Boot: UKI signed with db, keys enrolled in OVMF_VARS.fd");
            println!("  predicted PCR 7       {}", sb.pcr7.value);
        }
    }
}

/// Build the image described by `spec` into `opts.out`.
pub fn build(spec: &Spec, opts: &Options) -> Result<BuildResult> {
    let started = std::time::Instant::now();
    let out = OutputDir::prepare(&opts.out)?;
    let stages = StageCache::new(opts.cache.clone());
    let keys = load_keys(opts)?;
    let golden_key = load_golden_key(opts)?;

    let inputs = fetch::fetch(spec, &opts.lock, &opts.cache)?;
    let guest = build_guest(spec)?;

    let root_tree = rootfs::root_tree(spec, &guest)?;
    let root = verity_image::build(&stages, "root", &root_tree, spec)?;
    let workload = match &spec.workload {
        Some(w) => Some(verity_image::build(
            &stages,
            "workload",
            &rootfs::workload_tree(w, &guest)?,
            spec,
        )?),
        None => None,
    };

    // Target sections add drivers and command-line words to the base image.
    let target_names: Vec<String> = opts.targets.iter().map(|t| t.to_string()).collect();
    let initrd = boot::initramfs(&stages, spec, &inputs, &guest, &root, &target_names)?;
    let uki = boot::uki(&stages, spec, &inputs, &initrd, &target_names)?;
    let uki = match &keys {
        Some(k) => secureboot::sign_uki(&stages, &uki, k)?,
        None => uki,
    };
    // The UKI-only ESP fixes the ESP's size and partition UUID (see the module docs).
    let esp_plain = boot::esp(&stages, spec, &uki, &[])?;

    let mut parts = partitions(spec, &esp_plain, &root, workload.as_ref())?;
    let disk_guid = ids::uuid("disk-guid", &[&uki.sha256, &root.info.root_hash]);
    let layout = gpt::plan(disk_guid, &parts, formats::size_multiple(&opts.targets), 0)?;

    let secure_boot = keys
        .as_ref()
        .map(|k| secureboot::write_outputs(&out, &inputs.ovmf_vars, k))
        .transpose()?;
    let enrolled = match (&keys, &secure_boot) {
        (Some(k), Some(sb)) => {
            let vars = sb
                .files
                .iter()
                .find(|(name, _)| name == "OVMF_VARS.fd")
                .map(|(_, path)| path.clone())
                .context("the Secure Boot outputs have no OVMF_VARS.fd")?;
            Some((vars, k.db.cert_der()?))
        }
        _ => None,
    };

    // Predict from the partition table alone (all PCR 5 sees of the disk), then embed.
    let disk_tmp = out.temp("disk.raw");
    gpt::write_table(&disk_tmp, &layout)?;
    let measured_table = gpt::gpt_event_data(&disk_tmp)?;
    let golden_json = predict_golden(
        spec,
        &opts.lock,
        &inputs,
        &uki,
        workload.as_ref(),
        &disk_tmp,
        enrolled.as_ref(),
    )?;
    let golden_sig = golden_key
        .as_ref()
        .map(|key| sign_golden(key, &golden_json))
        .transpose()?;
    let esp_img = boot::esp(
        &stages,
        spec,
        &uki,
        &golden_esp_files(&golden_json, golden_sig.as_deref()),
    )?;
    ensure!(
        esp_img.size == esp_plain.size,
        "the ESP with the golden measurement is {} bytes, the planned one {} bytes",
        esp_img.size,
        esp_plain.size
    );
    parts
        .iter_mut()
        .find(|p| p.type_guid == gpt::ESP_TYPE)
        .context("the partition plan has no ESP")?
        .source = esp_img.path.clone();

    eprintln!("cvm-image: writing disk ({} MiB)", layout.size_bytes >> 20);
    gpt::write_disk(&disk_tmp, &layout, &parts)?;
    ensure!(
        gpt::gpt_event_data(&disk_tmp)? == measured_table,
        "internal error: embedding the golden measurement changed the measured partition table \
         of {}",
        disk_tmp.display()
    );
    let artifacts = write_artifacts(spec, opts, &disk_tmp)?;
    let uki_tmp = out.temp("uki.efi");
    std::fs::copy(&uki.path, &uki_tmp)
        .with_context(|| format!("cannot write {}", uki_tmp.display()))?;

    let mut listed = artifacts.clone();
    if let Some(sb) = &secure_boot {
        listed.extend(sb.files.iter().cloned());
    }

    let manifest = manifest::assemble(manifest::Parts {
        spec,
        inputs: &inputs,
        guest: &guest,
        layout: &layout,
        root: &root,
        workload: workload.as_ref(),
        initrd: &initrd,
        uki: &uki,
        esp: &esp_img,
        disk: &disk_tmp,
        artifacts: &listed,
        secure_boot: secure_boot.as_ref().map(|sb| &sb.info),
    })?;
    let golden_tmp = out.temp(golden::FILE);
    std::fs::write(&golden_tmp, &golden_json)
        .with_context(|| format!("cannot write {}", golden_tmp.display()))?;
    if let Some(sig) = &golden_sig {
        let sig_tmp = out.temp(GOLDEN_SIG_FILE);
        std::fs::write(&sig_tmp, sig)
            .with_context(|| format!("cannot write {}", sig_tmp.display()))?;
    }
    let manifest_tmp = out.temp("manifest.json");
    std::fs::write(&manifest_tmp, manifest.to_json()?)
        .with_context(|| format!("cannot write {}", manifest_tmp.display()))?;

    let mut names = vec!["disk.raw", "uki.efi", "manifest.json", golden::FILE];
    if golden_sig.is_some() {
        names.push(GOLDEN_SIG_FILE);
    }
    names.extend(artifacts.iter().map(|(name, _)| name.as_str()));
    if let Some(sb) = &secure_boot {
        names.extend(sb.commit.iter().copied());
    }
    out.commit(&names)?;
    Ok(BuildResult {
        out: opts.out.clone(),
        manifest,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The owner's Secure Boot keys, loaded before any expensive stage so a bad key directory fails fast.
fn load_keys(opts: &Options) -> Result<Option<secureboot::keys::SecureBootKeys>> {
    let Some(dir) = &opts.keys else {
        return Ok(None);
    };
    secureboot::keys::load(dir).map(Some).with_context(|| {
        format!(
            "cannot load the Secure Boot keys of {} (create them with `cvm-image keys generate --dir {}`)",
            dir.display(),
            dir.display()
        )
    })
}

/// The golden-measurement signing key, loaded before any expensive stage so a bad key fails fast.
fn load_golden_key(opts: &Options) -> Result<Option<golden_sign::SigningKey>> {
    let Some(path) = &opts.golden_key else {
        return Ok(None);
    };
    golden_sign::load_signing_key(path)
        .map(Some)
        .with_context(|| {
            format!(
            "cannot load the golden-measurement signing key {} (`cvm-image keys generate` writes \
             golden.key)",
            path.display()
        )
        })
}

/// The detached signature file (`golden_sign`'s JSON) over the exact golden bytes.
/// Deterministic: ECDSA is RFC 6979, RSA is PKCS#1 v1.5.
fn sign_golden(key: &golden_sign::SigningKey, golden_json: &[u8]) -> Result<Vec<u8>> {
    let sig = key
        .sign(golden_json)
        .context("signing the golden measurement")?;
    Ok(golden_sign::render(&sig)?.into_bytes())
}

/// The ESP files that carry the golden measurement (and its signature).
fn golden_esp_files<'a>(golden_json: &'a [u8], sig: Option<&'a [u8]>) -> Vec<esp::EspFile<'a>> {
    let mut files = vec![esp::EspFile {
        path: boot::ESP_GOLDEN_PATH,
        data: golden_json,
    }];
    if let Some(sig) = sig {
        files.push(esp::EspFile {
            path: boot::ESP_GOLDEN_SIG_PATH,
            data: sig,
        });
    }
    files
}

/// `cvm-image measure`: the prediction alone. Runs the (cached) build in a scratch directory — the GPT
/// event needs the disk's partition table — and keeps only `golden-measurement.json` in `opts.out`.
pub fn measure(spec: &Spec, opts: &Options) -> Result<PathBuf> {
    let scratch = opts.out.join(".measure.tmp");
    let _ = std::fs::remove_dir_all(&scratch);
    let inner = Options {
        out: scratch.clone(),
        lock: opts.lock.clone(),
        cache: opts.cache.clone(),
        targets: vec![],
        keys: opts.keys.clone(),
        golden_key: opts.golden_key.clone(),
    };
    let result = build(spec, &inner).and_then(|_| {
        let dest = opts.out.join(golden::FILE);
        std::fs::rename(scratch.join(golden::FILE), &dest)
            .with_context(|| format!("cannot write {}", dest.display()))?;
        let sig = opts.out.join(GOLDEN_SIG_FILE);
        match std::fs::rename(scratch.join(GOLDEN_SIG_FILE), &sig) {
            Ok(()) => {}
            // Unsigned: no signature may stay beside the new file.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = std::fs::remove_file(&sig);
            }
            Err(e) => return Err(e).with_context(|| format!("cannot write {}", sig.display())),
        }
        Ok(dest)
    });
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// The requested CSP/VMM artifacts, each holding exactly this disk.raw; identifiers in them (VMDK CID,
/// VHD unique id) are derived from the disk's content.
fn write_artifacts(
    spec: &Spec,
    opts: &Options,
    disk: &std::path::Path,
) -> Result<Vec<(String, PathBuf)>> {
    if opts.targets.is_empty() {
        return Ok(vec![]);
    }
    let seed = ids::sha256_file(disk)?;
    for t in &opts.targets {
        eprintln!("cvm-image: writing the {t} artifact");
    }
    formats::write_artifacts(
        &opts.targets,
        disk,
        &opts.out,
        spec.image.source_date_epoch,
        &seed,
    )
}

/// Predict the boot of the image and return the golden measurements (pretty JSON, newline-ended).
/// `disk` needs only its partition table. With Secure Boot (`enrolled` = the enrolled VARS store
/// and the db certificate that signed the UKI), PCR 7 comes from that store and systemd-stub 252
/// loads the kernel without a PCR 4 event.
fn predict_golden(
    spec: &Spec,
    lock: &std::path::Path,
    inputs: &fetch::Fetched,
    uki: &boot::Uki,
    workload: Option<&verity_image::VerityImage>,
    disk: &std::path::Path,
    enrolled: Option<&(PathBuf, Vec<u8>)>,
) -> Result<Vec<u8>> {
    let workload = match workload {
        Some(w) => predict::workload_events_for_hash(&w.info.root_hash, spec)?,
        None => Vec::new(),
    };
    let mut events = predict::expected_events(
        &uki.path,
        disk,
        &inputs.ovmf_vars,
        &workload,
        &predict::BANKS,
    )?;
    if let Some((vars, db_cert)) = enrolled {
        let store =
            std::fs::read(vars).with_context(|| format!("cannot read {}", vars.display()))?;
        let pcr7 = secureboot::pcr7_expected(&store, db_cert, &predict::BANKS)?;
        let at = events
            .iter()
            .position(|e| e.pcr == 7)
            .unwrap_or(events.len());
        events.retain(|e| {
            e.pcr != 7 && e.description != cvm_measure::predict::pcr4::KERNEL_DESCRIPTION
        });
        events.splice(at.min(events.len())..at.min(events.len()), pcr7);
    }
    // qemu PCR 0/1: the recorded reference boot pinned in the lock (src/reference).
    let firmware = crate::reference::for_build(lock, spec, inputs, enrolled.is_some())?;
    let g = golden::golden(
        &spec.image.name,
        &spec.image.version,
        &uki.meta.sha256,
        enrolled.is_some(),
        &events,
        &firmware,
    )?;
    let mut json = serde_json::to_vec_pretty(&g)?;
    json.push(b'\n');
    Ok(json)
}

fn build_guest(spec: &Spec) -> Result<GuestBinaries> {
    let ws = guest::find_workspace(&spec.dir)?;
    let extra: Vec<(String, String)> = spec
        .workload
        .iter()
        .flat_map(|w| {
            w.binaries
                .iter()
                .map(|b| (b.package.clone(), b.bin.clone()))
        })
        .collect();
    guest::build(&ws, &extra)
}

/// Size a partition: "fit" rounds the content up to 1 MiB plus headroom; a fixed size must hold it.
fn part_size(spec: &Spec, key: &str, want: PartSize, content: u64) -> Result<u64> {
    let aligned = content.div_ceil(gpt::ALIGN) * gpt::ALIGN;
    match want {
        PartSize::Fit => {
            let extra = aligned / 100 * u64::from(spec.partitions.headroom_percent);
            Ok((aligned + extra).div_ceil(gpt::ALIGN) * gpt::ALIGN)
        }
        PartSize::Bytes(n) if n < content => bail!(
            "{}: [partitions] {key} is {} bytes but its content needs {} bytes ({} MiB); raise it or use \"fit\"",
            spec.path.display(),
            n,
            content,
            aligned >> 20
        ),
        PartSize::Bytes(n) => Ok(n),
    }
}

fn partitions(
    spec: &Spec,
    esp_img: &boot::EspImage,
    root: &verity_image::VerityImage,
    workload: Option<&verity_image::VerityImage>,
) -> Result<Vec<PartitionPlan>> {
    let p = &spec.partitions;
    let mut parts = vec![PartitionPlan {
        name: "esp".into(),
        type_guid: gpt::ESP_TYPE,
        uuid: ids::uuid("esp-partition", &[&esp_img.sha256]),
        source: esp_img.path.clone(),
        size: esp_img.size,
        attributes: 0,
    }];
    parts.extend(root.partitions(
        spec,
        ("root-x86-64", gpt::ROOT_X86_64_TYPE),
        ("root-x86-64-verity", gpt::ROOT_VERITY_X86_64_TYPE),
        |content| part_size(spec, "root", p.root, content),
    )?);
    if let Some(w) = workload {
        parts.extend(w.partitions(
            spec,
            ("workload", gpt::WORKLOAD_TYPE),
            ("workload-verity", gpt::WORKLOAD_VERITY_TYPE),
            |content| part_size(spec, "workload", p.workload, content),
        )?);
    }
    // The ESP size rule: "fit" is decided by the ESP stage (FAT32 minimum); a fixed size is checked there.
    let _ = p.esp;
    Ok(parts)
}
