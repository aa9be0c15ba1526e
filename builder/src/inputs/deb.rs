//! Reading `.deb` packages in pure Rust, so building an image needs no `dpkg-deb` on the host.
//!
//! A `.deb` (deb(5)) is an `ar` archive whose first member is `debian-binary` (`2.0\n`), followed by
//! `control.tar[.gz|.xz|.zst]` and `data.tar[.gz|.xz|.zst|.bz2]`. Only what images need is read:
//! the data tree (files, directories, symlinks, hard links with their modes and mtimes) and fields of
//! the `control` file.

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// ar member that identifies the format; must come first (deb(5)).
const DEBIAN_BINARY: &str = "debian-binary";
/// Format major version we understand; minor versions are compatible by definition (deb(5)).
const DEB_FORMAT_MAJOR: &str = "2.";
/// Prefix of the member holding the installed files.
const DATA_MEMBER: &str = "data.tar";
/// Prefix of the member holding the package metadata.
const CONTROL_MEMBER: &str = "control.tar";

/// Extract the data tree of `deb` into `dest` (created if missing), like `dpkg-deb -x`: regular
/// files, directories, symlinks and hard links, with permission bits and mtimes; ownership is not
/// restored (the tree belongs to the caller, as with `dpkg-deb -x` run by a non-root user).
pub fn extract(deb: &Path, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest)
        .with_context(|| format!("cannot create directory {}", dest.display()))?;
    with_member(deb, DATA_MEMBER, |name, reader| {
        let mut archive = tar::Archive::new(reader);
        archive.set_preserve_permissions(true);
        archive.set_preserve_mtime(true);
        archive.set_unpack_xattrs(false);
        archive.set_overwrite(true);
        archive.unpack(dest).with_context(|| {
            format!(
                "cannot extract {name} of {} into {}",
                deb.display(),
                dest.display()
            )
        })
    })
}

/// Value of `field` (case-insensitive, as deb-control(5) says) in the package's `control` file;
/// continuation lines are joined with `\n`. `None` when the field is absent.
pub fn control_field(deb: &Path, field: &str) -> Result<Option<String>> {
    let control = control_text(deb)?;
    Ok(parse_control_field(&control, field))
}

/// The `control` file of `deb` as text.
pub fn control_text(deb: &Path) -> Result<String> {
    with_member(deb, CONTROL_MEMBER, |name, reader| {
        let mut archive = tar::Archive::new(reader);
        let entries = archive
            .entries()
            .with_context(|| format!("cannot read {name} of {}", deb.display()))?;
        for entry in entries {
            let mut entry =
                entry.with_context(|| format!("corrupt {name} in {}", deb.display()))?;
            let path = entry.path()?.into_owned();
            let normalised: std::path::PathBuf = path
                .components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .collect();
            if normalised == Path::new("control") {
                let mut text = String::new();
                entry
                    .read_to_string(&mut text)
                    .with_context(|| format!("control file of {} is not UTF-8", deb.display()))?;
                return Ok(text);
            }
        }
        bail!("{} has no control file in {name}", deb.display())
    })
}

/// Look `field` up in the first paragraph of a deb822 control text.
pub fn parse_control_field(control: &str, field: &str) -> Option<String> {
    let mut value: Option<String> = None;
    for line in control.lines() {
        if line.trim().is_empty() {
            break; // end of the first (only) paragraph
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(v) = value.as_mut() {
                v.push('\n');
                v.push_str(line.trim_start());
            }
            continue;
        }
        if value.is_some() {
            break; // the field we were collecting has ended
        }
        if let Some((key, rest)) = line.split_once(':') {
            if key.trim().eq_ignore_ascii_case(field) {
                value = Some(rest.trim().to_string());
            }
        }
    }
    value
}

/// Find the ar member whose name starts with `prefix`, pick a decompressor from its suffix, and run
/// `f` on the decompressed stream. Checks the `debian-binary` member first, so a non-deb file gets a
/// clear error instead of a tar error.
fn with_member<T>(
    deb: &Path,
    prefix: &str,
    f: impl FnOnce(&str, Box<dyn Read + '_>) -> Result<T>,
) -> Result<T> {
    let file = File::open(deb).with_context(|| format!("cannot open {}", deb.display()))?;
    let mut archive = ar::Archive::new(std::io::BufReader::new(file));
    let mut first = true;
    while let Some(entry) = archive.next_entry() {
        let mut entry =
            entry.with_context(|| format!("{} is not a valid .deb (ar archive)", deb.display()))?;
        let name = member_name(entry.header().identifier());
        if first {
            check_debian_binary(deb, &name, &mut entry)?;
            first = false;
            continue;
        }
        if let Some(suffix) = name.strip_prefix(prefix) {
            let reader = decompressor(deb, &name, suffix, entry)?;
            return f(&name, reader);
        }
    }
    if first {
        bail!("{} is empty, not a .deb", deb.display());
    }
    bail!("{} has no {prefix}* member", deb.display())
}

/// ar member names: GNU ar terminates them with `/`; dpkg writes none. Accept both.
fn member_name(identifier: &[u8]) -> String {
    let name = String::from_utf8_lossy(identifier);
    name.trim_end_matches('/').to_string()
}

fn check_debian_binary(deb: &Path, name: &str, entry: &mut impl Read) -> Result<()> {
    if name != DEBIAN_BINARY {
        bail!(
            "{} is not a .deb: first ar member is {name:?}, expected {DEBIAN_BINARY:?}",
            deb.display()
        );
    }
    let mut version = String::new();
    entry
        .take(16)
        .read_to_string(&mut version)
        .with_context(|| format!("cannot read {DEBIAN_BINARY} of {}", deb.display()))?;
    if !version.starts_with(DEB_FORMAT_MAJOR) {
        bail!(
            "{}: unsupported .deb format version {:?} (only 2.x exists)",
            deb.display(),
            version.trim()
        );
    }
    Ok(())
}

/// Wrap a member in the decoder its name calls for (`""`, `.gz`, `.xz`, `.zst`).
fn decompressor<'a>(
    deb: &Path,
    name: &str,
    suffix: &str,
    member: impl Read + 'a,
) -> Result<Box<dyn Read + 'a>> {
    Ok(match suffix {
        "" => Box::new(member),
        ".gz" => Box::new(flate2::read::MultiGzDecoder::new(member)),
        // Multi-stream: xz(1) and dpkg may concatenate streams; the single-stream decoder would stop.
        ".xz" => Box::new(liblzma::read::XzDecoder::new_multi_decoder(member)),
        ".zst" => Box::new(
            zstd::stream::read::Decoder::new(member)
                .with_context(|| format!("cannot start zstd decoder for {name}"))?,
        ),
        other => bail!(
            "{}: member {name} uses compression {other:?}, which is not supported (gz, xz, zst are)",
            deb.display()
        ),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::PathBuf;
    use std::process::Command;

    /// Kernel package kept locally: large, xz-compressed, hard links none, thousands of files.
    /// Linked by `cvm-image fetch --link-dir target/fixtures` (make test does it).
    pub const KERNEL_DEB: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/fixtures/linux-image-6.1.0-56-amd64.deb"
    );

    /// What a tree comparison looks at for one path.
    #[derive(Debug, PartialEq, Eq)]
    pub enum Node {
        Dir {
            mode: u32,
        },
        File {
            mode: u32,
            size: u64,
            sha256: String,
            mtime: i64,
            nlink: u64,
        },
        Symlink {
            target: PathBuf,
        },
    }

    /// Describe every entry below `root` (sorted by path), for comparison with a reference tree.
    pub fn describe_tree(root: &Path) -> BTreeMap<PathBuf, Node> {
        let mut out = BTreeMap::new();
        walk(root, root, &mut out);
        out
    }

    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Node>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let mode = meta.permissions().mode() & 0o7777;
            let node = if meta.file_type().is_symlink() {
                Node::Symlink {
                    target: std::fs::read_link(&path).unwrap(),
                }
            } else if meta.is_dir() {
                walk(root, &path, out);
                Node::Dir { mode }
            } else if meta.is_file() {
                Node::File {
                    mode,
                    size: meta.len(),
                    sha256: crate::inputs::sha256_file(&path).unwrap(),
                    mtime: meta.mtime(),
                    nlink: meta.nlink(),
                }
            } else {
                panic!("unexpected file type at {}", path.display());
            };
            out.insert(rel, node);
        }
    }

    /// Extract with our code and with `dpkg-deb -x`, and require identical trees.
    pub fn assert_extract_matches_dpkg(deb: &Path) {
        let scratch =
            crate::inputs::atomic::TempDir::new_in(&std::env::temp_dir(), "deb-test").unwrap();
        let ours = scratch.path().join("ours");
        let reference = scratch.path().join("dpkg");
        extract(deb, &ours).unwrap();
        let status = Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb)
            .arg(&reference)
            .status()
            .expect("dpkg-deb (package dpkg) is required as the reference extractor");
        assert!(status.success(), "dpkg-deb -x failed on {}", deb.display());
        let ours_tree = describe_tree(&ours);
        let reference_tree = describe_tree(&reference);
        assert!(!reference_tree.is_empty());
        for (path, node) in &reference_tree {
            assert_eq!(
                ours_tree.get(path),
                Some(node),
                "{} differs",
                path.display()
            );
        }
        assert_eq!(
            ours_tree.len(),
            reference_tree.len(),
            "extra entries in our tree"
        );
    }

    #[test]
    fn kernel_fixture_extracts_like_dpkg_deb() {
        assert!(
            Path::new(KERNEL_DEB).exists(),
            "fixture {KERNEL_DEB} is missing"
        );
        assert_extract_matches_dpkg(Path::new(KERNEL_DEB));
    }

    /// Build a package with `dpkg-deb -b` holding every entry kind we must reproduce (hard links,
    /// symlinks, setuid, odd modes, empty dirs) and compare extraction for each compression.
    #[test]
    fn synthetic_package_extracts_like_dpkg_deb_for_every_compression() {
        use std::os::unix::fs::symlink;
        let scratch =
            crate::inputs::atomic::TempDir::new_in(&std::env::temp_dir(), "deb-build").unwrap();
        let root = scratch.path().join("pkg");
        std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
        std::fs::write(
            root.join("DEBIAN/control"),
            "Package: cvm-test\nVersion: 1:2.0-1\nArchitecture: all\nMaintainer: t <t@t.invalid>\nDescription: test\n long\n",
        )
        .unwrap();
        std::fs::create_dir_all(root.join("usr/lib/x/empty")).unwrap();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::write(root.join("usr/lib/x/data"), vec![7u8; 100_000]).unwrap();
        std::fs::hard_link(
            root.join("usr/lib/x/data"),
            root.join("usr/lib/x/data-link"),
        )
        .unwrap();
        std::fs::write(root.join("usr/bin/tool"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            root.join("usr/bin/tool"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
        std::fs::set_permissions(
            root.join("usr/lib/x/empty"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        symlink("../lib/x/data", root.join("usr/bin/rel-link")).unwrap();
        symlink("/usr/lib/x/missing", root.join("usr/bin/dangling")).unwrap();
        for compression in ["xz", "zstd", "gzip", "none"] {
            let deb = scratch.path().join(format!("p-{compression}.deb"));
            let status = Command::new("dpkg-deb")
                .args(["--root-owner-group", "-Z", compression, "-b"])
                .arg(&root)
                .arg(&deb)
                .stdout(std::process::Stdio::null())
                .status()
                .expect("dpkg-deb is required to build the test package");
            assert!(status.success(), "dpkg-deb -b -Z {compression}");
            assert_extract_matches_dpkg(&deb);
            assert_eq!(
                control_field(&deb, "Version").unwrap().as_deref(),
                Some("1:2.0-1")
            );
        }
        let ours = scratch.path().join("check");
        extract(&scratch.path().join("p-xz.deb"), &ours).unwrap();
        let a = std::fs::metadata(ours.join("usr/lib/x/data")).unwrap();
        let b = std::fs::metadata(ours.join("usr/lib/x/data-link")).unwrap();
        assert_eq!(a.ino(), b.ino(), "hard link not preserved");
    }

    #[test]
    fn control_field_matches_dpkg_deb_field() {
        let deb = Path::new(KERNEL_DEB);
        for field in [
            "Version",
            "Package",
            "architecture",
            "Depends",
            "Description",
        ] {
            let out = Command::new("dpkg-deb")
                .arg("-f")
                .arg(deb)
                .arg(field)
                .output()
                .expect("dpkg-deb is required as the reference");
            let expected = String::from_utf8(out.stdout).unwrap();
            let ours = control_field(deb, field).unwrap().unwrap();
            // dpkg-deb -f prints continuation lines with their leading space.
            let expected: Vec<&str> = expected.trim_end().lines().map(str::trim_start).collect();
            assert_eq!(ours.lines().collect::<Vec<_>>(), expected, "field {field}");
        }
        assert_eq!(
            control_field(deb, "Version").unwrap().as_deref(),
            Some("6.1.192-2")
        );
        assert_eq!(control_field(deb, "No-Such-Field").unwrap(), None);
    }

    #[test]
    fn parse_control_handles_continuations_and_case() {
        let text = "Package: p\nDescription: short\n long line\n .\nVersion: 1:2.3-4\n";
        assert_eq!(
            parse_control_field(text, "version").as_deref(),
            Some("1:2.3-4")
        );
        assert_eq!(
            parse_control_field(text, "Description").as_deref(),
            Some("short\nlong line\n.")
        );
        assert_eq!(parse_control_field(text, "Depends"), None);
    }

    #[test]
    fn non_deb_is_rejected_clearly() {
        let scratch =
            crate::inputs::atomic::TempDir::new_in(&std::env::temp_dir(), "deb-test").unwrap();
        let bogus = scratch.path().join("bogus.deb");
        std::fs::write(&bogus, b"!<arch>\nnot really\n").unwrap();
        let err = format!(
            "{:#}",
            extract(&bogus, &scratch.path().join("x")).unwrap_err()
        );
        assert!(err.contains("bogus.deb"), "{err}");
    }
}
