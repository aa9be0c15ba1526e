//! Reading one file out of a FAT volume (the ESP) in place, through any `Read + Seek` — a partition
//! range of a disk device, or an image in memory — without mounting anything.

use hadris_fat::{FatVolume, FatVolumeReadExt};
use std::io::{Read, Seek};

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FatError {
    #[error("not a readable FAT volume: {0}")]
    Volume(String),
    #[error("reading {path}: {detail}")]
    Read { path: String, detail: String },
    #[error("{0} is a directory")]
    Directory(String),
    #[error("{path} is {size} bytes, more than the {limit} allowed")]
    TooLarge {
        path: String,
        size: usize,
        limit: usize,
    },
    #[error("{path} ends after {got} of {size} bytes")]
    Short {
        path: String,
        got: usize,
        size: usize,
    },
    #[error("empty path")]
    EmptyPath,
}

/// A FAT volume opened for reading.
pub struct Volume<D: Read + Seek> {
    inner: FatVolume<D>,
}

impl<D: Read + Seek> Volume<D> {
    pub fn open(device: D) -> Result<Self, FatError> {
        FatVolume::open(device)
            .map(|inner| Volume { inner })
            .map_err(|e| FatError::Volume(format!("{e:?}")))
    }

    /// The file at `path` (`/`-separated, matched the FAT way: case-insensitively, long or short
    /// names), `None` when a component is missing; at most `limit` bytes.
    pub fn read_file(&self, path: &str, limit: usize) -> Result<Option<Vec<u8>>, FatError> {
        let err = |e: hadris_fat::Error| FatError::Read {
            path: path.to_owned(),
            detail: format!("{e:?}"),
        };
        let mut parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let name = parts.pop().ok_or(FatError::EmptyPath)?;
        let mut dir = self.inner.root_dir();
        for component in parts {
            dir = match dir.find(component).map_err(err)? {
                Some(e) if e.is_directory() => self.inner.open_dir_entry(&e).map_err(err)?,
                _ => return Ok(None),
            };
        }
        let Some(entry) = dir.find(name).map_err(err)? else {
            return Ok(None);
        };
        if entry.is_directory() {
            return Err(FatError::Directory(path.to_owned()));
        }
        let mut reader = self.inner.read_file(&entry).map_err(err)?;
        let size = reader.size();
        if size > limit {
            return Err(FatError::TooLarge {
                path: path.to_owned(),
                size,
                limit,
            });
        }
        let mut data = vec![0u8; size];
        let mut got = 0;
        while got < size {
            let n = reader.read(&mut data[got..]).map_err(err)?;
            if n == 0 {
                return Err(FatError::Short {
                    path: path.to_owned(),
                    got,
                    size,
                });
            }
            got += n;
        }
        Ok(Some(data))
    }
}
