//! `cvm-image inspect DISK`: what is on a built disk, read back from the disk itself — partitions,
//! verity superblocks and root hashes, the UKI's sections and command line, and the PCR 11 it causes.

use crate::{esp, gpt, uki, verity};
use anyhow::{Context, Result};
use serde::Serialize;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

#[derive(Serialize)]
struct Report {
    disk: gpt::DiskLayout,
    verity: Vec<VerityReport>,
    uki: Option<UkiReport>,
}

#[derive(Serialize)]
struct VerityReport {
    hash_partition: String,
    /// Root hash as carried by the pair's partition UUIDs (data UUID ‖ hash UUID).
    root_hash_from_uuids: String,
    salt: String,
    data_blocks: u64,
}

#[derive(Serialize)]
struct UkiReport {
    sha256: String,
    size: u64,
    sections: Vec<uki::SectionInfo>,
    cmdline: String,
    predicted_pcr11: String,
}

fn read_range(disk: &Path, offset: u64, len: u64) -> Result<Vec<u8>> {
    let mut f =
        std::fs::File::open(disk).with_context(|| format!("cannot open {}", disk.display()))?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf)
        .with_context(|| format!("{}: short read at {offset}", disk.display()))?;
    Ok(buf)
}

fn verity_reports(disk: &Path, layout: &gpt::DiskLayout) -> Result<Vec<VerityReport>> {
    let mut out = vec![];
    for hash_part in layout
        .partitions
        .iter()
        .filter(|p| p.name.ends_with("-verity"))
    {
        let data_name = hash_part.name.trim_end_matches("-verity");
        let Some(data_part) = layout.partitions.iter().find(|p| p.name == data_name) else {
            continue;
        };
        let sb = read_range(
            disk,
            hash_part.first_lba * gpt::SECTOR,
            verity::SUPERBLOCK_SIZE as u64,
        )?;
        let sb = cvm_disk::verity_superblock::parse(&sb)
            .with_context(|| format!("partition {}", hash_part.name))?;
        let mut root = data_part.uuid.as_bytes().to_vec();
        root.extend_from_slice(hash_part.uuid.as_bytes());
        out.push(VerityReport {
            hash_partition: hash_part.name.clone(),
            root_hash_from_uuids: hex::encode(root),
            salt: hex::encode(&sb.salt),
            data_blocks: sb.data_blocks,
        });
    }
    Ok(out)
}

fn uki_report(disk: &Path, layout: &gpt::DiskLayout) -> Result<Option<UkiReport>> {
    let Some(esp_part) = layout
        .partitions
        .iter()
        .find(|p| p.type_guid == gpt::ESP_TYPE)
    else {
        return Ok(None);
    };
    let esp_img = read_range(disk, esp_part.first_lba * gpt::SECTOR, esp_part.size_bytes)?;
    let image = esp::read_file(&esp_img, cvm_disk::esp_paths::UKI)?;
    let sha256 = [cvm_measure::eventlog::HashAlg::SHA256];
    let events = cvm_measure::predict::pcr11::uki_section_events(&image, &sha256)?;
    let pcr11 = crate::pcr_prediction::PcrPrediction::from_events(&events, 11)?;
    let sections = uki::list_sections(&image)?;
    let headers = cvm_measure::pe::sections(&image)?;
    let cmdline = match headers.iter().find(|h| h.name == ".cmdline") {
        Some(h) => cvm_measure::pe::section_as_loaded(&image, h)?.into_owned(),
        None => vec![],
    };
    Ok(Some(UkiReport {
        sha256: hex::encode(crate::ids::sha256(&image)),
        size: image.len() as u64,
        sections,
        cmdline: String::from_utf8_lossy(&cmdline)
            .trim_end_matches('\0')
            .to_string(),
        predicted_pcr11: pcr11.value,
    }))
}

pub fn inspect(disk: &Path, json: bool) -> Result<()> {
    let layout = gpt::read_layout(disk)
        .with_context(|| format!("{} is not a GPT disk image", disk.display()))?;
    let report = Report {
        verity: verity_reports(disk, &layout)?,
        uki: uki_report(disk, &layout)?,
        disk: layout,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "disk {}  guid {}  {} MiB",
        disk.display(),
        report.disk.disk_guid,
        report.disk.size_bytes >> 20
    );
    for p in &report.disk.partitions {
        println!(
            "  {:>2} {:<20} LBA {:>8}-{:<8} type {}  uuid {}",
            p.number, p.name, p.first_lba, p.last_lba, p.type_guid, p.uuid
        );
    }
    for v in &report.verity {
        println!(
            "verity {:<20} root hash {}  ({} data blocks)",
            v.hash_partition, v.root_hash_from_uuids, v.data_blocks
        );
    }
    if let Some(u) = &report.uki {
        println!("UKI {} bytes  sha256 {}", u.size, u.sha256);
        for s in &u.sections {
            println!(
                "  {:<9} VMA 0x{:08x}  size {:>9}",
                s.name, s.virtual_address, s.virtual_size
            );
        }
        println!("  cmdline: {}", u.cmdline);
        println!("  predicted PCR 11 (sha256): {}", u.predicted_pcr11);
    }
    Ok(())
}
