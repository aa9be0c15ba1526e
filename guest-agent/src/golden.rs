//! `GET /golden-measurement`: the golden measurement the build embedded in this image's ESP.
//!
//! The build predicts the image's PCRs and then writes the prediction to the ESP as
//! `\cvm\golden-measurement.json` (and, when signed, `golden-measurement.json.sig` in
//! `cvm-image golden sign`'s format). The ESP's files are not measured — the firmware measures
//! the UKI's Authenticode hash and the GPT only — so the file can live in the image it predicts.
//! For the same reason it proves nothing by itself: anyone who can write the disk can change it.
//! A verifier trusts it only through its signature (`cvm-image verify --golden-from-agent
//! --golden-pubkey`), and the agent serves the exact bytes (base64) so the signature can be
//! checked over them.
//!
//! Finding the ESP without udev or a vfat module: the disk is the one holding the root
//! filesystem — `/` is a dm-verity device whose `slaves/` in sysfs are partitions of that disk —
//! and its GPT (read with `cvm_disk::gpt`) names the EFI System Partition. The FAT volume is read
//! in place (`cvm_disk::fat`) through a
//! [`PartitionReader`] (positioned reads of the partition's byte range; nothing is mounted and
//! only the sectors on the path to the two files are read). The answer is cached for the boot.
//!
//! `CVM_GOLDEN_DISK=PATH` replaces the discovery with a disk (or disk image) to read, for tests
//! and for a root that is not on the boot disk.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use cvm_disk::esp_paths::{GOLDEN as ESP_GOLDEN_PATH, GOLDEN_SIG as ESP_GOLDEN_SIG_PATH};
use cvm_disk::fat::Volume;
use cvm_disk::gpt::Gpt;
use cvm_disk::guid::ESP_TYPE;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::OnceCell;

use crate::http::error::ApiError;

/// Environment variable naming the disk to read instead of the root filesystem's.
pub const DISK_ENV: &str = "CVM_GOLDEN_DISK";
/// Largest embedded file served (a golden file is ~60 KiB; the ESP is not measured, so its
/// content is not trusted to be small).
const MAX_FILE_BYTES: usize = 8 << 20;
/// sysfs directory of block devices by device number (`/sys/dev/block/MAJ:MIN`).
const SYS_DEV_BLOCK: &str = "/sys/dev/block";
/// sysfs directory of block devices by name.
const SYS_CLASS_BLOCK: &str = "/sys/class/block";

/// Where the ESP is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GoldenSource {
    /// The disk holding the root filesystem (the guest's case).
    RootDisk,
    /// This disk or disk image.
    Disk(PathBuf),
}

impl GoldenSource {
    /// [`DISK_ENV`] when set, else the root filesystem's disk.
    pub fn from_env() -> Self {
        match std::env::var_os(DISK_ENV) {
            Some(p) if !p.is_empty() => GoldenSource::Disk(p.into()),
            _ => GoldenSource::RootDisk,
        }
    }

    fn disk(&self) -> Result<PathBuf> {
        match self {
            GoldenSource::Disk(p) => Ok(p.clone()),
            GoldenSource::RootDisk => root_disk(),
        }
    }
}

/// The two files as the ESP holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Embedded {
    pub golden: Vec<u8>,
    pub signature: Option<Vec<u8>>,
}

/// Reads the embedded golden measurement: `Ok(None)` when the ESP has none (an image built
/// before embedding, or one whose ESP was stripped).
pub fn load(source: &GoldenSource) -> Result<Option<Embedded>> {
    let disk = source.disk()?;
    let mut file =
        File::open(&disk).with_context(|| format!("opening the boot disk {}", disk.display()))?;
    let (start, len) =
        find_esp(&mut file).with_context(|| format!("finding the ESP on {}", disk.display()))?;
    let volume = Volume::open(PartitionReader::new(file, start, len))
        .with_context(|| format!("the ESP of {}", disk.display()))?;
    let Some(golden) = read_file(&volume, ESP_GOLDEN_PATH)? else {
        return Ok(None);
    };
    let signature = read_file(&volume, ESP_GOLDEN_SIG_PATH)?;
    Ok(Some(Embedded { golden, signature }))
}

/// Byte range (start, length) of the first ESP in the GPT of `disk` (512- or 4096-byte sectors).
pub fn find_esp(disk: &mut File) -> Result<(u64, u64)> {
    let gpt = Gpt::find(disk).context("reading the GPT")?;
    let esp = gpt
        .first_of_type(&ESP_TYPE)
        .context("the GPT has no EFI System Partition")?;
    Ok(esp.byte_range(gpt.sector))
}

/// The file at `path` of the ESP, `None` when it is not there; at most [`MAX_FILE_BYTES`].
fn read_file<D: Read + Seek>(volume: &Volume<D>, path: &str) -> Result<Option<Vec<u8>>> {
    volume
        .read_file(path, MAX_FILE_BYTES)
        .with_context(|| format!("reading esp:/{path}"))
}

/// `/dev/DISK` of the disk that holds the root filesystem.
///
/// `/` is a dm-verity device (`/sys/dev/block/MAJ:MIN/slaves/` lists its data and hash
/// partitions, both on the boot disk), or directly a partition; a partition's sysfs directory
/// sits inside its disk's.
pub fn root_disk() -> Result<PathBuf> {
    let st = rustix::fs::stat("/").context("stat /")?;
    let dev = format!(
        "{}:{}",
        rustix::fs::major(st.st_dev),
        rustix::fs::minor(st.st_dev)
    );
    let node = Path::new(SYS_DEV_BLOCK).join(&dev);
    let mut slaves: Vec<String> = std::fs::read_dir(node.join("slaves"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    slaves.sort();
    let part = match slaves.first() {
        Some(name) => Path::new(SYS_CLASS_BLOCK).join(name),
        None => node,
    };
    let real = std::fs::canonicalize(&part).with_context(|| {
        format!(
            "resolving {} (the root's block device {dev})",
            part.display()
        )
    })?;
    if !real.join("partition").exists() {
        bail!(
            "the root filesystem ({dev}, {}) is not on a disk partition",
            real.display()
        );
    }
    let disk = real
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .with_context(|| format!("no disk above {}", real.display()))?;
    Ok(Path::new("/dev").join(disk))
}

/// `Read + Seek` over the byte range `[start, start + len)` of a file or block device, by
/// positioned reads: the FAT code sees a volume starting at 0, and never reads outside it.
pub struct PartitionReader {
    file: File,
    start: u64,
    len: u64,
    pos: u64,
}

impl PartitionReader {
    pub fn new(file: File, start: u64, len: u64) -> Self {
        PartitionReader {
            file,
            start,
            len,
            pos: 0,
        }
    }
}

impl Read for PartitionReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let room = self.len.saturating_sub(self.pos);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.start + self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for PartitionReader {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(delta) => self.len.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.pos.checked_add_signed(delta),
        };
        self.pos = target.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before the partition's start",
            )
        })?;
        Ok(self.pos)
    }
}

/// `GET /golden-measurement` body.
#[derive(Debug, Serialize)]
pub struct GoldenResponse {
    /// The embedded JSON, verbatim.
    pub golden: Box<RawValue>,
    /// The exact embedded bytes (standard base64), over which the signature is checked.
    pub golden_b64: String,
    /// The embedded signature file (JSON), or null when the image's golden file is unsigned.
    pub signature: Option<Box<RawValue>>,
    /// Where it was read: `esp:/cvm/golden-measurement.json`.
    pub source: String,
}

impl GoldenResponse {
    /// The response for `e`; an embedded file that is not JSON is an error (the ESP is not
    /// measured, so it may have been altered — or damaged).
    pub fn new(e: &Embedded) -> Result<Self> {
        let json = |bytes: &[u8], path: &str| -> Result<Box<RawValue>> {
            let text =
                std::str::from_utf8(bytes).with_context(|| format!("esp:/{path} is not UTF-8"))?;
            RawValue::from_string(text.trim_end().to_string())
                .with_context(|| format!("esp:/{path} is not JSON"))
        };
        Ok(GoldenResponse {
            golden: json(&e.golden, ESP_GOLDEN_PATH)?,
            golden_b64: base64::engine::general_purpose::STANDARD.encode(&e.golden),
            signature: e
                .signature
                .as_deref()
                .map(|s| json(s, ESP_GOLDEN_SIG_PATH))
                .transpose()?,
            source: format!("esp:/{ESP_GOLDEN_PATH}"),
        })
    }
}

/// The loaded files, once per boot (errors are not cached: the next request retries).
struct Cache {
    source: GoldenSource,
    loaded: OnceCell<Option<Arc<Embedded>>>,
}

impl Cache {
    async fn get(&self) -> Result<Option<Arc<Embedded>>, ApiError> {
        self.loaded
            .get_or_try_init(|| async {
                let source = self.source.clone();
                tokio::task::spawn_blocking(move || load(&source))
                    .await
                    .map_err(|e| {
                        ApiError::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            format!("golden read task: {e}"),
                        )
                    })?
                    .map(|found| found.map(Arc::new))
                    .map_err(|e| {
                        ApiError::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            format!("reading the golden measurement from the ESP: {e:#}"),
                        )
                    })
            })
            .await
            .cloned()
    }
}

async fn respond(cache: &Cache) -> Result<Response, ApiError> {
    let Some(embedded) = cache.get().await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "this image has no embedded golden measurement (esp:/{ESP_GOLDEN_PATH} is \
                 absent; images built by cvm-image embed it)"
            ),
        ));
    };
    let body = GoldenResponse::new(&embedded)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
    Ok(Json(body).into_response())
}

/// `GET /golden-measurement`, reading the ESP named by [`GoldenSource::from_env`].
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    routes_for(GoldenSource::from_env())
}

/// `GET /golden-measurement`, reading the ESP of `source`.
pub fn routes_for<S: Clone + Send + Sync + 'static>(source: GoldenSource) -> Router<S> {
    let cache = Arc::new(Cache {
        source,
        loaded: OnceCell::new(),
    });
    Router::new().route(
        "/golden-measurement",
        get(move || {
            let cache = cache.clone();
            async move { respond(&cache).await }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_reader_stays_inside_its_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        let bytes: Vec<u8> = (0..=255u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let mut r = PartitionReader::new(File::open(&path).unwrap(), 16, 32);
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all, bytes[16..48]);
        assert_eq!(r.seek(SeekFrom::End(-2)).unwrap(), 30);
        let mut two = [0u8; 8];
        assert_eq!(r.read(&mut two).unwrap(), 2);
        assert_eq!(&two[..2], &bytes[46..48]);
        assert_eq!(r.seek(SeekFrom::Start(100)).unwrap(), 100);
        assert_eq!(r.read(&mut two).unwrap(), 0, "past the end reads nothing");
        assert!(r.seek(SeekFrom::Current(-101)).is_err());
    }

    #[test]
    fn response_keeps_the_bytes_and_rejects_non_json() {
        let golden = b"{\n  \"b\": 1,\n  \"a\": [2]\n}\n".to_vec();
        let e = Embedded {
            golden: golden.clone(),
            signature: None,
        };
        let json = serde_json::to_string(&GoldenResponse::new(&e).unwrap()).unwrap();
        // Key order and layout are the file's (RawValue), not re-serialised.
        assert!(
            json.starts_with("{\"golden\":{\n  \"b\": 1,\n  \"a\": [2]\n}"),
            "{json}"
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        assert_eq!(
            b64.decode(v["golden_b64"].as_str().unwrap()).unwrap(),
            golden
        );
        assert_eq!(v["signature"], serde_json::Value::Null);

        let bad = Embedded {
            golden: b"{not json".to_vec(),
            signature: None,
        };
        let err = format!("{:#}", GoldenResponse::new(&bad).unwrap_err());
        assert!(
            err.contains("esp:/cvm/golden-measurement.json is not JSON"),
            "{err}"
        );
    }
}
