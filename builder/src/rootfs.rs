//! The two file trees that become squashfs images: the root filesystem and the workload.
//!
//! The root is the `rootfs/` overlay, the guest agent and the mount points the init needs — nothing from
//! the build host. The workload is the listed parts of `workload/` plus the workload binaries built from
//! this workspace; it never influences the root (one base image serves many workloads).

use crate::fstree::{FileSource, FsTree};
use crate::guest::GuestBinaries;
use crate::spec::{Spec, WorkloadSection};
use anyhow::{bail, Context, Result};

/// Where the agent lives in the root; the init's boot config names it.
pub const AGENT_PATH: &str = "/usr/bin/cvm-agent";
/// Where the init mounts the workload partition.
pub const WORKLOAD_MOUNT: &str = "/workload";
/// The workload's manifest, measured into PCR 23 by the init.
pub const WORKLOAD_MANIFEST: &str = "workload.toml";

/// Directories the init mounts over; they must exist in the read-only root.
const MOUNT_POINTS: &[&str] = &["/dev", "/proc", "/sys", "/run", "/tmp", WORKLOAD_MOUNT];

pub fn root_tree(spec: &Spec, guest: &GuestBinaries) -> Result<FsTree> {
    let mut tree = FsTree::new();
    for dir in MOUNT_POINTS {
        tree.add_dir(dir, 0o755)?;
    }
    tree.add_host_dir(&spec.rootfs.overlay, "/")
        .with_context(|| format!("root overlay {}", spec.rootfs.overlay.display()))?;
    tree.add_file(AGENT_PATH, FileSource::Host(guest.agent.clone()), 0o755)?;
    Ok(tree)
}

pub fn workload_tree(w: &WorkloadSection, guest: &GuestBinaries) -> Result<FsTree> {
    let mut tree = FsTree::new();
    if !w.dir.join(WORKLOAD_MANIFEST).is_file() {
        bail!(
            "workload directory {} has no {WORKLOAD_MANIFEST}: the init measures it and the agent starts its services",
            w.dir.display()
        );
    }
    if w.include.is_empty() {
        tree.add_host_dir(&w.dir, "/")?;
    }
    for item in &w.include {
        let src = w.dir.join(item);
        let dest = format!("/{}", item.trim_matches('/'));
        if src.is_dir() {
            tree.add_host_dir(&src, &dest)?;
        } else if src.is_file() {
            tree.add_file(&dest, FileSource::Host(src.clone()), host_mode(&src)?)?;
        } else {
            bail!(
                "[workload] include names {}, which does not exist",
                src.display()
            );
        }
    }
    for b in &w.binaries {
        let path = guest
            .extra(&b.package, &b.bin)
            .with_context(|| format!("workload binary {}/{} was not built", b.package, b.bin))?;
        tree.add_file(
            &format!("/{}", b.dest.trim_start_matches('/')),
            FileSource::Host(path.to_path_buf()),
            0o755,
        )?;
    }
    Ok(tree)
}

/// 0755 if any execute bit is set, else 0644: the host's umask never leaks into the image.
fn host_mode(p: &std::path::Path) -> Result<u16> {
    use std::os::unix::fs::PermissionsExt;
    let m = std::fs::metadata(p).with_context(|| format!("cannot stat {}", p.display()))?;
    Ok(if m.permissions().mode() & 0o111 != 0 {
        0o755
    } else {
        0o644
    })
}
