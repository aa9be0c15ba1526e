//! The arguments every command that reads a spec shares: where the spec, lock and cache are.

use crate::fetch::InputPaths;
use crate::spec::Spec;
use std::path::PathBuf;

// Where the spec, the lock file and the cache are (no doc comment: clap would show it as help).
#[derive(clap::Args, Debug, Clone)]
pub struct InputArgs {
    /// The image spec.
    #[arg(long, default_value = "image.toml")]
    pub spec: PathBuf,
    /// Lock file (default: cvm-image.lock beside the spec).
    #[arg(long)]
    pub lock: Option<PathBuf>,
    /// Input and stage cache directory (default: ~/.cache/cvm-image).
    #[arg(long, env = "CVM_IMAGE_CACHE")]
    pub cache: Option<PathBuf>,
}

impl InputArgs {
    /// The lock and cache paths for `spec`, defaults filled in.
    pub fn paths(&self, spec: &Spec) -> InputPaths {
        InputPaths::resolve(spec, self.lock.clone(), self.cache.clone())
    }
}
