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
use cvm_measure::eventlog::ExpectedEvent;
use cvm_verify::golden_sign;
use std::path::{Path, PathBuf};

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

/// Build the image described by `spec` into `opts.out`: one step per line (see the module docs
/// for why the ESP is built twice).
pub fn build(spec: &Spec, opts: &Options) -> Result<BuildResult> {
    let started = std::time::Instant::now();
    let cx = BuildContext::new(spec, opts)?;
    let inputs = fetch::fetch(spec, &opts.lock, &opts.cache)?;
    let guest = build_guest(spec)?;
    let root = cx.root(&guest)?;
    let workload = cx.workload(&guest)?;
    let initrd = boot::initramfs(&cx.stages, spec, &inputs, &guest, &root, &cx.target_names)?;
    let uki = cx.uki(&inputs, &initrd)?;
    let esp_plain = boot::esp(&cx.stages, spec, &uki, &[])?;
    let mut parts = partitions(spec, &esp_plain, &root, workload.as_ref())?;
    let layout = cx.layout(&uki, &root, &parts)?;
    let secure_boot = cx.secure_boot_outputs(&inputs)?;
    let disk = cx.out.temp("disk.raw");
    let measured_table = write_partition_table(&disk, &layout)?;
    let golden = cx.predict(
        &inputs,
        &uki,
        workload.as_ref(),
        &disk,
        secure_boot.as_ref(),
    )?;
    let esp = cx.esp_with_golden(&uki, &esp_plain, &golden, &mut parts)?;
    write_disk(&disk, &layout, &parts, &measured_table)?;
    let artifacts = write_artifacts(spec, opts, &disk)?;
    cx.copy_output("uki.efi", &uki.path)?;
    let manifest = manifest::assemble(manifest::Parts {
        spec,
        inputs: &inputs,
        guest: &guest,
        layout: &layout,
        root: &root,
        workload: workload.as_ref(),
        initrd: &initrd,
        uki: &uki,
        esp: &esp,
        disk: &disk,
        artifacts: &listed_outputs(artifacts, secure_boot.as_ref()),
        secure_boot: secure_boot.as_ref().map(|sb| &sb.outputs.info),
        predicted: &golden.events,
    })?;
    cx.write_golden(&golden)?;
    cx.write_output("manifest.json", &manifest.to_json()?)?;
    cx.out.commit_written()?;
    Ok(BuildResult {
        out: opts.out.clone(),
        manifest,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// What every step of a build works with: the spec and options, the output directory, the stage
/// cache and the keys (loaded first, so a bad key fails before any expensive stage).
struct BuildContext<'a> {
    spec: &'a Spec,
    opts: &'a Options,
    out: OutputDir,
    stages: StageCache,
    keys: Option<secureboot::keys::SecureBootKeys>,
    golden_key: Option<golden_sign::SigningKey>,
    /// The `--target`s by name: their spec sections add drivers and command-line words.
    target_names: Vec<String>,
}

/// The Secure Boot outputs written and what the prediction needs of them: the enrolled VARS
/// store and the db certificate that signed the UKI.
struct SecureBoot {
    outputs: secureboot::SecureBootOutputs,
    enrolled: (PathBuf, Vec<u8>),
}

/// The golden measurement (pretty JSON, newline-ended) and its detached signature, if signed.
struct GoldenFile {
    json: Vec<u8>,
    sig: Option<Vec<u8>>,
    /// The predicted boot the file was made from; the manifest's PCR values come from it too.
    events: Vec<ExpectedEvent>,
}

impl<'a> BuildContext<'a> {
    fn new(spec: &'a Spec, opts: &'a Options) -> Result<Self> {
        Ok(BuildContext {
            spec,
            opts,
            out: OutputDir::prepare(&opts.out)?,
            stages: StageCache::new(opts.cache.clone()),
            keys: load_keys(opts)?,
            golden_key: load_golden_key(opts)?,
            target_names: opts.targets.iter().map(|t| t.to_string()).collect(),
        })
    }

    fn root(&self, guest: &GuestBinaries) -> Result<verity_image::VerityImage> {
        let tree = rootfs::root_tree(self.spec, guest)?;
        verity_image::build(&self.stages, "root", &tree, self.spec)
    }

    fn workload(&self, guest: &GuestBinaries) -> Result<Option<verity_image::VerityImage>> {
        let Some(w) = &self.spec.workload else {
            return Ok(None);
        };
        let tree = rootfs::workload_tree(w, guest)?;
        verity_image::build(&self.stages, "workload", &tree, self.spec).map(Some)
    }

    /// The UKI, signed with db when Secure Boot keys are given.
    fn uki(&self, inputs: &fetch::Fetched, initrd: &boot::Initrd) -> Result<boot::Uki> {
        let uki = boot::uki(&self.stages, self.spec, inputs, initrd, &self.target_names)?;
        match &self.keys {
            Some(k) => secureboot::sign_uki(&self.stages, &uki, k),
            None => Ok(uki),
        }
    }

    /// The disk layout; the disk GUID follows from the UKI and the root hash.
    fn layout(
        &self,
        uki: &boot::Uki,
        root: &verity_image::VerityImage,
        parts: &[PartitionPlan],
    ) -> Result<gpt::DiskLayout> {
        let disk_guid = ids::uuid("disk-guid", &[&uki.sha256, &root.info.root_hash]);
        let multiple = formats::size_multiple(&self.opts.targets);
        gpt::plan(disk_guid, parts, multiple, 0)
    }

    /// With keys: OVMF_VARS.fd with them enrolled and secure-boot/, written to the output dir.
    fn secure_boot_outputs(&self, inputs: &fetch::Fetched) -> Result<Option<SecureBoot>> {
        let Some(keys) = &self.keys else {
            return Ok(None);
        };
        let outputs = secureboot::write_outputs(&self.out, &inputs.ovmf_vars, keys)?;
        let vars = outputs
            .files
            .iter()
            .find(|(name, _)| name == secureboot::OVMF_VARS_OUTPUT)
            .map(|(_, path)| path.clone())
            .context("the Secure Boot outputs have no OVMF_VARS.fd")?;
        let enrolled = (vars, keys.db.cert_der()?);
        Ok(Some(SecureBoot { outputs, enrolled }))
    }

    /// Predict the boot from the partition table alone (all PCR 5 sees of the disk) and sign it.
    fn predict(
        &self,
        inputs: &fetch::Fetched,
        uki: &boot::Uki,
        workload: Option<&verity_image::VerityImage>,
        disk: &Path,
        secure_boot: Option<&SecureBoot>,
    ) -> Result<GoldenFile> {
        let enrolled = secure_boot.map(|sb| &sb.enrolled);
        let events = predict_events(self.spec, inputs, uki, workload, disk, enrolled)?;
        let json = render_golden(self.spec, &self.opts.lock, inputs, uki, &events, enrolled)?;
        let sig = self
            .golden_key
            .as_ref()
            .map(|key| sign_golden(key, &json))
            .transpose()?;
        Ok(GoldenFile { json, sig, events })
    }

    /// The ESP rebuilt with the golden file embedded, in place of the UKI-only one in `parts`; it
    /// must keep the planned size, so the partition table (and so the prediction) stays valid.
    fn esp_with_golden(
        &self,
        uki: &boot::Uki,
        planned: &boot::EspImage,
        golden: &GoldenFile,
        parts: &mut [PartitionPlan],
    ) -> Result<boot::EspImage> {
        let files = golden_esp_files(&golden.json, golden.sig.as_deref());
        let esp = boot::esp(&self.stages, self.spec, uki, &files)?;
        ensure!(
            esp.size == planned.size,
            "the ESP with the golden measurement is {} bytes, the planned one {} bytes",
            esp.size,
            planned.size
        );
        parts
            .iter_mut()
            .find(|p| p.type_guid == gpt::ESP_TYPE)
            .context("the partition plan has no ESP")?
            .source = esp.path.clone();
        Ok(esp)
    }

    fn write_golden(&self, golden: &GoldenFile) -> Result<()> {
        self.write_output(golden::FILE, &golden.json)?;
        match &golden.sig {
            Some(sig) => self.write_output(GOLDEN_SIG_FILE, sig),
            None => Ok(()),
        }
    }

    /// Write the output `name` under its temporary name (committed at the end of the build).
    fn write_output(&self, name: &str, data: &[u8]) -> Result<()> {
        let tmp = self.out.temp(name);
        std::fs::write(&tmp, data).with_context(|| format!("cannot write {}", tmp.display()))
    }

    fn copy_output(&self, name: &str, from: &Path) -> Result<()> {
        let tmp = self.out.temp(name);
        std::fs::copy(from, &tmp)
            .map(drop)
            .with_context(|| format!("cannot write {}", tmp.display()))
    }
}

/// Write the GPT alone (the prediction reads nothing else of the disk) and return the bytes the
/// firmware measures of it into PCR 5.
fn write_partition_table(disk: &Path, layout: &gpt::DiskLayout) -> Result<Vec<u8>> {
    gpt::write_table(disk, layout)?;
    gpt::gpt_event_data(disk)
}

/// Write the whole disk and check that its measured partition table is the predicted one.
fn write_disk(
    disk: &Path,
    layout: &gpt::DiskLayout,
    parts: &[PartitionPlan],
    measured_table: &[u8],
) -> Result<()> {
    eprintln!("cvm-image: writing disk ({} MiB)", layout.size_bytes >> 20);
    gpt::write_disk(disk, layout, parts)?;
    ensure!(
        gpt::gpt_event_data(disk)? == measured_table,
        "internal error: embedding the golden measurement changed the measured partition table \
         of {}",
        disk.display()
    );
    Ok(())
}

/// The extra outputs the manifest lists: the artifacts, then the Secure Boot files.
fn listed_outputs(
    mut artifacts: Vec<(String, PathBuf)>,
    secure_boot: Option<&SecureBoot>,
) -> Vec<(String, PathBuf)> {
    if let Some(sb) = secure_boot {
        artifacts.extend(sb.outputs.files.iter().cloned());
    }
    artifacts
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
        path: cvm_disk::esp_paths::GOLDEN,
        data: golden_json,
    }];
    if let Some(sig) = sig {
        files.push(esp::EspFile {
            path: cvm_disk::esp_paths::GOLDEN_SIG,
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
/// The expected events of a boot of the image on the qemu profile, in every bank of
/// [`predict::BANKS`]; with `enrolled` (the enrolled VARS and the db certificate), Secure Boot's PCR 7.
fn predict_events(
    spec: &Spec,
    inputs: &fetch::Fetched,
    uki: &boot::Uki,
    workload: Option<&verity_image::VerityImage>,
    disk: &std::path::Path,
    enrolled: Option<&(PathBuf, Vec<u8>)>,
) -> Result<Vec<ExpectedEvent>> {
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
    Ok(events)
}

/// `golden-measurement.json` for the predicted `events`.
fn render_golden(
    spec: &Spec,
    lock: &std::path::Path,
    inputs: &fetch::Fetched,
    uki: &boot::Uki,
    events: &[ExpectedEvent],
    enrolled: Option<&(PathBuf, Vec<u8>)>,
) -> Result<Vec<u8>> {
    // qemu PCR 0/1: the recorded reference boot pinned in the lock (src/reference).
    let firmware = crate::reference::for_build(lock, spec, inputs, enrolled.is_some())?;
    let image = golden::ImageRef {
        name: spec.image.name.clone(),
        version: spec.image.version.clone(),
        uki_sha256: uki.meta.sha256.clone(),
        security_version: spec.image.security_version,
    };
    let g = golden::golden(image, enrolled.is_some(), events, &firmware)?;
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
