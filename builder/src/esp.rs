//! EFI System Partition: a FAT32 image holding the UKI at `\EFI\BOOT\BOOTX64.EFI`.
//!
//! Written with `hadris-fat` (docs/crates.md §1: injectable clock, explicit volume id,
//! `fsck.fat`-clean output). Reproducibility needs three things the crate does not do by itself:
//!
//! * **No label.** `format()` stamps the volume-label directory entry with the wall clock
//!   (docs/crates.md §3), so the volume is formatted without one: the boot sector keeps the
//!   `NO NAME` label, exactly what `mkfs.fat` writes without `-n`, and no label entry exists.
//! * **A fixed clock.** Every directory entry (files, directories, `.`/`..`) gets its timestamps
//!   from `SOURCE_DATE_EPOCH`, through a `TimeProvider` that never reads the clock.
//! * **Fixed volume id and input order.** The volume id is the caller's; files are added in
//!   sorted path order, so the layout does not depend on how the caller listed them.
//!
//! FAT32 is forced (docs/formats.md §5): the type follows the cluster count, so a volume must have
//! at least 65 525 clusters — [`fit_size`] picks a size that satisfies this and holds the payload.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use anyhow::{bail, ensure, Context, Result};
use hadris_fat::format::{FatFormatOptions, FatTypeSelection, FatVolumeFormatter, FormatParams};
use hadris_fat::time::{FatDateTime, StaticTimeProvider, TimeProvider};
use hadris_fat::{FatDir, FatVolume, FatVolumeWriteExt};

/// Logical sector size of the ESP (`BPB_BytsPerSec`); the disk uses 512-byte sectors too.
const SECTOR_SIZE: u64 = 512;
/// Sizes chosen by [`fit_size`] are whole MiB so the ESP fills its 1 MiB-aligned partition.
const MIB: u64 = 1 << 20;
/// FAT32 needs at least this many data clusters; fewer makes it FAT16 by definition.
const FAT32_MIN_CLUSTERS: u32 = 65_525;
/// hadris-fat refuses FAT32 volumes above 2 TiB.
const FAT32_MAX_SIZE: u64 = 2 << 40;
/// Size of one directory entry (`DIR_Name` … `DIR_FileSize`).
const DIR_ENTRY_SIZE: u64 = 32;
/// UTF-16 code units of a long name held by one LFN directory entry.
const LFN_CHARS_PER_ENTRY: u64 = 13;
/// `.` and `..` occupy the first two entries of every directory but the root.
const DOT_ENTRIES: u64 = 2;
/// The FAT32 root directory owns one cluster from the moment the volume is formatted.
const ROOT_DIR_CLUSTERS: u32 = 1;
/// 1980-01-01T00:00:00Z, the first instant a FAT timestamp can express.
const FAT_FIRST_UNIX: u64 = 315_532_800;
/// 2107-12-31T23:59:58Z, the last instant a FAT timestamp can express (2-second resolution).
const FAT_LAST_UNIX: u64 = 4_354_819_198;
const SECS_PER_DAY: u64 = 86_400;

/// One file to place on the ESP.
#[derive(Debug, Clone, Copy)]
pub struct EspFile<'a> {
    /// Path inside the volume, `/`-separated, without a leading slash: `EFI/BOOT/BOOTX64.EFI`.
    pub path: &'a str,
    /// File content (FAT limits a file to 4 GiB - 1).
    pub data: &'a [u8],
}

/// Writes a FAT32 ESP of exactly `size` bytes to `out`.
///
/// Nothing reads the clock: the volume id is `volume_id`, and every directory entry is stamped
/// with `epoch` (`SOURCE_DATE_EPOCH`, UTC, clamped to 1980-01-01 … 2107-12-31, rounded down to
/// FAT's 2-second grid). The FSInfo free count and next-free hint are kept exact.
/// Fails, naming the sizes, when the files do not fit; nothing is written then.
///
/// The volume is assembled in a [`SparseImage`] (memory ≈ payload + FAT) and written once,
/// leaving unused space as holes.
pub fn write_esp(
    out: &Path,
    files: &[EspFile],
    size: u64,
    volume_id: u32,
    epoch: u64,
) -> Result<()> {
    let image = build_esp(files, size, volume_id, epoch)?;
    let file = create_sized(out, size)?;
    image
        .write_to(&file)
        .with_context(|| format!("writing ESP image {}", out.display()))
}

/// The ESP as an in-memory sparse image.
fn build_esp(files: &[EspFile], size: u64, volume_id: u32, epoch: u64) -> Result<SparseImage> {
    let files = sorted_files(files)?;
    let options = format_options(size, volume_id);
    let params = fat32_params(&options)?;
    check_capacity(&files, &params, size)?;

    let volume = FatVolumeFormatter::format(SparseImage::new(size), options)
        .context("formatting the FAT32 ESP")?;
    // Reopen with the fixed clock; hadris-fat reads the boot sector at the current position.
    let mut image = volume.into_inner();
    image.rewind().context("rewinding the ESP image")?;
    let stamp = fat_timestamp(epoch);
    let volume = FatVolume::builder(image)
        .time_provider(fixed_clock(stamp))
        .open()
        .context("reopening the freshly formatted ESP")?;
    for file in &files {
        add_file(&volume, file, stamp)
            .with_context(|| format!("writing {} into the ESP", file.path))?;
    }
    volume.sync().context("writing the ESP's FSInfo")?;
    Ok(volume.into_inner())
}

/// Smallest whole-MiB FAT32 size whose data area holds `payload_bytes` plus headroom.
///
/// Headroom (1 MiB + 1/8 of the payload) absorbs per-file cluster slack and directory clusters;
/// the result is never below the FAT32 minimum (≥ 65 525 clusters, about 33 MiB).
pub fn fit_size(payload_bytes: u64) -> u64 {
    let wanted = payload_bytes
        .saturating_add(MIB)
        .saturating_add(payload_bytes / 8);
    let mut size = wanted.min(FAT32_MAX_SIZE).div_ceil(MIB).max(1) * MIB;
    while size < FAT32_MAX_SIZE {
        if fat32_layout(&format_options(size, 0)).is_some_and(|p| data_capacity(&p) >= wanted) {
            return size;
        }
        size += MIB;
    }
    FAT32_MAX_SIZE
}

/// hadris-fat options: forced FAT32, explicit volume id, no label (see the module docs).
fn format_options(size: u64, volume_id: u32) -> FatFormatOptions {
    FatFormatOptions::new(size)
        .fat_type(FatTypeSelection::Fat32)
        .volume_id(volume_id)
}

/// The layout hadris-fat will format, if it is a valid FAT32 (≥ 65 525 clusters).
fn fat32_layout(options: &FatFormatOptions) -> Option<FormatParams> {
    FatVolumeFormatter::calculate_params(options)
        .ok()
        .filter(|params| params.cluster_count >= FAT32_MIN_CLUSTERS)
}

/// [`fat32_layout`] with an error that says how to fix the size.
fn fat32_params(options: &FatFormatOptions) -> Result<FormatParams> {
    let size = options.volume_size;
    ensure!(
        size.is_multiple_of(SECTOR_SIZE),
        "ESP size {size} is not a multiple of the {SECTOR_SIZE}-byte sector"
    );
    fat32_layout(options).with_context(|| {
        format!(
            "an ESP of {size} bytes cannot be FAT32, which needs at least \
             {FAT32_MIN_CLUSTERS} clusters: use at least {} bytes (esp::fit_size)",
            fit_size(0)
        )
    })
}

fn cluster_bytes(params: &FormatParams) -> u64 {
    u64::from(params.sectors_per_cluster) * params.sector_size as u64
}

/// Bytes available for files and directories once the root directory has its cluster.
fn data_capacity(params: &FormatParams) -> u64 {
    u64::from(params.cluster_count - ROOT_DIR_CLUSTERS) * cluster_bytes(params)
}

/// Refuses payloads that cannot fit, before anything is written.
///
/// Counts each file's clusters and an upper bound of each directory's clusters (every name
/// charged its long-name entries), so a payload that passes always fits.
fn check_capacity(files: &[EspFile], params: &FormatParams, size: u64) -> Result<()> {
    let cluster = cluster_bytes(params);
    let file_clusters: u64 = files
        .iter()
        .map(|f| (f.data.len() as u64).div_ceil(cluster))
        .sum();
    let needed = file_clusters + directory_clusters(files, cluster);
    let free = u64::from(params.cluster_count - ROOT_DIR_CLUSTERS);
    let payload: u64 = files.iter().map(|f| f.data.len() as u64).sum();
    if needed > free {
        bail!(
            "ESP too small: {} file(s) of {payload} bytes need {needed} clusters of {cluster} \
             bytes ({} bytes), but a FAT32 volume of {size} bytes has {free} free clusters \
             ({} bytes); use an ESP of at least {} bytes (esp::fit_size)",
            files.len(),
            needed * cluster,
            free * cluster,
            fit_size(payload),
        );
    }
    Ok(())
}

/// Clusters taken by directories beyond the root's first one (upper bound).
fn directory_clusters(files: &[EspFile], cluster: u64) -> u64 {
    // Directory path (components) → names of the entries it holds.
    let mut dirs: BTreeMap<Vec<String>, std::collections::BTreeSet<String>> = BTreeMap::new();
    dirs.entry(Vec::new()).or_default();
    for file in files {
        let parts: Vec<String> = file.path.split('/').map(str::to_ascii_uppercase).collect();
        for depth in 0..parts.len() {
            dirs.entry(parts[..depth].to_vec())
                .or_default()
                .insert(parts[depth].clone());
        }
    }
    dirs.iter()
        .map(|(path, names)| {
            let slots: u64 = names.iter().map(|n| entry_slots(n)).sum();
            if path.is_empty() {
                (slots * DIR_ENTRY_SIZE)
                    .div_ceil(cluster)
                    .saturating_sub(u64::from(ROOT_DIR_CLUSTERS))
            } else {
                ((slots + DOT_ENTRIES) * DIR_ENTRY_SIZE).div_ceil(cluster)
            }
        })
        .sum()
}

/// Directory entries one name can take: the short entry plus its long-name entries.
fn entry_slots(name: &str) -> u64 {
    1 + (name.encode_utf16().count() as u64).div_ceil(LFN_CHARS_PER_ENTRY)
}

/// Validates the paths and returns the files in a canonical order.
///
/// FAT compares names case-insensitively, so two paths differing only in case are duplicates.
fn sorted_files<'a>(files: &[EspFile<'a>]) -> Result<Vec<EspFile<'a>>> {
    let mut sorted = files.to_vec();
    for file in &sorted {
        validate_path(file.path)?;
        ensure!(
            u32::try_from(file.data.len()).is_ok(),
            "ESP file {} is {} bytes; FAT files are limited to 4 GiB - 1",
            file.path,
            file.data.len()
        );
    }
    sorted.sort_by_key(|f| f.path.to_ascii_uppercase());
    for pair in sorted.windows(2) {
        ensure!(
            !pair[0].path.eq_ignore_ascii_case(pair[1].path),
            "ESP paths {} and {} name the same FAT file (FAT ignores case)",
            pair[0].path,
            pair[1].path
        );
    }
    Ok(sorted)
}

fn validate_path(path: &str) -> Result<()> {
    ensure!(
        !path.is_empty()
            && path
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."),
        "invalid ESP path {path:?}: use a relative /-separated path such as EFI/BOOT/BOOTX64.EFI"
    );
    ensure!(
        !path.contains('\\'),
        "invalid ESP path {path:?}: separate components with '/', not '\\'"
    );
    Ok(())
}

/// A fixed-size disk image in memory that stores only the 64 KiB blocks holding data.
///
/// hadris-fat issues a seek plus a small read or write per FAT entry and per cluster: on a
/// `File` that is about 1.3 million syscalls for a 60 MB UKI, measured at 0.3 s to 22 s on a
/// busy build host (75 ms in memory). In memory it costs the payload plus the touched FAT
/// blocks, and [`SparseImage::write_to`] emits only non-zero blocks.
struct SparseImage {
    len: u64,
    pos: u64,
    blocks: BTreeMap<u64, Box<[u8]>>,
}

/// Granule of [`SparseImage`]; also the hole granularity of the written file.
const IMAGE_BLOCK: u64 = 64 << 10;

impl SparseImage {
    fn new(len: u64) -> Self {
        SparseImage {
            len,
            pos: 0,
            blocks: BTreeMap::new(),
        }
    }

    /// Index of the block holding `pos`, offset inside it, and bytes until the block ends
    /// (or the image does).
    fn locate(&self) -> (u64, usize, usize) {
        let index = self.pos / IMAGE_BLOCK;
        let offset = (self.pos % IMAGE_BLOCK) as usize;
        let room = (IMAGE_BLOCK as usize - offset).min((self.len - self.pos) as usize);
        (index, offset, room)
    }

    /// Writes the non-zero blocks to `file` (already sized to the image length).
    fn write_to(&self, file: &File) -> std::io::Result<()> {
        for (&index, block) in &self.blocks {
            let start = index * IMAGE_BLOCK;
            let end = (start + IMAGE_BLOCK).min(self.len);
            let data = &block[..(end - start) as usize];
            if !is_zero(data) {
                file.write_all_at(data, start)?;
            }
        }
        Ok(())
    }
}

impl Read for SparseImage {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.len {
            return Ok(0);
        }
        let (index, offset, room) = self.locate();
        let n = buf.len().min(room);
        match self.blocks.get(&index) {
            Some(block) => buf[..n].copy_from_slice(&block[offset..offset + n]),
            None => buf[..n].fill(0),
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for SparseImage {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.pos >= self.len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("write at {} beyond the {}-byte ESP", self.pos, self.len),
            ));
        }
        let (index, offset, room) = self.locate();
        let data = &buf[..buf.len().min(room)];
        match self.blocks.get_mut(&index) {
            Some(block) => block[offset..offset + data.len()].copy_from_slice(data),
            // Absent blocks read as zeros: writing zeros into them changes nothing.
            None if is_zero(data) => {}
            None => {
                let mut block = vec![0u8; IMAGE_BLOCK as usize].into_boxed_slice();
                block[offset..offset + data.len()].copy_from_slice(data);
                self.blocks.insert(index, block);
            }
        }
        self.pos += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seek for SparseImage {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(delta) => self.len.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.pos.checked_add_signed(delta),
        };
        self.pos = target.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before start of ESP")
        })?;
        Ok(self.pos)
    }
}

/// OR over 512-byte blocks (vectorises), stopping at the first non-zero one.
fn is_zero(data: &[u8]) -> bool {
    data.chunks(SECTOR_SIZE as usize)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// Creates (or truncates) `out` and sizes it; unwritten space stays a hole.
fn create_sized(out: &Path, size: u64) -> Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)
        .with_context(|| format!("creating ESP image {}", out.display()))?;
    file.set_len(size)
        .with_context(|| format!("sizing ESP image {} to {size} bytes", out.display()))?;
    Ok(file)
}

/// Creates the parent directories of `file` as needed, then the file with its content.
fn add_file(volume: &FatVolume<SparseImage>, file: &EspFile, stamp: FatDateTime) -> Result<()> {
    let mut parts: Vec<&str> = file.path.split('/').collect();
    let name = parts.pop().context("empty ESP path")?;
    let mut dir = volume.root_dir();
    for component in parts {
        dir = open_or_create_dir(volume, &dir, component)?;
    }
    let entry = volume
        .create_file(&dir, name)
        .with_context(|| format!("creating directory entry {name:?}"))?;
    let mut writer = volume.write_file(&entry)?;
    let mut written = 0;
    while written < file.data.len() {
        written += writer
            .write(&file.data[written..])
            .with_context(|| format!("writing {} bytes", file.data.len()))?;
    }
    writer
        .set_created(stamp)
        .set_modified(stamp)
        .set_accessed(stamp.date);
    writer.finish()?;
    Ok(())
}

/// Read one file back out of an ESP image (`cvm-image inspect`), through `cvm_disk::fat`, the
/// reader the agent uses: path components are matched the FAT way, case-insensitively.
pub fn read_file(image: &[u8], path: &str) -> Result<Vec<u8>> {
    let volume = cvm_disk::fat::Volume::open(std::io::Cursor::new(image))
        .context("the ESP is not a readable FAT volume")?;
    volume
        .read_file(path, image.len())
        .with_context(|| format!("reading {path} from the ESP"))?
        .with_context(|| format!("the ESP has no {path}"))
}

fn open_or_create_dir<'v>(
    volume: &'v FatVolume<SparseImage>,
    parent: &FatDir<'v, SparseImage>,
    name: &str,
) -> Result<FatDir<'v, SparseImage>> {
    match parent.find(name)? {
        Some(entry) if entry.is_directory() => Ok(volume.open_dir_entry(&entry)?),
        Some(_) => bail!("{name:?} is a file but a path needs it as a directory"),
        None => volume
            .create_dir(parent, name)
            .with_context(|| format!("creating directory {name:?}")),
    }
}

/// FAT timestamp for a Unix time: UTC, clamped to the FAT range, 2-second resolution.
fn fat_timestamp(epoch: u64) -> FatDateTime {
    let t = epoch.clamp(FAT_FIRST_UNIX, FAT_LAST_UNIX);
    let (year, month, day) = civil_from_days(t / SECS_PER_DAY);
    let secs = t % SECS_PER_DAY;
    // Components are in range by construction (year 1980..=2107, hour < 24, …).
    FatDateTime::new(
        year as u16,
        month as u8,
        day as u8,
        (secs / 3600) as u8,
        (secs / 60 % 60) as u8,
        (secs % 60) as u8,
    )
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01
/// (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms", `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// A `'static` clock frozen at `stamp`, as hadris-fat's builder requires.
///
/// One provider per distinct timestamp is allocated and kept for the process lifetime, so
/// repeated builds do not leak.
fn fixed_clock(stamp: FatDateTime) -> &'static dyn TimeProvider {
    static CLOCKS: Mutex<BTreeMap<(u16, u16, u8), &'static StaticTimeProvider>> =
        Mutex::new(BTreeMap::new());
    let mut clocks = CLOCKS.lock().unwrap_or_else(PoisonError::into_inner);
    *clocks
        .entry(stamp.to_raw())
        .or_insert_with(|| Box::leak(Box::new(StaticTimeProvider(stamp))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::process::{Command, Output};

    const VOLUME_ID: u32 = 0x1234_abcd;
    /// 2023-11-14T22:13:20Z (`date -u -d @1700000000`).
    const EPOCH: u64 = 1_700_000_000;

    /// Runs a reference tool; a missing tool fails the test with the package to install.
    fn tool(program: &str, args: &[&str], package: &str) -> Output {
        Command::new(program)
            .args(args)
            .env("MTOOLS_SKIP_CHECK", "1")
            .env("TZ", "UTC")
            .output()
            .unwrap_or_else(|e| panic!("{program} not runnable ({e}): install {package}"))
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    /// Pseudo-random, non-repeating test content (a UKI-sized blob would slow the tests).
    fn payload(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    fn build(out: &Path, uki: &[u8], size: u64) {
        let cmdline = b"console=ttyS0\n";
        let files = [
            EspFile {
                path: "loader/cmdline.txt",
                data: cmdline,
            },
            EspFile {
                path: "EFI/BOOT/BOOTX64.EFI",
                data: uki,
            },
            EspFile {
                path: "EFI/Linux/empty.efi",
                data: b"",
            },
        ];
        write_esp(out, &files, size, VOLUME_ID, EPOCH).unwrap();
    }

    #[test]
    fn fsck_clean_and_files_read_back_with_mtools() {
        let tmp = TempDir::new("fsck");
        let img = tmp.join("esp.img");
        let uki = payload(3 * 1024 * 1024 + 123, 1);
        let size = fit_size(uki.len() as u64);
        build(&img, &uki, size);
        assert_eq!(std::fs::metadata(&img).unwrap().len(), size);

        let fsck = tool("fsck.fat", &["-n", img.to_str().unwrap()], "dosfstools");
        let report = text(&fsck.stdout) + &text(&fsck.stderr);
        assert!(fsck.status.success(), "fsck.fat -n failed:\n{report}");
        // A clean check prints only its version and the summary; any warning adds lines.
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(
            lines.len(),
            2,
            "fsck.fat -n printed more than the summary:\n{report}"
        );
        assert!(lines[0].starts_with("fsck.fat "), "{report}");
        assert!(
            lines[1].contains(" files, ") && lines[1].contains(" clusters"),
            "{report}"
        );

        let verbose = tool(
            "fsck.fat",
            &["-n", "-v", img.to_str().unwrap()],
            "dosfstools",
        );
        let report = text(&verbose.stdout);
        assert!(
            report.contains("2 FATs, 32 bit entries"),
            "not FAT32:\n{report}"
        );
        let clusters: u32 = report
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_suffix(" bytes)")?
                    .split_once(" data clusters")
            })
            .and_then(|(n, _)| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no data cluster count in:\n{report}"));
        assert!(
            clusters >= FAT32_MIN_CLUSTERS,
            "{clusters} clusters is not FAT32"
        );

        // FSInfo (sector 1): FSI_Free_Count at 488 and FSI_Nxt_Free at 492 are filled in, and
        // the free count agrees with fsck's "used/total clusters" summary.
        let (used, total) = lines[1]
            .rsplit_once(", ")
            .and_then(|(_, c)| c.strip_suffix(" clusters")?.split_once('/'))
            .map(|(u, t)| (u.parse::<u32>().unwrap(), t.parse::<u32>().unwrap()))
            .unwrap_or_else(|| panic!("no cluster summary in {report}"));
        let image = std::fs::read(&img).unwrap();
        let le32 = |at: usize| u32::from_le_bytes(image[at..at + 4].try_into().unwrap());
        assert_eq!(le32(512), 0x4161_5252, "FSI_LeadSig");
        assert_eq!(le32(512 + 488), total - used, "FSI_Free_Count");
        assert!(
            (2..total + 2).contains(&le32(512 + 492)),
            "FSI_Nxt_Free {}",
            le32(512 + 492)
        );

        let img_arg = img.to_str().unwrap();
        let back = tool(
            "mtype",
            &["-i", img_arg, "::/EFI/BOOT/BOOTX64.EFI"],
            "mtools",
        );
        assert!(
            back.status.success(),
            "mtype failed: {}",
            text(&back.stderr)
        );
        assert!(back.stdout == uki, "BOOTX64.EFI read back by mtype differs");
        let cmd = tool("mtype", &["-i", img_arg, "::/loader/cmdline.txt"], "mtools");
        assert_eq!(cmd.stdout, b"console=ttyS0\n");
    }

    #[test]
    fn volume_id_fat32_and_timestamps_seen_by_reference_tools() {
        let tmp = TempDir::new("ids");
        let img = tmp.join("esp.img");
        build(&img, &payload(1000, 2), fit_size(1000));
        let img_arg = img.to_str().unwrap();
        // Unused space stays a hole: boot sectors, FAT heads and two clusters of data.
        let allocated = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&img).unwrap());
        assert!(
            allocated * 512 <= 8 * IMAGE_BLOCK,
            "{} bytes allocated",
            allocated * 512
        );

        let file = tool("file", &["-s", img_arg], "file");
        let desc = text(&file.stdout);
        assert!(desc.contains("serial number 0x1234abcd"), "file -s: {desc}");
        assert!(desc.contains("FAT (32 bit)"), "file -s: {desc}");

        let mdir = tool("mdir", &["-i", img_arg, "::/EFI/BOOT"], "mtools");
        let listing = text(&mdir.stdout);
        assert!(mdir.status.success(), "mdir failed: {}", text(&mdir.stderr));
        assert!(
            listing.contains("Volume Serial Number is 1234-ABCD"),
            "{listing}"
        );
        assert!(
            listing.contains("BOOTX64  EFI      1000 2023-11-14  22:13"),
            "{listing}"
        );
        // Directory entries (".", "..") carry the same stamp.
        assert!(
            listing.contains(".            <DIR>     2023-11-14  22:13"),
            "{listing}"
        );
        assert!(listing.contains("has no label"), "{listing}");
    }

    #[test]
    fn builds_are_byte_identical_and_clock_free() {
        let tmp = TempDir::new("repro");
        let uki = payload(200_000, 3);
        let size = fit_size(uki.len() as u64);
        let (a, b) = (tmp.join("a.img"), tmp.join("b.img"));
        build(&a, &uki, size);
        // FAT time has 2-second resolution: a build that read the clock would differ.
        std::thread::sleep(std::time::Duration::from_millis(2100));
        build(&b, &uki, size);
        assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());

        // Input order does not matter either.
        let c = tmp.join("c.img");
        let cmdline = b"console=ttyS0\n";
        let files = [
            EspFile {
                path: "EFI/Linux/empty.efi",
                data: b"",
            },
            EspFile {
                path: "EFI/BOOT/BOOTX64.EFI",
                data: &uki,
            },
            EspFile {
                path: "loader/cmdline.txt",
                data: cmdline,
            },
        ];
        write_esp(&c, &files, size, VOLUME_ID, EPOCH).unwrap();
        assert!(std::fs::read(&a).unwrap() == std::fs::read(&c).unwrap());
    }

    #[test]
    fn too_small_is_a_clear_error() {
        let tmp = TempDir::new("small");
        let img = tmp.join("esp.img");
        let uki = payload(40 * 1024 * 1024, 4);
        let files = [EspFile {
            path: "EFI/BOOT/BOOTX64.EFI",
            data: &uki,
        }];
        let err = write_esp(&img, &files, 40 * MIB, VOLUME_ID, EPOCH).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("ESP too small"), "{msg}");
        assert!(msg.contains(&(40 * MIB).to_string()), "{msg}");
        assert!(msg.contains(&uki.len().to_string()), "{msg}");
        assert!(
            !img.exists(),
            "nothing is written when the payload cannot fit"
        );

        // Below the FAT32 minimum cluster count.
        let err = write_esp(&img, &[], 16 * MIB, VOLUME_ID, EPOCH).unwrap_err();
        assert!(format!("{err:#}").contains("cannot be FAT32"), "{err:#}");
    }

    #[test]
    fn fit_size_is_minimal_mib_aligned_fat32() {
        // 32 MiB holds fewer than 65 525 512-byte clusters once the FATs are counted; 33 MiB does
        // (mkfs.fat -F 32 -S 512 -s 1 agrees: it refuses 32 MiB and accepts 33 MiB).
        assert_eq!(fit_size(0), 33 * MIB);
        for payload in [0, 1, 30 * MIB, 100 * MIB, 700 * MIB] {
            let size = fit_size(payload);
            assert_eq!(size % MIB, 0);
            let params = fat32_params(&format_options(size, 0)).unwrap();
            assert!(data_capacity(&params) >= payload + payload / 8);
            // One MiB less would not do.
            let smaller = fat32_layout(&format_options(size - MIB, 0));
            assert!(smaller.is_none_or(|p| data_capacity(&p) < payload + MIB + payload / 8));
        }
    }

    #[test]
    fn mkfs_fat_agrees_on_the_fat32_minimum() {
        let tmp = TempDir::new("mkfs");
        let img = tmp.join("ref.img");
        let warns_too_few_clusters = |mib: u64| {
            File::create(&img).unwrap().set_len(mib * MIB).unwrap();
            let args = ["-F", "32", "-S", "512", "-s", "1", img.to_str().unwrap()];
            let out = tool("mkfs.fat", &args, "dosfstools");
            assert!(
                out.status.success(),
                "mkfs.fat failed: {}",
                text(&out.stderr)
            );
            (text(&out.stdout) + &text(&out.stderr)).contains("less then suggested minimum")
        };
        assert!(
            warns_too_few_clusters(32),
            "mkfs.fat saw enough clusters in 32 MiB"
        );
        assert!(
            !warns_too_few_clusters(33),
            "mkfs.fat saw too few clusters in 33 MiB"
        );
    }

    #[test]
    fn fat_timestamps_are_utc_clamped_and_even() {
        let raw = |t| fat_timestamp(t).to_raw();
        // Vectors from `date -u -d @N`.
        assert_eq!(
            raw(1_700_000_000),
            (FatDateTime::new(2023, 11, 14, 22, 13, 20)).to_raw()
        );
        assert_eq!(
            raw(951_782_400),
            FatDateTime::new(2000, 2, 29, 0, 0, 0).to_raw()
        );
        assert_eq!(raw(315_532_800), FatDateTime::EPOCH.to_raw());
        assert_eq!(raw(0), FatDateTime::EPOCH.to_raw());
        assert_eq!(
            raw(4_354_819_198),
            FatDateTime::new(2107, 12, 31, 23, 59, 58).to_raw()
        );
        assert_eq!(
            raw(u64::MAX),
            FatDateTime::new(2107, 12, 31, 23, 59, 58).to_raw()
        );
        // Raw FAT encoding of 2023-11-14 22:13:20: date (43<<9)|(11<<5)|14, time (22<<11)|(13<<5)|10.
        assert_eq!(
            raw(1_700_000_001),
            ((43 << 9) | (11 << 5) | 14, (22 << 11) | (13 << 5) | 10, 0)
        );
    }

    #[test]
    fn sparse_image_behaves_like_a_zeroed_file() {
        let mut image = SparseImage::new(3 * IMAGE_BLOCK + 512);
        let mut buf = vec![0xaa; 100];
        image.seek(SeekFrom::Start(5)).unwrap();
        image.read_exact(&mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
        // A write across a block boundary lands in two blocks and reads back.
        let data = payload(1000, 5);
        image.seek(SeekFrom::Start(IMAGE_BLOCK - 300)).unwrap();
        image.write_all(&data).unwrap();
        image.seek(SeekFrom::Current(-1000)).unwrap();
        let mut back = vec![0; 1000];
        image.read_exact(&mut back).unwrap();
        assert_eq!(back, data);
        // Zeros into absent blocks allocate nothing; writes past the end fail.
        image.seek(SeekFrom::Start(2 * IMAGE_BLOCK)).unwrap();
        image.write_all(&[0; 4096]).unwrap();
        assert_eq!(image.blocks.len(), 2);
        assert_eq!(image.seek(SeekFrom::End(0)).unwrap(), 3 * IMAGE_BLOCK + 512);
        assert!(image.write_all(b"x").is_err());
        assert_eq!(image.read(&mut back).unwrap(), 0);
        image.seek(SeekFrom::End(-1)).unwrap();
        assert!(
            image.write_all(b"xy").is_err(),
            "the second byte is past the end"
        );
        assert!(image.seek(SeekFrom::Current(-(1 << 40))).is_err());
    }

    #[test]
    fn rejects_bad_paths_and_case_duplicates() {
        let tmp = TempDir::new("paths");
        let img = tmp.join("esp.img");
        for bad in ["", "/EFI/X", "EFI//X", "EFI/../X", "EFI\\BOOT\\X"] {
            let files = [EspFile {
                path: bad,
                data: b"x",
            }];
            assert!(
                write_esp(&img, &files, 33 * MIB, 1, EPOCH).is_err(),
                "{bad:?} accepted"
            );
        }
        let files = [
            EspFile {
                path: "EFI/BOOT/BOOTX64.EFI",
                data: b"x",
            },
            EspFile {
                path: "efi/boot/bootx64.efi",
                data: b"y",
            },
        ];
        let err = write_esp(&img, &files, 33 * MIB, 1, EPOCH).unwrap_err();
        assert!(format!("{err:#}").contains("same FAT file"), "{err:#}");
    }
}
