//! Loading the kernel module closure listed in the boot config, in order.

use std::fs::File;

use anyhow::{Context, Result};

/// `MODULE_INIT_COMPRESSED_FILE` (Linux 6.4+, `include/uapi/linux/module.h`): the fd holds a
/// compressed module that the kernel decompresses itself (CONFIG_MODULE_DECOMPRESS).
pub const MODULE_INIT_COMPRESSED_FILE: i32 = 4;

/// finit_module flags for a module file: compressed files are handed over as they are (the
/// signature is over the uncompressed module, which the kernel checks after decompressing).
pub fn flags_for(path: &str) -> i32 {
    if path.ends_with(".ko.xz") || path.ends_with(".ko.zst") || path.ends_with(".ko.gz") {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    }
}

/// Outcome of loading one module.
#[derive(Debug, PartialEq, Eq)]
pub enum Loaded {
    Now,
    /// EEXIST: already loaded (or built in under the same name).
    Already,
}

/// Loads `/`+`path` with finit_module.
pub fn load(path: &str) -> Result<Loaded> {
    let full = format!("/{path}");
    let f = File::open(&full).with_context(|| format!("opening module {full}"))?;
    match rustix::system::finit_module(&f, c"", flags_for(path)) {
        Ok(()) => Ok(Loaded::Now),
        Err(rustix::io::Errno::EXIST) => Ok(Loaded::Already),
        Err(e) => Err(e).with_context(|| {
            format!("loading module {full} (see the kernel log above for the reason)")
        }),
    }
}

/// Loads the optional modules in order; one whose device is absent (ENODEV, ENXIO: a TEE driver
/// outside its TEE, Hyper-V's VMBus outside Hyper-V) is reported and skipped, and so is one whose
/// optional dependency was skipped (ENOENT: unknown symbols). Returns the names loaded.
pub fn load_optional(paths: &[String]) -> Result<Vec<String>> {
    let mut loaded = vec![];
    for p in paths {
        let name = p.rsplit('/').next().unwrap_or(p).to_string();
        match load(p) {
            Ok(_) => loaded.push(name),
            Err(e) => match e.root_cause().downcast_ref::<rustix::io::Errno>() {
                Some(&rustix::io::Errno::NODEV) | Some(&rustix::io::Errno::NXIO) => {
                    crate::console::info(&format!(
                        "optional module {name}: no such device here, skipped"
                    ));
                }
                Some(&rustix::io::Errno::NOENT) => {
                    crate::console::info(&format!(
                        "optional module {name}: a dependency was skipped, skipped too"
                    ));
                }
                _ => return Err(e),
            },
        }
    }
    Ok(loaded)
}

/// Loads every module in order.
pub fn load_all(paths: &[String]) -> Result<(usize, usize)> {
    let (mut now, mut already) = (0, 0);
    for p in paths {
        match load(p)? {
            Loaded::Now => now += 1,
            Loaded::Already => already += 1,
        }
    }
    Ok((now, already))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_flag_by_suffix() {
        assert_eq!(
            flags_for("lib/modules/6.12.117+deb12-amd64/kernel/drivers/md/dm-verity.ko.xz"),
            4
        );
        assert_eq!(
            flags_for("lib/modules/6.1.0-56-amd64/kernel/drivers/md/dm-verity.ko"),
            0
        );
    }
}
