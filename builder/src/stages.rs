//! Content-addressed cache of pipeline stages.
//!
//! A stage's output directory is keyed by a hash of everything that determines it — its inputs and the
//! builder executable itself, so a changed builder never reuses an old result. A rebuild where only the
//! workload changed therefore reuses the root filesystem, its verity tree, the initramfs and the UKI.
//! Results are built in a temporary directory and renamed into place: an interrupted build never leaves
//! a half-written stage behind.

use anyhow::{Context, Result};
use serde::{de::DeserializeOwned, Serialize};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const META: &str = "meta.json";

pub struct StageCache {
    root: PathBuf,
}

/// Hash of the running cvm-image executable: part of every stage key.
fn builder_identity() -> Result<[u8; 32]> {
    static ID: OnceLock<[u8; 32]> = OnceLock::new();
    if let Some(id) = ID.get() {
        return Ok(*id);
    }
    let exe = std::env::current_exe().context("cannot locate the cvm-image executable")?;
    let id = crate::ids::sha256_file(&exe)?;
    Ok(*ID.get_or_init(|| id))
}

impl StageCache {
    pub fn new(root: PathBuf) -> Self {
        StageCache {
            root: root.join("stages"),
        }
    }

    /// The stage's cached output directory and metadata, building it with `build(dir)` on a miss.
    pub fn get_or_build<T, F>(
        &self,
        stage: &str,
        key_parts: &[&[u8]],
        build: F,
    ) -> Result<(PathBuf, T)>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(&Path) -> Result<T>,
    {
        let me = builder_identity()?;
        let mut parts: Vec<&[u8]> = vec![&me];
        parts.extend_from_slice(key_parts);
        let key = crate::ids::derive(stage, &parts);
        let dir = self
            .root
            .join(format!("{stage}-{}", hex::encode(&key[..16])));
        if let Some(meta) = Self::load(&dir)? {
            eprintln!("cvm-image: {stage}: reused cached result");
            return Ok((dir, meta));
        }
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("cannot create {}", self.root.display()))?;
        let tmp = self
            .root
            .join(format!(".tmp-{stage}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let meta = match build(&tmp) {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        std::fs::write(tmp.join(META), serde_json::to_vec_pretty(&meta)?)?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir)
            .with_context(|| format!("cannot move {} to {}", tmp.display(), dir.display()))?;
        Ok((dir, meta))
    }

    fn load<T: DeserializeOwned>(dir: &Path) -> Result<Option<T>> {
        let p = dir.join(META);
        match std::fs::read(&p) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
        }
    }
}
