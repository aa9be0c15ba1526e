//! In-memory description of a file tree that is written into a filesystem image.
//!
//! The tree records only what ends up in the image: paths, kinds, permission bits, symlink
//! targets and where file contents come from. Host metadata (owner, mtime, umask-dependent
//! permission bits, inode and directory order) is deliberately dropped when a host directory is
//! imported, so two hosts with the same content produce the same tree and thus the same image.
//! File contents from the host are referenced by path and read only when the image is written.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};

/// Path of the root directory; it is always present in a tree.
pub const ROOT: &str = "/";
/// Mode of directories imported from the host and of implicitly created parents.
pub const DIR_MODE: u16 = 0o755;
/// Mode of imported host files that have at least one execute bit.
pub const EXEC_FILE_MODE: u16 = 0o755;
/// Mode of imported host files without any execute bit.
pub const PLAIN_FILE_MODE: u16 = 0o644;
/// Permission bits (including setuid/setgid/sticky) a node mode may carry; file-type bits are
/// implied by the node kind.
pub const PERMISSION_BITS: u16 = 0o7777;
/// Any of user/group/other execute.
const ANY_EXEC_BITS: u32 = 0o111;
/// Longest file name a squashfs directory entry (and Linux, NAME_MAX) accepts.
pub const NAME_MAX: usize = 255;
/// Longest symlink target Linux accepts (PATH_MAX minus the NUL).
pub const SYMLINK_MAX: usize = 4095;
/// Domain separator of [`FsTree::digest`]; bump the version when the encoding changes.
const DIGEST_DOMAIN: &[u8] = b"cvm-image fstree digest v1\0";
/// Read buffer for streaming host files.
const READ_BUF_LEN: usize = 64 * 1024;

/// Where the contents of a file come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSource {
    /// A file on the build host, opened only when the contents are needed (digest or image
    /// write), so a tree of thousands of files holds no file descriptors and no contents.
    Host(PathBuf),
    /// Contents held in memory (generated files such as os-release).
    Bytes(Vec<u8>),
}

impl FileSource {
    /// Opens the contents for streaming. A host file is opened here, not earlier.
    pub fn open(&self) -> Result<Box<dyn Read + '_>> {
        match self {
            FileSource::Host(path) => {
                let file = File::open(path)
                    .with_context(|| format!("opening host file {}", path.display()))?;
                Ok(Box::new(file))
            }
            FileSource::Bytes(bytes) => Ok(Box::new(bytes.as_slice())),
        }
    }

    /// Human-readable origin for error messages.
    pub fn describe(&self) -> String {
        match self {
            FileSource::Host(path) => format!("host file {}", path.display()),
            FileSource::Bytes(bytes) => format!("{} in-memory bytes", bytes.len()),
        }
    }
}

/// One entry of the tree. Owners are not stored: every image entry is owned by 0:0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir { mode: u16 },
    File { source: FileSource, mode: u16 },
    Symlink { target: String },
}

impl Node {
    /// Short name of the kind, for error messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Node::Dir { .. } => "directory",
            Node::File { .. } => "file",
            Node::Symlink { .. } => "symlink",
        }
    }
}

/// A file tree keyed by absolute path ("/etc/os-release"). The root "/" is always present and
/// every entry's parent is a directory of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsTree {
    /// String order puts every directory before its contents (a prefix sorts first).
    nodes: BTreeMap<String, Node>,
}

impl Default for FsTree {
    fn default() -> Self {
        Self::new()
    }
}

impl FsTree {
    /// An empty tree: only the root directory, mode 0755.
    pub fn new() -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(ROOT.to_string(), Node::Dir { mode: DIR_MODE });
        Self { nodes }
    }

    /// Number of entries, the root included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True if the tree holds only the root directory.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() == 1
    }

    /// The entry at `path`, if any.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// All entries, sorted by path (byte order), each directory before its contents.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.nodes.iter().map(|(path, node)| (path.as_str(), node))
    }

    /// Creates directory `path` (and missing parents, 0755) or, if it already exists, sets its
    /// mode: an explicit mode wins over the default of an implicitly created parent.
    pub fn add_dir(&mut self, path: &str, mode: u16) -> Result<()> {
        validate_path(path)?;
        validate_mode(path, mode)?;
        self.create_parents(path)?;
        match self.nodes.get_mut(path) {
            Some(Node::Dir { mode: existing }) => *existing = mode,
            Some(other) => bail!(
                "cannot add directory {path}: a {} already exists at that path",
                other.kind_name()
            ),
            None => {
                self.nodes.insert(path.to_string(), Node::Dir { mode });
            }
        }
        Ok(())
    }

    /// Adds a regular file, creating missing parents (0755). A path that already exists (of any
    /// kind) is an error: silently replacing content would hide mistakes in the image recipe.
    pub fn add_file(&mut self, path: &str, source: FileSource, mode: u16) -> Result<()> {
        validate_path(path)?;
        ensure!(path != ROOT, "cannot add a file at the root path /");
        validate_mode(path, mode)?;
        self.create_parents(path)?;
        self.insert_new(path, Node::File { source, mode })
    }

    /// Adds a symlink `path` -> `target`, creating missing parents (0755). The target is stored
    /// verbatim (it may be relative, absolute or dangling).
    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<()> {
        validate_path(path)?;
        ensure!(path != ROOT, "cannot add a symlink at the root path /");
        validate_symlink_target(path, target)?;
        self.create_parents(path)?;
        self.insert_new(
            path,
            Node::Symlink {
                target: target.to_string(),
            },
        )
    }

    /// Copies the host directory `src` recursively under `dest`.
    ///
    /// Regular files, directories and symlinks only; anything else (fifo, device, socket) is an
    /// error naming the path. Owners are always 0:0 and modes are normalised so the host's umask
    /// and ownership never leak into the image: directories 0755; files 0755 if any execute bit
    /// is set, else 0644. Missing parents of `dest` are created (0755); `dest` itself gets 0755.
    /// Hard links become independent files (the squashfs writer deduplicates their data).
    /// File contents are not read here, only referenced.
    pub fn add_host_dir(&mut self, src: &Path, dest: &str) -> Result<()> {
        validate_path(dest)?;
        let meta = fs::symlink_metadata(src)
            .with_context(|| format!("reading host directory {}", src.display()))?;
        ensure!(
            meta.is_dir(),
            "host path {} is not a directory (add_host_dir copies directories)",
            src.display()
        );
        self.add_dir(dest, DIR_MODE)?;
        self.import_dir_contents(src, dest)
    }

    /// Content digest of the tree: paths, kinds, modes, symlink targets and file contents (host
    /// files are streamed). Used as the stage-cache key, so anything that changes the image
    /// except the write parameters (mtime, compression) changes the digest.
    pub fn digest(&self) -> Result<[u8; 32]> {
        let mut hasher = Sha256::new();
        hasher.update(DIGEST_DOMAIN);
        hasher.update((self.nodes.len() as u64).to_le_bytes());
        for (path, node) in &self.nodes {
            update_len_prefixed(&mut hasher, path.as_bytes());
            match node {
                Node::Dir { mode } => {
                    hasher.update([b'd']);
                    hasher.update(mode.to_le_bytes());
                }
                Node::File { source, mode } => {
                    hasher.update([b'f']);
                    hasher.update(mode.to_le_bytes());
                    let (len, content_digest) = digest_contents(source)
                        .with_context(|| format!("hashing the contents of {path}"))?;
                    hasher.update(len.to_le_bytes());
                    hasher.update(content_digest);
                }
                Node::Symlink { target } => {
                    hasher.update([b'l']);
                    update_len_prefixed(&mut hasher, target.as_bytes());
                }
            }
        }
        Ok(hasher.finalize().into())
    }

    /// Imports the entries of host directory `src` (already present as `dest`).
    fn import_dir_contents(&mut self, src: &Path, dest: &str) -> Result<()> {
        let mut entries = fs::read_dir(src)
            .with_context(|| format!("listing host directory {}", src.display()))?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<io::Result<Vec<_>>>()
            .with_context(|| format!("listing host directory {}", src.display()))?;
        // The host's directory order must not matter; sorting also makes errors reproducible.
        entries.sort();
        for host_path in entries {
            let name = host_path
                .file_name()
                .and_then(|n| n.to_str())
                .with_context(|| {
                    format!("host path {} has a non-UTF-8 name", host_path.display())
                })?;
            let dest_path = join(dest, name);
            self.import_host_entry(&host_path, &dest_path)?;
        }
        Ok(())
    }

    /// Imports one host entry (recursing into directories) with a normalised mode.
    fn import_host_entry(&mut self, host_path: &Path, dest_path: &str) -> Result<()> {
        let meta = fs::symlink_metadata(host_path)
            .with_context(|| format!("reading metadata of host path {}", host_path.display()))?;
        let file_type = meta.file_type();
        if file_type.is_dir() {
            self.add_dir(dest_path, DIR_MODE)?;
            self.import_dir_contents(host_path, dest_path)
        } else if file_type.is_file() {
            let mode = if meta.permissions().mode() & ANY_EXEC_BITS != 0 {
                EXEC_FILE_MODE
            } else {
                PLAIN_FILE_MODE
            };
            self.add_file(dest_path, FileSource::Host(host_path.to_path_buf()), mode)
        } else if file_type.is_symlink() {
            let target = fs::read_link(host_path)
                .with_context(|| format!("reading host symlink {}", host_path.display()))?;
            let target = target.to_str().with_context(|| {
                format!(
                    "host symlink {} has a non-UTF-8 target",
                    host_path.display()
                )
            })?;
            self.add_symlink(dest_path, target)
        } else {
            bail!(
                "host path {} is a {}: only regular files, directories and symlinks can go \
                 into an image (remove it from the source tree)",
                host_path.display(),
                special_kind_name(&file_type)
            )
        }
    }

    /// Creates the missing ancestors of `path` as 0755 directories; an ancestor that exists but
    /// is not a directory is a conflict.
    fn create_parents(&mut self, path: &str) -> Result<()> {
        for (end, _) in path.match_indices('/').skip(1) {
            let ancestor = &path[..end];
            match self.nodes.get(ancestor) {
                Some(Node::Dir { .. }) => {}
                Some(other) => bail!(
                    "cannot add {path}: its parent {ancestor} is a {}, not a directory",
                    other.kind_name()
                ),
                None => {
                    self.nodes
                        .insert(ancestor.to_string(), Node::Dir { mode: DIR_MODE });
                }
            }
        }
        Ok(())
    }

    fn insert_new(&mut self, path: &str, node: Node) -> Result<()> {
        if let Some(existing) = self.nodes.get(path) {
            bail!(
                "cannot add {} {path}: a {} already exists at that path",
                node.kind_name(),
                existing.kind_name()
            );
        }
        self.nodes.insert(path.to_string(), node);
        Ok(())
    }
}

/// Checks that `path` is absolute and canonical: leading '/', no empty, "." or ".." components,
/// no trailing '/', no NUL, components at most [`NAME_MAX`] bytes.
pub fn validate_path(path: &str) -> Result<()> {
    ensure!(
        path.starts_with('/'),
        "image path {path:?} must be absolute (start with '/')"
    );
    if path == ROOT {
        return Ok(());
    }
    ensure!(
        !path.contains('\0'),
        "image path {path:?} contains a NUL byte"
    );
    for component in path[1..].split('/') {
        ensure!(
            !component.is_empty(),
            "image path {path:?} has an empty component ('//' or a trailing '/')"
        );
        ensure!(
            component != "." && component != "..",
            "image path {path:?} has a '.' or '..' component; give the canonical path"
        );
        ensure!(
            component.len() <= NAME_MAX,
            "image path {path:?} has a component longer than {NAME_MAX} bytes"
        );
    }
    Ok(())
}

fn validate_mode(path: &str, mode: u16) -> Result<()> {
    ensure!(
        mode & !PERMISSION_BITS == 0,
        "mode {mode:#o} of {path} has bits outside {PERMISSION_BITS:#o}; give permission bits only"
    );
    Ok(())
}

fn validate_symlink_target(path: &str, target: &str) -> Result<()> {
    ensure!(!target.is_empty(), "symlink {path} has an empty target");
    ensure!(
        !target.contains('\0'),
        "symlink target of {path} contains a NUL byte"
    );
    ensure!(
        target.len() <= SYMLINK_MAX,
        "symlink target of {path} is longer than {SYMLINK_MAX} bytes"
    );
    Ok(())
}

/// `dir` + "/" + `name`, without doubling the root's slash.
fn join(dir: &str, name: &str) -> String {
    if dir == ROOT {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

fn special_kind_name(file_type: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_fifo() {
        "fifo"
    } else if file_type.is_socket() {
        "socket"
    } else if file_type.is_block_device() {
        "block device"
    } else if file_type.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}

/// Length prefix keeps the encoding unambiguous (no separator can be forged by a name).
fn update_len_prefixed(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

/// Streams a file's contents through SHA-256; returns (length, digest).
fn digest_contents(source: &FileSource) -> Result<(u64, [u8; 32])> {
    let mut reader = source.open()?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; READ_BUF_LEN];
    let mut len = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", source.describe())),
        };
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, hasher.finalize().into()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::os::unix::fs::symlink;
    use std::process::Command;

    fn set_mode(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn paths(tree: &FsTree) -> Vec<&str> {
        tree.iter().map(|(p, _)| p).collect()
    }

    #[test]
    fn new_tree_has_only_root() {
        let tree = FsTree::new();
        assert_eq!(paths(&tree), vec!["/"]);
        assert_eq!(tree.get("/"), Some(&Node::Dir { mode: 0o755 }));
        assert!(tree.is_empty());
    }

    #[test]
    fn add_file_creates_parents_and_sorts() {
        let mut tree = FsTree::new();
        tree.add_file(
            "/usr/lib/os-release",
            FileSource::Bytes(b"x".to_vec()),
            0o644,
        )
        .unwrap();
        tree.add_symlink("/etc/os-release", "../usr/lib/os-release")
            .unwrap();
        tree.add_dir("/usr", 0o700).unwrap();
        assert_eq!(
            paths(&tree),
            vec![
                "/",
                "/etc",
                "/etc/os-release",
                "/usr",
                "/usr/lib",
                "/usr/lib/os-release"
            ]
        );
        assert_eq!(tree.get("/etc"), Some(&Node::Dir { mode: 0o755 }));
        assert_eq!(tree.get("/usr"), Some(&Node::Dir { mode: 0o700 }));
    }

    #[test]
    fn rejects_bad_paths() {
        let mut tree = FsTree::new();
        for bad in [
            "etc", "/etc/", "/a//b", "/a/../b", "/a/./b", "/..", "", "/a\0b",
        ] {
            let err = tree.add_dir(bad, 0o755).unwrap_err().to_string();
            assert!(err.contains("image path"), "{bad:?}: {err}");
        }
        let long = format!("/{}", "n".repeat(NAME_MAX + 1));
        assert!(tree.add_dir(&long, 0o755).is_err());
        assert!(tree
            .add_dir(&format!("/{}", "n".repeat(NAME_MAX)), 0o755)
            .is_ok());
        assert!(tree
            .add_file("/", FileSource::Bytes(vec![]), 0o644)
            .is_err());
    }

    #[test]
    fn rejects_conflicts() {
        let mut tree = FsTree::new();
        tree.add_file("/f", FileSource::Bytes(vec![]), 0o644)
            .unwrap();
        tree.add_dir("/d", 0o755).unwrap();
        let e = tree.add_dir("/f", 0o755).unwrap_err().to_string();
        assert!(e.contains("a file already exists"), "{e}");
        let e = tree
            .add_file("/d", FileSource::Bytes(vec![]), 0o644)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a directory already exists"), "{e}");
        let e = tree
            .add_file("/f/x", FileSource::Bytes(vec![]), 0o644)
            .unwrap_err()
            .to_string();
        assert!(e.contains("parent /f is a file"), "{e}");
        assert!(tree
            .add_file("/f", FileSource::Bytes(vec![]), 0o644)
            .is_err());
        assert!(tree.add_symlink("/d", "x").is_err());
        assert!(tree.add_symlink("/s", "").is_err());
        let e = tree.add_dir("/m", 0o40755).unwrap_err().to_string();
        assert!(e.contains("permission bits only"), "{e}");
    }

    #[test]
    fn host_dir_import_normalises_modes() {
        let tmp = TempDir::new("import");
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("bin")).unwrap();
        fs::create_dir_all(src.join("empty")).unwrap();
        fs::write(src.join("bin/tool"), b"#!/bin/sh\n").unwrap();
        fs::write(src.join("secret"), b"s").unwrap();
        fs::write(src.join("group-exec"), b"g").unwrap();
        symlink("bin/tool", src.join("link")).unwrap();
        set_mode(&src.join("bin/tool"), 0o700);
        set_mode(&src.join("secret"), 0o600);
        set_mode(&src.join("group-exec"), 0o4610);
        set_mode(&src.join("empty"), 0o700);

        let mut tree = FsTree::new();
        tree.add_host_dir(&src, "/opt/app").unwrap();
        let got: Vec<(&str, Node)> = tree.iter().map(|(p, n)| (p, n.clone())).collect();
        let host = |p: &str| FileSource::Host(src.join(p));
        let want = vec![
            ("/", Node::Dir { mode: 0o755 }),
            ("/opt", Node::Dir { mode: 0o755 }),
            ("/opt/app", Node::Dir { mode: 0o755 }),
            ("/opt/app/bin", Node::Dir { mode: 0o755 }),
            (
                "/opt/app/bin/tool",
                Node::File {
                    source: host("bin/tool"),
                    mode: 0o755,
                },
            ),
            ("/opt/app/empty", Node::Dir { mode: 0o755 }),
            (
                "/opt/app/group-exec",
                Node::File {
                    source: host("group-exec"),
                    mode: 0o755,
                },
            ),
            (
                "/opt/app/link",
                Node::Symlink {
                    target: "bin/tool".into(),
                },
            ),
            (
                "/opt/app/secret",
                Node::File {
                    source: host("secret"),
                    mode: 0o644,
                },
            ),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn host_dir_rejects_fifo_naming_it() {
        let tmp = TempDir::new("fifo");
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("run")).unwrap();
        let fifo = src.join("run/pipe");
        let status = Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo must be installed");
        assert!(status.success());
        let err = FsTree::new().add_host_dir(&src, "/").unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&fifo.display().to_string()) && msg.contains("fifo"),
            "{msg}"
        );
    }

    #[test]
    fn host_dir_must_be_a_directory() {
        let tmp = TempDir::new("notdir");
        let file = tmp.path().join("f");
        fs::write(&file, b"x").unwrap();
        assert!(FsTree::new().add_host_dir(&file, "/").is_err());
        assert!(FsTree::new()
            .add_host_dir(&tmp.path().join("missing"), "/")
            .is_err());
    }

    /// The digest must react to every recorded property and ignore where bytes come from.
    #[test]
    fn digest_covers_content_mode_and_targets() {
        let tmp = TempDir::new("digest");
        let f = tmp.path().join("f");
        fs::write(&f, b"hello").unwrap();
        let base = || {
            let mut t = FsTree::new();
            t.add_file("/a", FileSource::Host(f.clone()), 0o644)
                .unwrap();
            t.add_symlink("/l", "a").unwrap();
            t
        };
        let d0 = base().digest().unwrap();
        // Same content from memory instead of the host: same digest.
        let mut same = FsTree::new();
        same.add_file("/a", FileSource::Bytes(b"hello".to_vec()), 0o644)
            .unwrap();
        same.add_symlink("/l", "a").unwrap();
        assert_eq!(same.digest().unwrap(), d0);

        let mut mode = base();
        mode.add_dir("/", 0o700).unwrap();
        let mut target = FsTree::new();
        target
            .add_file("/a", FileSource::Host(f.clone()), 0o644)
            .unwrap();
        target.add_symlink("/l", "b").unwrap();
        let mut extra = base();
        extra.add_dir("/e", 0o755).unwrap();
        for other in [mode, target, extra] {
            assert_ne!(other.digest().unwrap(), d0);
        }
        fs::write(&f, b"hellO").unwrap();
        assert_ne!(base().digest().unwrap(), d0);
        fs::remove_file(&f).unwrap();
        let err = format!("{:#}", base().digest().unwrap_err());
        assert!(
            err.contains("/a") && err.contains(&f.display().to_string()),
            "{err}"
        );
    }
}
