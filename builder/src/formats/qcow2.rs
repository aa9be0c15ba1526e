//! QEMU image artifact: qcow2 version 3 (QEMU `docs/interop/qcow2.txt`), uncompressed, 64 KiB
//! clusters, 16-bit refcounts, no snapshots, no backing file, no timestamps.
//!
//! Own writer rather than imago: a single sequential pass that writes only the non-zero clusters
//! (all-zero clusters stay unallocated, which reads as zeros without a backing file) and appends
//! the metadata after the data — L2 tables, L1 table, refcount table and blocks — then fills in the
//! header at cluster 0. Nothing is rewritten or seeked over except the header, nothing depends on
//! the host, and the output is a pure function of the raw disk's content.
//!
//! Cluster map: 0 header · 1..=D data clusters in guest order · L2 tables · L1 table · refcount
//! table · refcount blocks.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result};

use super::scan::RawDisk;

/// Header field values.
const MAGIC: &[u8; 4] = b"QFI\xfb";
const VERSION: u32 = 3;
const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// `refcount_order` 4: 16-bit refcounts (qemu's default).
const REFCOUNT_ORDER: u32 = 4;
const REFCOUNT_BYTES: u64 = 2;
/// Length of the version 3 header proper (fields up to and including `header_length`).
const HEADER_LENGTH: u32 = 104;
/// L1/L2 entry flag: refcount is exactly one ("COPIED"), set on every entry we write.
const OFLAG_COPIED: u64 = 1 << 63;
/// Entries per L2 table and per refcount block (each one cluster).
const L2_ENTRIES: u64 = CLUSTER / 8;
const REFCOUNTS_PER_BLOCK: u64 = CLUSTER / REFCOUNT_BYTES;

/// Writes `out` as a qcow2 image holding the bytes of `raw`.
pub fn write(raw: &Path, out: &Path) -> Result<()> {
    let disk = RawDisk::open(raw)?;
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, &file);
    // Cluster 0 is the header, written last; reserve it.
    w.write_all(&vec![0u8; CLUSTER as usize])?;
    let mut next_cluster = 1u64;

    let mut l2_tables: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for chunk in disk.nonzero_chunks(CLUSTER) {
        let (index, mut data) = chunk?;
        data.resize(CLUSTER as usize, 0); // a short final guest cluster is stored full
        w.write_all(&data)
            .with_context(|| format!("writing {}", out.display()))?;
        let table = l2_tables
            .entry(index / L2_ENTRIES)
            .or_insert_with(|| vec![0; L2_ENTRIES as usize]);
        table[(index % L2_ENTRIES) as usize] = (next_cluster * CLUSTER) | OFLAG_COPIED;
        next_cluster += 1;
    }

    let l1_size = disk.size.div_ceil(CLUSTER).div_ceil(L2_ENTRIES);
    let mut l1 = vec![0u64; l1_size as usize];
    for (l1_index, table) in &l2_tables {
        l1[*l1_index as usize] = (next_cluster * CLUSTER) | OFLAG_COPIED;
        w.write_all(&be_u64s(table))?;
        next_cluster += 1;
    }

    let l1_offset = next_cluster * CLUSTER;
    let l1_clusters = write_table(&mut w, &be_u64s(&l1))?;
    next_cluster += l1_clusters;

    let refcounts = RefcountLayout::for_clusters_before(next_cluster);
    let rt_offset = next_cluster * CLUSTER;
    let rb_first = next_cluster + refcounts.table_clusters;
    let table: Vec<u64> = (0..refcounts.blocks)
        .map(|i| (rb_first + i) * CLUSTER)
        .collect();
    write_table(&mut w, &be_u64s(&table))?;
    write_refcount_blocks(&mut w, refcounts.total_clusters)?;

    w.flush()
        .with_context(|| format!("writing {}", out.display()))?;
    drop(w);
    let header = header(
        disk.size,
        l1_size,
        l1_offset,
        rt_offset,
        refcounts.table_clusters,
    )?;
    file.write_all_at(&header, 0)
        .with_context(|| format!("writing the qcow2 header of {}", out.display()))
}

/// Serialises big-endian u64 table entries.
fn be_u64s(entries: &[u64]) -> Vec<u8> {
    entries.iter().flat_map(|e| e.to_be_bytes()).collect()
}

/// Writes `bytes` padded to whole clusters; returns the number of clusters used.
fn write_table(w: &mut impl Write, bytes: &[u8]) -> Result<u64> {
    let clusters = (bytes.len() as u64).div_ceil(CLUSTER).max(1);
    w.write_all(bytes)?;
    w.write_all(&vec![0u8; (clusters * CLUSTER) as usize - bytes.len()])?;
    Ok(clusters)
}

/// Refcount blocks saying "1" for clusters `0..total` and "0" after.
fn write_refcount_blocks(w: &mut impl Write, total: u64) -> Result<()> {
    let blocks = total.div_ceil(REFCOUNTS_PER_BLOCK);
    for b in 0..blocks {
        let used = (total - b * REFCOUNTS_PER_BLOCK).min(REFCOUNTS_PER_BLOCK);
        let mut block = vec![0u8; CLUSTER as usize];
        for entry in block
            .chunks_exact_mut(REFCOUNT_BYTES as usize)
            .take(used as usize)
        {
            entry.copy_from_slice(&1u16.to_be_bytes());
        }
        w.write_all(&block)?;
    }
    Ok(())
}

/// How many refcount-table clusters and refcount blocks are needed when `before` clusters precede
/// them: the blocks must count themselves and the table too, hence the fixed point.
#[derive(Debug, PartialEq, Eq)]
struct RefcountLayout {
    table_clusters: u64,
    blocks: u64,
    total_clusters: u64,
}

impl RefcountLayout {
    fn for_clusters_before(before: u64) -> Self {
        let (mut table_clusters, mut blocks) = (1u64, 1u64);
        loop {
            let total = before + table_clusters + blocks;
            let need_blocks = total.div_ceil(REFCOUNTS_PER_BLOCK);
            let need_table = (need_blocks * 8).div_ceil(CLUSTER);
            if need_blocks == blocks && need_table == table_clusters {
                return Self {
                    table_clusters,
                    blocks,
                    total_clusters: total,
                };
            }
            blocks = need_blocks.max(blocks);
            table_clusters = need_table.max(table_clusters);
        }
    }
}

/// The version 3 header (big-endian), followed by the end-of-extensions marker (8 zero bytes).
fn header(
    size: u64,
    l1_size: u64,
    l1_offset: u64,
    rt_offset: u64,
    rt_clusters: u64,
) -> Result<Vec<u8>> {
    let mut h = vec![0u8; HEADER_LENGTH as usize + 8];
    h[0..4].copy_from_slice(MAGIC);
    h[4..8].copy_from_slice(&VERSION.to_be_bytes());
    // 8 backing_file_offset 0, 16 backing_file_size 0
    h[20..24].copy_from_slice(&CLUSTER_BITS.to_be_bytes());
    h[24..32].copy_from_slice(&size.to_be_bytes());
    // 32 crypt_method 0
    let l1_size = u32::try_from(l1_size).context("qcow2 L1 table too large for this disk size")?;
    h[36..40].copy_from_slice(&l1_size.to_be_bytes());
    h[40..48].copy_from_slice(&l1_offset.to_be_bytes());
    h[48..56].copy_from_slice(&rt_offset.to_be_bytes());
    let rt_clusters = u32::try_from(rt_clusters).context("qcow2 refcount table too large")?;
    h[56..60].copy_from_slice(&rt_clusters.to_be_bytes());
    // 60 nb_snapshots 0, 64 snapshots_offset 0, 72/80/88 feature bits 0
    h[96..100].copy_from_slice(&REFCOUNT_ORDER.to_be_bytes());
    h[100..104].copy_from_slice(&HEADER_LENGTH.to_be_bytes());
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::testutil::{
        assert_qemu_identical, make_test_disk, run, scratch_dir, sha256_file, MIB,
    };

    #[test]
    fn qemu_img_checks_and_compares_equal() -> Result<()> {
        let dir = scratch_dir("qcow2")?;
        let raw = make_test_disk(&dir, 700 * MIB)?;
        let img = dir.join("disk.qcow2");
        write(&raw, &img)?;
        let check = run(
            "qemu-img",
            &[
                "check",
                "--output=json",
                "-f",
                "qcow2",
                img.to_str().unwrap(),
            ],
        )?;
        let check: serde_json::Value = serde_json::from_str(&check)?;
        assert_eq!(check["check-errors"], 0, "{check}");
        assert!(
            check.get("leaks").is_none() && check.get("corruptions").is_none(),
            "{check}"
        );
        let info = run(
            "qemu-img",
            &[
                "info",
                "--output=json",
                "-f",
                "qcow2",
                img.to_str().unwrap(),
            ],
        )?;
        let info: serde_json::Value = serde_json::from_str(&info)?;
        assert_eq!(info["virtual-size"], 700 * MIB);
        assert_eq!(info["cluster-size"], 65536);
        assert_eq!(info["format-specific"]["data"]["compat"], "1.1"); // = version 3
        assert_qemu_identical(&raw, &img, "qcow2")?;

        let again = dir.join("again.qcow2");
        write(&raw, &again)?;
        assert_eq!(sha256_file(&again)?, sha256_file(&img)?, "two runs differ");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn refcount_layout_counts_itself() {
        // 32768 16-bit refcounts per block: 32766 clusters + table + block fill exactly one block.
        assert_eq!(
            RefcountLayout::for_clusters_before(32766),
            RefcountLayout {
                table_clusters: 1,
                blocks: 1,
                total_clusters: 32768
            }
        );
        assert_eq!(RefcountLayout::for_clusters_before(32767).blocks, 2);
    }

    #[test]
    fn a_disk_size_that_is_not_whole_clusters_works() -> Result<()> {
        let dir = scratch_dir("qcow2-odd")?;
        let raw = dir.join("odd.raw");
        let f = File::create(&raw)?;
        f.set_len(3 * MIB + 512)?;
        f.write_all_at(&[0xa5; 512], 3 * MIB)?;
        drop(f);
        let img = dir.join("odd.qcow2");
        write(&raw, &img)?;
        run("qemu-img", &["check", "-f", "qcow2", img.to_str().unwrap()])?;
        assert_qemu_identical(&raw, &img, "qcow2")?;
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
