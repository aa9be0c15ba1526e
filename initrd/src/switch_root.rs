//! switch_root: make the verified root the root of the system and exec the agent as PID 1.
//!
//! The initramfs is the kernel's initial rootfs, which cannot be unmounted or pivot_root'ed away;
//! the classic sequence (klibc run-init, busybox switch_root) is: move the API filesystems into the
//! new root, delete the initramfs contents (else their memory is never freed), move the new root
//! onto `/`, chroot into it, exec.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rustix::fs::{statfs, StatFs};
use rustix::mount::mount_move;

/// `RAMFS_MAGIC` and `TMPFS_MAGIC` (`include/uapi/linux/magic.h`): the only filesystems the
/// initramfs can be on; anything else means we are not where we think and must not delete.
const RAMFS_MAGIC: i64 = 0x8584_58f6;
const TMPFS_MAGIC: i64 = 0x0102_1994;
/// Mounts carried over into the new root.
const MOVED_MOUNTS: &[&str] = &["/dev", "/proc", "/sys"];
/// The agent's environment: nothing inherited from the kernel command line.
const AGENT_PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `f_type` is i64 on x86_64 but narrower elsewhere; widen explicitly.
#[allow(clippy::unnecessary_cast)]
fn fs_magic(s: &StatFs) -> i64 {
    s.f_type as i64
}

/// Moves the API filesystems, frees the initramfs and enters `new_root`.
pub fn switch_root(new_root: &str) -> Result<()> {
    for m in MOVED_MOUNTS {
        let target = format!("{new_root}{m}");
        crate::sys::require_dir(&target, "API filesystems are moved there")?;
        mount_move(*m, target.as_str()).with_context(|| format!("moving {m} to {target}"))?;
    }
    free_initramfs(new_root)?;
    rustix::process::chdir(new_root).with_context(|| format!("chdir {new_root}"))?;
    mount_move(".", "/").with_context(|| format!("moving {new_root} onto /"))?;
    rustix::process::chroot(".").context("chroot into the new root")?;
    rustix::process::chdir("/").context("chdir / in the new root")?;
    Ok(())
}

/// Deletes everything on the initramfs (same filesystem as `/`), not descending into mounts.
fn free_initramfs(new_root: &str) -> Result<()> {
    let magic = fs_magic(&statfs("/").context("statfs /")?);
    if magic != RAMFS_MAGIC && magic != TMPFS_MAGIC {
        bail!("/ is not the initramfs (filesystem magic {magic:#x}); refusing to delete it");
    }
    let root_dev = std::fs::symlink_metadata("/").context("stat /")?.dev();
    let new_root_dev = std::fs::symlink_metadata(new_root)
        .with_context(|| format!("stat {new_root}"))?
        .dev();
    if new_root_dev == root_dev {
        bail!("{new_root} is not a mount point; refusing to switch to it");
    }
    remove_contents(Path::new("/"), root_dev)
}

fn remove_contents(dir: &Path, root_dev: u64) -> Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        let meta =
            std::fs::symlink_metadata(&path).with_context(|| format!("stat {}", path.display()))?;
        if meta.dev() != root_dev {
            continue; // a mount point (the new root): not ours to delete
        }
        if meta.is_dir() {
            remove_contents(&path, root_dev)?;
            std::fs::remove_dir(&path).with_context(|| format!("removing {}", path.display()))?;
        } else {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// Replaces this process (PID 1) with the agent. Returns only on failure.
pub fn exec_agent(path: &str, args: &[String]) -> anyhow::Error {
    let err = std::process::Command::new(path)
        .args(args)
        .env_clear()
        .env("PATH", AGENT_PATH_ENV)
        .env("HOME", "/")
        .env("TERM", "linux")
        .exec();
    anyhow::Error::new(err).context(format!("executing the agent {path}"))
}
