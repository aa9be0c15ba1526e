//! Opening the workload: measure its root hash into PCR 23 *before* touching its contents, open and
//! mount it with dm-verity, measure its manifest, and log both extends.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;

use anyhow::{ensure, Context, Result};
use cvm_measure::boot_config::{format_uuid, WorkloadConfig};
use cvm_measure::eventlog::HashAlg as Bank;
use cvm_measure::workload::{
    encode_record, manifest_event, root_hash_event, RuntimeEvent, RUNTIME_EVENT_LOG_PATH,
};
use cvm_tpm::{HashAlg as TpmAlg, Tpm};
use rustix::mount::MountFlags;

use crate::blockdev::Partition;
use crate::console;
use crate::verity::{parse_superblock, VerityParams, SUPERBLOCK_LEN};

/// Device-mapper name of the workload device.
const DM_NAME: &str = "workload";
/// `O_NOFOLLOW`: the manifest must be a regular file inside the verified tree, never a symlink
/// that could point outside it.
const O_NOFOLLOW: i32 = 0o400000;

/// Appends extends to the runtime event log, numbering records from 0.
pub struct EventLog {
    file: File,
    path: String,
    next: u64,
}

impl EventLog {
    /// Creates the log under `sysroot` (its /run is a fresh tmpfs).
    pub fn create(sysroot: &str) -> Result<Self> {
        let path = format!("{sysroot}{RUNTIME_EVENT_LOG_PATH}");
        if let Some(dir) = std::path::Path::new(&path).parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("creating the runtime event log {path}"))?;
        Ok(EventLog {
            file,
            path,
            next: 0,
        })
    }

    /// Extends the TPM (every bank of the event in one command), then records the event (the log
    /// describes what the TPM holds).
    pub fn measure(&mut self, tpm: &mut Tpm, event: &RuntimeEvent) -> Result<()> {
        let digests = event
            .digests
            .iter()
            .map(|(bank, d)| Ok((tpm_alg(*bank)?, d.as_slice())))
            .collect::<Result<Vec<_>>>()?;
        tpm.pcr_extend_banks(event.pcr, &digests)
            .with_context(|| format!("extending PCR {} with {:?}", event.pcr, event.description))?;
        self.file
            .write_all(encode_record(self.next, event).as_bytes())
            .with_context(|| format!("writing {}", self.path))?;
        self.next += 1;
        let banks: Vec<String> = event.digests.keys().map(|b| b.name()).collect();
        let sha256 = event.digest(Bank::SHA256).map(hex::encode);
        console::info(&format!(
            "measured {:?} into PCR {} ({}): sha256 {}",
            event.description,
            event.pcr,
            banks.join(", "),
            sha256.as_deref().unwrap_or("-")
        ));
        Ok(())
    }
}

/// The TPM's algorithm for a bank of the measurement model.
fn tpm_alg(bank: Bank) -> Result<TpmAlg> {
    TpmAlg::from_alg_id(bank.0).with_context(|| format!("the TPM client cannot extend bank {bank}"))
}

/// The active PCR banks to measure into: all of them, so that no bank of PCR 23 is left at its
/// reset value (where it would name no workload and could later be extended to any value). A bank
/// whose hash the init cannot compute (e.g. SM3) is reported on the console and left out.
fn measured_banks(tpm: &mut Tpm) -> Result<Vec<Bank>> {
    let mut banks = Vec::new();
    for b in tpm.pcr_banks().context("listing the TPM's PCR banks")? {
        if !b.is_active() {
            continue;
        }
        let bank = Bank(b.alg_id);
        if cvm_measure::workload::HASHABLE_BANKS.contains(&bank) {
            banks.push(bank);
        } else {
            console::info(&format!(
                "warning: PCR bank {bank} is active but cannot be extended by this init; \
                 PCR 23 of that bank attests nothing"
            ));
        }
    }
    ensure!(
        !banks.is_empty(),
        "the TPM has no active SHA-1/SHA-2 PCR bank to measure the workload into"
    );
    banks.sort();
    Ok(banks)
}

/// Reads the first block of the hash partition (the verity superblock).
fn read_superblock(hash: &Partition) -> Result<crate::verity::Superblock> {
    let mut sb = vec![0u8; SUPERBLOCK_LEN];
    File::open(hash.node())
        .and_then(|mut f| f.read_exact(&mut sb))
        .with_context(|| format!("reading the verity superblock of {}", hash.node()))?;
    parse_superblock(&sb).with_context(|| format!("workload hash partition {}", hash.name))
}

/// Measures, opens and mounts the workload at `sysroot` + `cfg.mount_point`.
pub fn open_and_measure(
    cfg: &WorkloadConfig,
    data: &Partition,
    hash: &Partition,
    sysroot: &str,
) -> Result<()> {
    let root_hash = cvm_disk::verity_pair::root_hash(&data.uuid, &hash.uuid);
    console::info(&format!(
        "workload: data {} hash {}; root hash {} (from PARTUUIDs {} {})",
        data.name,
        hash.name,
        hex::encode(root_hash),
        format_uuid(&data.uuid),
        format_uuid(&hash.uuid)
    ));
    let mut tpm = Tpm::open_device().context("opening the TPM to measure the workload")?;
    let banks = measured_banks(&mut tpm)?;
    let mut log = EventLog::create(sysroot)?;
    // Event 1 goes in before a single byte of the workload partitions is read.
    log.measure(&mut tpm, &root_hash_event(&root_hash, &banks))?;

    let sb = read_superblock(hash)?;
    let params = VerityParams {
        data_dev: data.dev.clone(),
        hash_dev: hash.dev.clone(),
        data_blocks: sb.data_blocks,
        hash_start_block: 1,
        root_hash,
        salt: sb.salt,
    };
    let target = format!("{sysroot}{}", cfg.mount_point);
    crate::open_verity(
        DM_NAME,
        data,
        &params,
        &cfg.fstype,
        &target,
        MountFlags::NODEV | MountFlags::NOSUID,
    )?;

    let manifest_path = format!("{target}/{}", cfg.manifest);
    let manifest = read_regular_file(&manifest_path)?;
    log.measure(&mut tpm, &manifest_event(&cfg.manifest, &manifest, &banks))?;
    Ok(())
}

/// Reads a file that must be a regular file reached without following a final symlink.
fn read_regular_file(path: &str) -> Result<Vec<u8>> {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("opening the workload manifest {path} (it must be a regular file in the workload image)"))?;
    let meta = f.metadata().with_context(|| format!("stat {path}"))?;
    ensure!(
        meta.is_file(),
        "workload manifest {path} is not a regular file"
    );
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).with_context(|| {
        format!("reading {path} (a verity error here means the workload image is corrupted)")
    })?;
    Ok(bytes)
}
