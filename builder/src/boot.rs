//! Stages of the boot chain: initramfs (init + module closure + boot config) → UKI → ESP.
//!
//! The initramfs carries the ROOT verity hash only. The workload pair is found at boot by partition
//! type and its root hash read from its partition UUIDs, so the base image (ESP + root) is identical for
//! every workload.

use crate::fetch::Fetched;
use crate::guest::GuestBinaries;
use crate::initramfs::{self, Entry, EntryKind};
use crate::kmod::{Closure, ModuleIndex, ModuleInfo};
use crate::spec::{PartSize, Spec};
use crate::stages::StageCache;
use crate::verity_image::VerityImage;
use crate::{esp, gpt, ids, rootfs, uki};
use anyhow::{bail, Context, Result};
use cvm_disk::esp_paths;
use cvm_measure::boot_config::{self, BootConfig, BOOT_CONFIG_PATH};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Seconds the init waits for the disk's partitions before it gives up and powers off.
pub const DEVICE_TIMEOUT_SECS: u32 = 30;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitrdMeta {
    pub sha256: String,
    pub size: u64,
    pub kernel_version: String,
    /// Modules in load order (paths inside the initramfs).
    pub modules: Vec<String>,
    /// Requested modules that are built into this kernel.
    pub builtin: Vec<String>,
    pub boot_config: BootConfig,
}

pub struct Initrd {
    pub path: PathBuf,
    pub meta: InitrdMeta,
}

/// The boot config the init reads: the root's verity parameters and where to find the workload.
fn boot_config(
    root: &VerityImage,
    modules: Vec<String>,
    optional_modules: Vec<String>,
) -> BootConfig {
    let (data, hash) = root.partition_uuids();
    BootConfig {
        version: boot_config::BOOT_CONFIG_VERSION,
        modules,
        optional_modules,
        root: boot_config::RootConfig {
            data_partuuid: data.to_string(),
            hash_partuuid: hash.to_string(),
            root_hash: hex::encode(root.info.root_hash),
            salt: hex::encode(root.info.salt),
            data_blocks: root.info.data_blocks,
            hash_start_block: 1,
            fstype: "squashfs".into(),
        },
        workload: Some(boot_config::WorkloadConfig {
            data_type_guid: gpt::WORKLOAD_TYPE.to_string(),
            hash_type_guid: gpt::WORKLOAD_VERITY_TYPE.to_string(),
            mount_point: rootfs::WORKLOAD_MOUNT.into(),
            manifest: rootfs::WORKLOAD_MANIFEST.into(),
            fstype: "squashfs".into(),
        }),
        agent: boot_config::AgentConfig {
            path: rootfs::AGENT_PATH.into(),
            args: vec![],
        },
        device_timeout_secs: DEVICE_TIMEOUT_SECS,
    }
}

/// The initramfs: the static init, the boot config and the kernel modules the spec asks for (and
/// the targets' optional ones this kernel has), as a reproducible zstd cpio.
pub fn initramfs(
    stages: &StageCache,
    spec: &Spec,
    inputs: &Fetched,
    guest: &GuestBinaries,
    root: &VerityImage,
    targets: &[String],
) -> Result<Initrd> {
    let init = std::fs::read(&guest.init)
        .with_context(|| format!("cannot read {}", guest.init.display()))?;
    let index = ModuleIndex::open(&inputs.modules_dir)?;
    let mods = InitrdModules::resolve(&index, spec, targets)?;
    let config = boot_config(root, mods.required.clone(), mods.optional.clone());
    let config_json = serde_json::to_vec_pretty(&config)?;
    let epoch = spec.image.source_date_epoch;
    let key: [&[u8]; 4] = [
        &ids::sha256(&init),
        inputs.kernel_sha256.as_bytes(),
        &config_json,
        &epoch.to_le_bytes(),
    ];
    let (dir, meta) = stages.get_or_build("initramfs", &key, |dir| {
        eprintln!(
            "cvm-image: initramfs: {} modules for {}",
            mods.closure.modules.len(),
            index.kernel_version()
        );
        let entries = initrd_entries(&init, &config_json, &index, &mods)?;
        let cpio = initramfs::write_cpio(entries, u32::try_from(epoch).unwrap_or(u32::MAX))?;
        let compressed = initramfs::compress(&cpio, initramfs::Compression::Zstd)?;
        std::fs::write(dir.join("initrd.img"), &compressed)?;
        Ok(InitrdMeta {
            sha256: hex::encode(ids::sha256(&compressed)),
            size: compressed.len() as u64,
            kernel_version: index.kernel_version().to_string(),
            modules: mods
                .required
                .iter()
                .chain(&mods.optional)
                .cloned()
                .collect(),
            builtin: mods.builtin(),
            boot_config: config.clone(),
        })
    })?;
    Ok(Initrd {
        path: dir.join("initrd.img"),
        meta,
    })
}

/// The modules of an initramfs: the spec's closure, then the optional modules not already in it.
struct InitrdModules {
    closure: Closure,
    optional_closure: Closure,
    /// The optional closure's modules that the required closure does not load.
    optional_mods: Vec<ModuleInfo>,
    module_dir: String,
    /// Paths inside the initramfs, in load order.
    required: Vec<String>,
    optional: Vec<String>,
}

impl InitrdModules {
    fn resolve(index: &ModuleIndex, spec: &Spec, targets: &[String]) -> Result<Self> {
        let profile = || {
            format!(
                "kernel profile {}: module list",
                spec.kernel_profile.display()
            )
        };
        let closure = index.closure(&spec.kernel.modules).with_context(profile)?;
        // Optional modules (TEE guest drivers) this kernel has, with their dependencies not already loaded.
        let present: Vec<String> = spec
            .optional_modules(targets)
            .iter()
            .filter(|m| index.contains(m))
            .cloned()
            .collect();
        let optional_closure = index.closure(&present).with_context(profile)?;
        let required: Vec<&str> = closure
            .modules
            .iter()
            .map(|m| m.rel_path.as_str())
            .collect();
        let optional_mods: Vec<ModuleInfo> = optional_closure
            .modules
            .iter()
            .filter(|m| !required.contains(&m.rel_path.as_str()))
            .cloned()
            .collect();
        let module_dir = format!("lib/modules/{}", index.kernel_version());
        let path_of = |m: &ModuleInfo| format!("{module_dir}/{}", m.rel_path);
        let required = closure.modules.iter().map(path_of).collect();
        let optional = optional_mods.iter().map(path_of).collect();
        Ok(InitrdModules {
            closure,
            optional_closure,
            optional_mods,
            module_dir,
            required,
            optional,
        })
    }

    /// Requested modules built into this kernel (required first).
    fn builtin(&self) -> Vec<String> {
        self.closure
            .builtin
            .iter()
            .chain(&self.optional_closure.builtin)
            .cloned()
            .collect()
    }
}

/// The initramfs's files: the init, its boot config, the mount points and the modules.
fn initrd_entries(
    init: &[u8],
    config_json: &[u8],
    index: &ModuleIndex,
    mods: &InitrdModules,
) -> Result<Vec<Entry>> {
    let mut entries = vec![
        Entry {
            path: "init".into(),
            mode: 0o755,
            kind: EntryKind::File(init.to_vec()),
        },
        Entry {
            path: BOOT_CONFIG_PATH.into(),
            mode: 0o644,
            kind: EntryKind::File(config_json.to_vec()),
        },
    ];
    for dir in ["dev", "proc", "sys", "run", "sysroot"] {
        entries.push(Entry {
            path: dir.into(),
            mode: 0o755,
            kind: EntryKind::Dir,
        });
    }
    for m in mods.closure.modules.iter().chain(&mods.optional_mods) {
        entries.push(Entry {
            path: format!("{}/{}", mods.module_dir, m.rel_path),
            mode: 0o644,
            kind: EntryKind::File(index.read_module(m)?),
        });
    }
    Ok(entries)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UkiMeta {
    pub sha256: String,
    pub size: u64,
    pub stub_version: String,
    pub cmdline: String,
    pub sections: Vec<uki::SectionInfo>,
}

pub struct Uki {
    pub path: PathBuf,
    pub sha256: [u8; 32],
    pub meta: UkiMeta,
}

pub fn uki(
    stages: &StageCache,
    spec: &Spec,
    inputs: &Fetched,
    initrd: &Initrd,
    targets: &[String],
) -> Result<Uki> {
    let read =
        |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let stub = read(&inputs.stub)?;
    let stub_info = uki::inspect_stub(&stub)
        .with_context(|| format!("systemd-stub {}", inputs.stub.display()))?;
    let kernel = read(&inputs.vmlinuz)?;
    let osrel = read(&spec.uki.os_release)?;
    let cmdline = spec.cmdline(targets)?;
    let initrd_bytes = read(&initrd.path)?;

    let (dir, meta) = stages.get_or_build(
        "uki",
        &[
            &ids::sha256(&stub),
            &ids::sha256(&kernel),
            &osrel,
            cmdline.as_bytes(),
            &ids::sha256(&initrd_bytes),
        ],
        |dir| {
            eprintln!(
                "cvm-image: uki: systemd-stub {} + kernel + initramfs",
                stub_info.version
            );
            let sections = vec![
                uki::Section {
                    name: ".osrel".into(),
                    data: osrel.clone(),
                },
                uki::Section {
                    name: ".cmdline".into(),
                    data: cmdline.as_bytes().to_vec(),
                },
                uki::Section {
                    name: ".initrd".into(),
                    data: initrd_bytes.clone(),
                },
                uki::Section {
                    name: ".linux".into(),
                    data: kernel.clone(),
                },
            ];
            let image = uki::assemble(&stub, &sections)?;
            let path = dir.join("uki.efi");
            std::fs::write(&path, &image)?;
            Ok(UkiMeta {
                sha256: hex::encode(ids::sha256(&image)),
                size: image.len() as u64,
                stub_version: stub_info.version.clone(),
                cmdline: cmdline.clone(),
                sections: uki::list_sections(&image)?,
            })
        },
    )?;
    let sha256 = hex::decode(&meta.sha256)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("bad cached uki hash"))?;
    Ok(Uki {
        path: dir.join("uki.efi"),
        sha256,
        meta,
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EspMeta {
    pub sha256: String,
    pub size: u64,
    pub volume_id: u32,
}

pub struct EspImage {
    pub path: PathBuf,
    pub sha256: [u8; 32],
    pub size: u64,
}

/// The ESP: the UKI at [`esp_paths::UKI`] plus `extra` files (the golden measurement).
///
/// Its size follows from the UKI alone (`[partitions] esp`, "fit" = [`esp::fit_size`] of the
/// UKI), so adding the small unmeasured files never changes the partition table; they must fit in
/// the headroom, which a failure names.
pub fn esp(
    stages: &StageCache,
    spec: &Spec,
    uki: &Uki,
    extra: &[esp::EspFile],
) -> Result<EspImage> {
    let uki_len = uki.meta.size;
    let size = esp_size(spec, uki_len);
    let epoch = spec.image.source_date_epoch;
    let volume_id = u32::from_le_bytes(uki.sha256[..4].try_into().expect("4 bytes"));
    let extra_key: Vec<u8> = extra
        .iter()
        .flat_map(|f| [f.path.as_bytes(), b"\0", &ids::sha256(f.data)].concat())
        .collect();
    let (size_le, epoch_le) = (size.to_le_bytes(), epoch.to_le_bytes());
    let mut key: Vec<&[u8]> = vec![&uki.sha256, &size_le, &epoch_le];
    // Without extra files the key (and so the cached stage) is the UKI-only ESP's, as before.
    if !extra.is_empty() {
        key.push(&extra_key);
    }
    let (dir, meta) = stages.get_or_build("esp", &key, |dir| {
        let data = std::fs::read(&uki.path)?;
        let path = dir.join("esp.img");
        let mut files = vec![esp::EspFile {
            path: esp_paths::UKI,
            data: &data,
        }];
        files.extend_from_slice(extra);
        let extra_len: u64 = extra.iter().map(|f| f.data.len() as u64).sum();
        esp::write_esp(&path, &files, size, volume_id, epoch).with_context(|| {
            format!(
                "{}: [partitions] esp = {} bytes cannot hold the {}-byte UKI and {} bytes of \
                 other files (golden measurement); raise it or use \"fit\"",
                spec.path.display(),
                size,
                uki_len,
                extra_len
            )
        })?;
        Ok(EspMeta {
            sha256: hex::encode(ids::sha256_file(&path)?),
            size,
            volume_id,
        })
    })?;
    if meta.size < uki_len {
        bail!("ESP smaller than the UKI");
    }
    let sha256 = hex::decode(&meta.sha256)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("bad cached esp hash"))?;
    Ok(EspImage {
        path: dir.join("esp.img"),
        sha256,
        size: meta.size,
    })
}

/// The ESP partition's size: `[partitions] esp`, or for "fit" the FAT32 size that holds the UKI
/// with headroom.
fn esp_size(spec: &Spec, uki_len: u64) -> u64 {
    match spec.partitions.esp {
        PartSize::Fit => esp::fit_size(uki_len),
        PartSize::Bytes(n) => n,
    }
}
