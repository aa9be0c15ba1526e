//! Finding partitions without udev: `/sys/class/block` for the kernel's view (which disk, which
//! partition number, which device number) plus each disk's own GPT for the GUIDs.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cvm_measure::boot_config::{format_uuid, parse_uuid, BootConfig};

use crate::console;
use cvm_disk::gpt::{Gpt, Partition as GptPartition};

const SYS_CLASS_BLOCK: &str = "/sys/class/block";
/// How often the partition list is rescanned while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// A partition as the kernel and its GPT entry describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Kernel name, e.g. "vda2" (its node is /dev/vda2).
    pub name: String,
    /// Device number "major:minor" (what a DM table wants).
    pub dev: String,
    /// Size in 512-byte sectors.
    pub sectors: u64,
    pub type_guid: [u8; 16],
    pub uuid: [u8; 16],
}

impl Partition {
    pub fn node(&self) -> String {
        format!("/dev/{}", self.name)
    }

    pub fn describe(&self) -> String {
        format!(
            "{} ({}, {} MiB, type {}, uuid {})",
            self.name,
            self.dev,
            self.sectors / 2048,
            format_uuid(&self.type_guid),
            format_uuid(&self.uuid)
        )
    }
}

/// What one scan found: partitions with GUIDs, and what could not be read (for the timeout report).
#[derive(Debug, Default)]
pub struct Inventory {
    pub partitions: Vec<Partition>,
    pub problems: Vec<String>,
}

fn read_trimmed(path: &Path) -> Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_string())
}

/// A kernel partition: its disk, number, dev and size (from sysfs).
struct SysPartition {
    name: String,
    disk: String,
    number: u32,
    dev: String,
    sectors: u64,
}

fn sys_partition(entry: &Path) -> Result<Option<SysPartition>> {
    let part_file = entry.join("partition");
    if !part_file.exists() {
        return Ok(None);
    }
    let name = entry
        .file_name()
        .and_then(|n| n.to_str())
        .context("non-UTF-8 block device name")?
        .to_string();
    // /sys/class/block/vda2 → /sys/devices/.../block/vda/vda2: the parent directory is the disk.
    let real =
        std::fs::canonicalize(entry).with_context(|| format!("resolving {}", entry.display()))?;
    let disk = real
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .with_context(|| format!("no parent disk for {}", real.display()))?
        .to_string();
    Ok(Some(SysPartition {
        number: read_trimmed(&part_file)?
            .parse()
            .context("partition number")?,
        dev: read_trimmed(&entry.join("dev"))?,
        sectors: read_trimmed(&entry.join("size"))?
            .parse()
            .context("partition size")?,
        name,
        disk,
    }))
}

/// Scans every partition the kernel knows and reads the GPT of every disk that has any.
pub fn scan() -> Inventory {
    let mut inv = Inventory::default();
    let entries = match std::fs::read_dir(SYS_CLASS_BLOCK) {
        Ok(e) => e,
        Err(e) => {
            inv.problems.push(format!("{SYS_CLASS_BLOCK}: {e}"));
            return inv;
        }
    };
    let mut parts: Vec<SysPartition> = Vec::new();
    for entry in entries.flatten() {
        match sys_partition(&entry.path()) {
            Ok(Some(p)) => parts.push(p),
            Ok(None) => {}
            Err(e) => inv.problems.push(format!("{:#}", e)),
        }
    }
    parts.sort_by(|a, b| (&a.disk, a.number).cmp(&(&b.disk, b.number)));
    let mut disks: Vec<&str> = parts.iter().map(|p| p.disk.as_str()).collect();
    disks.dedup();
    for disk in disks {
        match disk_gpt(disk) {
            Ok(gpt) => {
                for p in parts.iter().filter(|p| p.disk == disk) {
                    if let Some(e) = gpt.iter().find(|e| e.number == p.number) {
                        inv.partitions.push(Partition {
                            name: p.name.clone(),
                            dev: p.dev.clone(),
                            sectors: p.sectors,
                            type_guid: e.type_guid,
                            uuid: e.unique_guid,
                        });
                    }
                }
            }
            Err(e) => inv.problems.push(format!("/dev/{disk}: {e:#}")),
        }
    }
    inv
}

fn disk_gpt(disk: &str) -> Result<Vec<GptPartition>> {
    let sector: u64 = read_trimmed(
        &Path::new(SYS_CLASS_BLOCK)
            .join(disk)
            .join("queue/logical_block_size"),
    )?
    .parse()
    .context("logical_block_size")?;
    let node = format!("/dev/{disk}");
    let mut f = File::open(&node).with_context(|| format!("opening {node}"))?;
    Ok(Gpt::read(&mut f, sector)?.partitions)
}

/// The partitions the boot config asks for.
#[derive(Debug, Clone)]
pub struct Devices {
    pub root_data: Partition,
    pub root_hash: Partition,
    /// (data, hash) of the workload, if the config has a workload.
    pub workload: Option<(Partition, Partition)>,
}

/// A lookup that must match at most one partition: two matches means a second disk carries the same
/// identity (a copied or attacker-supplied disk), and picking one would be a guess.
fn unique<'a>(
    inv: &'a Inventory,
    what: &str,
    pred: impl Fn(&Partition) -> bool,
) -> Result<Option<&'a Partition>> {
    let found: Vec<&Partition> = inv.partitions.iter().filter(|p| pred(p)).collect();
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        many => bail!(
            "{what} matches {} partitions ({}); detach the extra disk",
            many.len(),
            many.iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// One requirement: a name for messages and a predicate.
struct Want {
    what: String,
    key: [u8; 16],
    by_type: bool,
}

fn wants(config: &BootConfig) -> Result<Vec<Want>> {
    let mut w = Vec::new();
    let mut push = |what: String, text: &str, by_type: bool| -> Result<()> {
        let key = parse_uuid(text)?;
        w.push(Want { what, key, by_type });
        Ok(())
    };
    let r = &config.root;
    push(
        format!("root data partition PARTUUID {}", r.data_partuuid),
        &r.data_partuuid,
        false,
    )?;
    push(
        format!("root hash partition PARTUUID {}", r.hash_partuuid),
        &r.hash_partuuid,
        false,
    )?;
    if let Some(wl) = &config.workload {
        push(
            format!("workload data partition type {}", wl.data_type_guid),
            &wl.data_type_guid,
            true,
        )?;
        push(
            format!("workload hash partition type {}", wl.hash_type_guid),
            &wl.hash_type_guid,
            true,
        )?;
    }
    Ok(w)
}

/// Resolves every requirement against one inventory: Ok(Some) when all are present.
fn resolve(inv: &Inventory, wants: &[Want]) -> Result<Option<Vec<Partition>>> {
    let mut out = Vec::new();
    for w in wants {
        let hit = unique(inv, &w.what, |p| {
            if w.by_type {
                p.type_guid == w.key
            } else {
                p.uuid == w.key
            }
        })?;
        match hit {
            Some(p) => out.push(p.clone()),
            None => return Ok(None),
        }
    }
    Ok(Some(out))
}

/// Polls until every partition the config names is present, or `device_timeout_secs` pass.
/// On timeout, prints what was seen (one console line per partition) and fails naming what is missing.
pub fn wait_for_devices(config: &BootConfig) -> Result<Devices> {
    let wants = wants(config)?;
    let deadline = Instant::now() + Duration::from_secs(config.device_timeout_secs.into());
    loop {
        let inv = scan();
        if let Some(found) = resolve(&inv, &wants)? {
            let mut it = found.into_iter();
            let mut next = || it.next().context("internal: resolved list too short");
            let root_data = next()?;
            let root_hash = next()?;
            let workload = match config.workload {
                Some(_) => Some((next()?, next()?)),
                None => None,
            };
            return Ok(Devices {
                root_data,
                root_hash,
                workload,
            });
        }
        if Instant::now() >= deadline {
            report_inventory(&inv);
            let missing: Vec<&str> = wants
                .iter()
                .filter(|w| {
                    !inv.partitions.iter().any(|p| {
                        if w.by_type {
                            p.type_guid == w.key
                        } else {
                            p.uuid == w.key
                        }
                    })
                })
                .map(|w| w.what.as_str())
                .collect();
            bail!(
                "timed out after {} s waiting for: {} (saw {} GPT partitions; is the disk attached as virtio-blk?)",
                config.device_timeout_secs,
                missing.join("; "),
                inv.partitions.len()
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn report_inventory(inv: &Inventory) {
    for p in &inv.partitions {
        console::info(&format!("saw partition {}", p.describe()));
    }
    for problem in &inv.problems {
        console::info(&format!("could not read: {problem}"));
    }
    if inv.partitions.is_empty() && inv.problems.is_empty() {
        console::info("saw no partitions at all");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(name: &str, t: u8, u: u8) -> Partition {
        Partition {
            name: name.into(),
            dev: "254:1".into(),
            sectors: 2048,
            type_guid: [t; 16],
            uuid: [u; 16],
        }
    }

    #[test]
    fn duplicates_are_refused() {
        let inv = Inventory {
            partitions: vec![part("vda2", 1, 2), part("vdb2", 1, 2)],
            problems: vec![],
        };
        let w = [Want {
            what: "root".into(),
            key: [2; 16],
            by_type: false,
        }];
        let e = resolve(&inv, &w).unwrap_err().to_string();
        assert!(e.contains("matches 2 partitions (vda2, vdb2)"), "{e}");
    }

    #[test]
    fn resolves_in_request_order_or_waits() {
        let inv = Inventory {
            partitions: vec![part("vda3", 7, 3), part("vda2", 1, 2)],
            problems: vec![],
        };
        let w = [
            Want {
                what: "a".into(),
                key: [2; 16],
                by_type: false,
            },
            Want {
                what: "b".into(),
                key: [7; 16],
                by_type: true,
            },
        ];
        let got = resolve(&inv, &w).unwrap().unwrap();
        assert_eq!(got[0].name, "vda2");
        assert_eq!(got[1].name, "vda3");
        let missing = [Want {
            what: "c".into(),
            key: [9; 16],
            by_type: true,
        }];
        assert!(resolve(&inv, &missing).unwrap().is_none());
    }
}
