//! Mounts, directories and power: the few system calls PID 1 needs, with errors that say what.

use std::path::Path;

use anyhow::{Context, Result};
use rustix::mount::{mount, MountFlags};

/// Filesystems the initramfs needs before anything else: (source, target, fstype, flags).
const EARLY_MOUNTS: &[(&str, &str, &str, MountFlags)] = &[
    ("devtmpfs", "/dev", "devtmpfs", MountFlags::NOSUID),
    (
        "proc",
        "/proc",
        "proc",
        MountFlags::NOSUID
            .union(MountFlags::NODEV)
            .union(MountFlags::NOEXEC),
    ),
    (
        "sysfs",
        "/sys",
        "sysfs",
        MountFlags::NOSUID
            .union(MountFlags::NODEV)
            .union(MountFlags::NOEXEC),
    ),
    (
        "securityfs",
        "/sys/kernel/security",
        "securityfs",
        MountFlags::NOSUID
            .union(MountFlags::NODEV)
            .union(MountFlags::NOEXEC),
    ),
];

/// Mounts devtmpfs, proc, sysfs and securityfs (the last one exposes the firmware TPM event log
/// at /sys/kernel/security/tpm0/binary_bios_measurements for the agent).
pub fn mount_early() -> Result<()> {
    for (src, target, fstype, flags) in EARLY_MOUNTS {
        mount_fs(src, target, fstype, *flags, None)?;
    }
    Ok(())
}

/// Mounts `fstype` at `target`, creating the directory first when it is missing (and creatable).
pub fn mount_fs(
    src: &str,
    target: &str,
    fstype: &str,
    flags: MountFlags,
    data: Option<&std::ffi::CStr>,
) -> Result<()> {
    if !Path::new(target).is_dir() {
        std::fs::create_dir_all(target)
            .with_context(|| format!("creating mount point {target}"))?;
    }
    mount(src, target, fstype, flags, data)
        .with_context(|| format!("mounting {fstype} {src} at {target}"))
}

/// Checks that a mount point exists in a read-only tree (where it cannot be created).
pub fn require_dir(path: &str, why: &str) -> Result<()> {
    if Path::new(path).is_dir() {
        Ok(())
    } else {
        anyhow::bail!("{path} does not exist ({why}); the root image must contain this directory")
    }
}

/// Flushes and powers off. Never returns: if the power-off call fails, PID 1 waits forever
/// rather than exiting (an exiting PID 1 panics the kernel, and `panic=-1` would reboot).
pub fn power_off() -> ! {
    rustix::fs::sync();
    let _ = rustix::system::reboot(rustix::system::RebootCommand::PowerOff);
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
