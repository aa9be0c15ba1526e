//! The host programs a run needs, found on `PATH`, with the install hint when one is missing.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A host program and the Debian package that provides it.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    pub program: &'static str,
    pub package: &'static str,
    /// Environment variable that, when set, names the program's path instead of `PATH` lookup.
    pub env: &'static str,
}

/// The system emulator (package `qemu-system-x86`, bookworm 7.2).
pub const QEMU: Tool = Tool {
    program: "qemu-system-x86_64",
    package: "qemu-system-x86",
    env: "CVM_IMAGE_QEMU",
};

/// The TPM 2.0 emulator behind QEMU's `tpm-emulator` backend.
pub const SWTPM: Tool = Tool {
    program: "swtpm",
    package: "swtpm",
    env: "CVM_IMAGE_SWTPM",
};

/// Finds `tool`: `$CVM_IMAGE_QEMU` / `$CVM_IMAGE_SWTPM` if set, else the first executable on `PATH`.
pub fn find(tool: Tool) -> Result<PathBuf> {
    let var = tool.env;
    if let Some(p) = std::env::var_os(var) {
        let p = PathBuf::from(p);
        if is_executable(&p) {
            return Ok(p);
        }
        bail!("${var} is {}, which is not an executable file", p.display());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    find_in(tool, &path)
}

/// Finds `tool` in the directories of a `PATH`-style list.
pub fn find_in(tool: Tool, path: &std::ffi::OsStr) -> Result<PathBuf> {
    for dir in std::env::split_paths(path) {
        let candidate = dir.join(tool.program);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    bail!(
        "{} not found on PATH: install it with `make deps` (or `apt-get install {}`; the whole set is \
         qemu-system-x86 ovmf swtpm swtpm-tools)",
        tool.program,
        tool.package
    )
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// First line of `program arg`'s output (e.g. its version).
pub fn first_line_of(program: &Path, arg: &str) -> Result<String> {
    let o = Command::new(program)
        .arg(arg)
        .output()
        .with_context(|| format!("cannot run {} {arg}", program.display()))?;
    if !o.status.success() {
        bail!("{} {arg} failed ({})", program.display(), o.status);
    }
    let text = String::from_utf8_lossy(&o.stdout);
    Ok(text.lines().next().unwrap_or_default().trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn finds_an_executable_and_hints_the_package_when_missing() {
        let dir = std::env::temp_dir().join(format!("cvm-tools-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let err = find_in(SWTPM, dir.as_os_str()).unwrap_err().to_string();
        assert!(err.contains("swtpm not found"), "{err}");
        assert!(
            err.contains("make deps") && err.contains("apt-get install swtpm"),
            "{err}"
        );

        // Not executable: still missing.
        let prog = dir.join("swtpm");
        std::fs::write(&prog, "#!/bin/sh\n").unwrap();
        assert!(find_in(SWTPM, dir.as_os_str()).is_err());
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_in(SWTPM, dir.as_os_str()).unwrap(), prog);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
