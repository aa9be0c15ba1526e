//! cvm-init: PID 1 of the cvm-image initramfs.
//!
//! 1. mount devtmpfs, proc, sysfs, securityfs; attach the console;
//! 2. read `/etc/cvm/boot.json` (part of the measured initramfs);
//! 3. load the kernel modules it lists (virtio, dm-verity, squashfs …);
//! 4. wait for the GPT partitions it names (no udev: sysfs + our own GPT reader);
//! 5. open the root with dm-verity using the root hash from the boot config, mount it read-only;
//! 6. mount tmpfs on its /run and /tmp;
//! 7. workload (if configured): root hash from the partition UUIDs → extend PCR 23 → open with
//!    verity → mount read-only → extend PCR 23 with the manifest → runtime event log;
//! 8. switch_root and exec the agent, which stays PID 1.
//!
//! Any failure prints one `cvm-init: FATAL: …` line and powers off: there is no shell and no
//! fallback to an unverified root.

mod blockdev;
mod console;
mod dm;
mod modules;
mod switch_root;
mod sys;
mod verity;
mod workload;

use std::convert::Infallible;

use anyhow::{ensure, Context, Result};
use cvm_measure::boot_config::{BootConfig, BOOT_CONFIG_PATH};
use rustix::mount::MountFlags;

use blockdev::Partition;
use verity::{VerityParams, SECTORS_PER_BLOCK};

/// Where the verified root is assembled before switch_root.
const SYSROOT: &str = "/sysroot";
/// Device-mapper name of the root device.
const ROOT_DM_NAME: &str = "root";
/// tmpfs mounts on the new root: (path, mode option, flags). /run holds the runtime event log and
/// must survive switch_root, so it is mounted on the new root directly.
const SYSROOT_TMPFS: &[(&str, &std::ffi::CStr)] = &[("/run", c"mode=0755"), ("/tmp", c"mode=1777")];

fn main() {
    if rustix::process::getpid() != rustix::process::Pid::INIT {
        eprintln!("cvm-init is the initramfs's PID 1 and deletes the root filesystem's contents; refusing to run as an ordinary process");
        std::process::exit(2);
    }
    std::panic::set_hook(Box::new(|info| {
        console::fatal(&format!("internal error: {info}"));
        sys::power_off();
    }));
    match run() {
        Ok(never) => match never {},
        Err(e) => {
            console::fatal(&format!("{e:#}"));
            sys::power_off();
        }
    }
}

fn run() -> Result<Infallible> {
    sys::mount_early()?;
    // Without a console there is no way to report anything; keep going, the boot may still work.
    let _ = console::attach();
    console::info(concat!("cvm-init ", env!("CARGO_PKG_VERSION"), " started"));

    let config = read_config()?;
    let (now, already) = modules::load_all(&config.modules)?;
    console::info(&format!("loaded {now} modules ({already} already present)"));
    let optional = modules::load_optional(&config.optional_modules)?;
    if !optional.is_empty() {
        console::info(&format!("loaded optional modules: {}", optional.join(" ")));
    }

    let devices = blockdev::wait_for_devices(&config)?;
    console::info(&format!(
        "found root data {} and hash {}",
        devices.root_data.describe(),
        devices.root_hash.describe()
    ));

    open_root(&config, &devices.root_data, &devices.root_hash)?;
    for (dir, opts) in SYSROOT_TMPFS {
        let target = format!("{SYSROOT}{dir}");
        sys::require_dir(&target, "a tmpfs is mounted there")?;
        sys::mount_fs(
            "tmpfs",
            &target,
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            Some(opts),
        )?;
    }

    match (&config.workload, &devices.workload) {
        (Some(cfg), Some((data, hash))) => {
            sys::require_dir(
                &format!("{SYSROOT}{}", cfg.mount_point),
                "the workload is mounted there",
            )?;
            workload::open_and_measure(cfg, data, hash, SYSROOT)?;
        }
        _ => console::info("no workload configured"),
    }

    let agent = &config.agent;
    verify_agent(&format!("{SYSROOT}{}", agent.path))?;
    switch_root::switch_root(SYSROOT)?;
    console::info(&format!("switched root; executing {}", agent.path));
    Err(switch_root::exec_agent(&agent.path, &agent.args))
}

/// Reads the whole agent binary once through dm-verity before handing over. A corrupted block
/// would otherwise surface only when a page of it is first executed — as SIGBUS in PID 1, i.e. a
/// kernel panic instead of a clean FATAL line and power-off. (The pages stay cached for the exec.)
fn verify_agent(path: &str) -> Result<()> {
    let mut f = std::fs::File::open(path)
        .with_context(|| format!("opening the agent {path} (is it in the root image?)"))?;
    ensure!(
        f.metadata().map(|m| m.is_file()).unwrap_or(false),
        "the agent {path} is not a regular file"
    );
    std::io::copy(&mut f, &mut std::io::sink()).with_context(|| {
        format!("reading the agent {path} through dm-verity (the root image is corrupted)")
    })?;
    Ok(())
}

fn read_config() -> Result<BootConfig> {
    let path = format!("/{BOOT_CONFIG_PATH}");
    let bytes = std::fs::read(&path)
        .with_context(|| format!("reading {path} (the initramfs was not built by cvm-image?)"))?;
    BootConfig::from_json(&bytes).with_context(|| format!("parsing {path}"))
}

/// Opens the root with the verity parameters of the boot config and mounts it read-only.
fn open_root(config: &BootConfig, data: &Partition, hash: &Partition) -> Result<()> {
    let r = &config.root;
    let params = VerityParams {
        data_dev: data.dev.clone(),
        hash_dev: hash.dev.clone(),
        data_blocks: r.data_blocks,
        hash_start_block: r.hash_start_block,
        root_hash: r.root_hash_bytes()?,
        salt: r.salt_bytes()?,
    };
    open_verity(
        ROOT_DM_NAME,
        data,
        &params,
        &r.fstype,
        SYSROOT,
        MountFlags::empty(),
    )
}

/// Creates the verity device `name` over `data` and mounts it read-only at `target`.
pub(crate) fn open_verity(
    name: &str,
    data: &Partition,
    params: &VerityParams,
    fstype: &str,
    target: &str,
    flags: MountFlags,
) -> Result<()> {
    ensure!(
        data.sectors >= params.data_blocks * SECTORS_PER_BLOCK,
        "{} holds {} sectors but its verity tree covers {} blocks ({} sectors): wrong partition or truncated image",
        data.name,
        data.sectors,
        params.data_blocks,
        params.data_blocks * SECTORS_PER_BLOCK
    );
    let dev = dm::create_readonly(name, params.sectors(), "verity", &params.target_params())
        .with_context(|| format!("opening {name} ({}) with dm-verity", data.name))?;
    let node = dm::make_node(name, dev)?;
    sys::mount_fs(&node, target, fstype, flags | MountFlags::RDONLY, None).with_context(|| {
        format!("{name} did not mount: a dm-verity error in the kernel log above means the image does not match its root hash")
    })?;
    console::info(&format!(
        "mounted {name} ({} → dm {}:{}, {fstype}, verity root {}) read-only at {target}",
        data.name,
        dev.0,
        dev.1,
        hex::encode(params.root_hash)
    ));
    Ok(())
}
