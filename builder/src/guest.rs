//! The guest binaries (init, agent, workload programs), built from this workspace.
//!
//! They are static (`+crt-static` on the gnu target: the musl target cannot be installed on every build
//! machine) and reproducible: `--remap-path-prefix` hides the checkout and cargo-home paths, so two clones
//! in different directories produce the same bytes. An explicit `--target` keeps proc-macros and build
//! scripts dynamic, which `+crt-static` would otherwise break.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";
pub const GUEST_PROFILE: &str = "guest";
pub const INIT_PACKAGE: &str = "cvm-init";
pub const AGENT_PACKAGE: &str = "cvm-agent";

/// Paths of the built guest binaries.
#[derive(Debug, Clone)]
pub struct GuestBinaries {
    pub init: PathBuf,
    pub agent: PathBuf,
    /// (package, bin) → path
    pub extra: Vec<((String, String), PathBuf)>,
}

impl GuestBinaries {
    pub fn extra(&self, package: &str, bin: &str) -> Option<&Path> {
        self.extra
            .iter()
            .find(|((p, b), _)| p == package && b == bin)
            .map(|(_, path)| path.as_path())
    }
}

/// The cargo workspace holding the guest crates: `$CVM_IMAGE_WORKSPACE`, else the first ancestor of
/// `start` with a `[workspace]` Cargo.toml that has the init crate.
pub fn find_workspace(start: &Path) -> Result<PathBuf> {
    if let Some(ws) = std::env::var_os("CVM_IMAGE_WORKSPACE") {
        return Ok(PathBuf::from(ws));
    }
    for dir in start.ancestors() {
        if dir.join("Cargo.toml").is_file() && dir.join("initrd/Cargo.toml").is_file() {
            return Ok(dir.to_path_buf());
        }
    }
    bail!(
        "no cvm-image workspace (with initrd/Cargo.toml) above {}: the guest init and agent are built from it; \
         set CVM_IMAGE_WORKSPACE to a checkout of cvm-image",
        start.display()
    )
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

/// Build the init, the agent and the requested extra binaries (`(package, bin)`), returning their paths.
pub fn build(workspace: &Path, extra: &[(String, String)]) -> Result<GuestBinaries> {
    let target_dir = std::env::var_os("CVM_IMAGE_GUEST_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target/guest"));
    let rustflags = [
        "-C target-feature=+crt-static".to_string(),
        format!("--remap-path-prefix={}=/cvm-image", workspace.display()),
        format!("--remap-path-prefix={}=/cargo", cargo_home().display()),
        // The build-id is a hash of the output; keep the linker from adding anything else host-specific.
        "-C link-arg=-Wl,--build-id=sha1".to_string(),
    ]
    .join(" ");

    let mut packages = vec![INIT_PACKAGE.to_string(), AGENT_PACKAGE.to_string()];
    for (p, _) in extra {
        if !packages.contains(p) {
            packages.push(p.clone());
        }
    }
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace)
        .args([
            "build",
            "--locked",
            "--profile",
            GUEST_PROFILE,
            "--target",
            GUEST_TARGET,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTFLAGS", &rustflags)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC_WRAPPER");
    for p in &packages {
        cmd.args(["-p", p]);
    }
    eprintln!(
        "cvm-image: building guest binaries ({})",
        packages.join(", ")
    );
    let status = cmd
        .status()
        .with_context(|| format!("cannot run cargo in {}", workspace.display()))?;
    if !status.success() {
        bail!("building the guest binaries failed ({status}); see cargo's messages above");
    }
    let bin_dir = target_dir.join(GUEST_TARGET).join(GUEST_PROFILE);
    let existing = |name: &str| -> Result<PathBuf> {
        let p = bin_dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            bail!("cargo succeeded but {} is missing", p.display())
        }
    };
    Ok(GuestBinaries {
        init: existing("cvm-init")?,
        agent: existing("cvm-agent")?,
        extra: extra
            .iter()
            .map(|(p, b)| Ok(((p.clone(), b.clone()), existing(b)?)))
            .collect::<Result<_>>()?,
    })
}
