//! Resolving and downloading Debian packages through a private apt configuration.
//!
//! The builder must not depend on — or modify — the machine's apt state: its sources may lack the
//! suites an image needs (`bookworm-security`, `trixie`, …), its lists may be stale, and `apt-get
//! update` on them would change what the machine itself installs. So every apt invocation here runs
//! with `APT_CONFIG` pointing at a generated `apt.conf` that redirects *everything* apt reads or
//! writes into `<cache>/apt/<key>/`:
//!
//! * `APT_CONFIG` (not `-o`) because apt reads `Dir::Etc::Parts` (`/etc/apt/apt.conf.d`) before it
//!   parses `-o` options: only a config file named by `APT_CONFIG` can stop the host's fragments (e.g.
//!   `APT::Update::Post-Invoke` hooks that delete `/var/cache/apt/*.bin`, or `GzipIndexes`) from applying.
//! * `Dir::Etc::{Main,Parts,SourceList,SourceParts,Preferences,PreferencesParts,Trusted,TrustedParts}`:
//!   our sources only, no pinning, no keys from `/etc/apt/trusted.gpg.d` (each source carries its
//!   `signed-by` keyring instead).
//! * `Dir::State`, `Dir::State::status`, `Dir::Cache`, `Dir::Log`: lists, package caches and logs
//!   under our directory; an empty dpkg status so the versions installed on the machine never appear
//!   as candidates.
//! * `APT::Architecture(s)`: the image's architecture, not the build machine's dpkg configuration.
//!
//! The mirror URIs come from the machine's apt sources (the project never names a mirror host in its
//! code), or from the spec's `[apt] mirror` / `security_mirror`. `<key>` is a hash of the generated
//! sources.list, so specs with different suites or mirrors never invalidate each other's lists.

use super::atomic;
use super::lock::LockedPackage;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Debian architecture of the images we build (x86-64 confidential VMs).
pub const IMAGE_ARCH: &str = "amd64";
/// Archive components searched: kernel, systemd-boot-efi and ovmf are all in `main`.
const COMPONENTS: &str = "main";
/// Keyring used when the machine's source entry declares none (package debian-archive-keyring).
pub const DEFAULT_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Where the machine's apt configuration lives; read only, for mirror discovery and proxies.
pub const HOST_APT_ETC: &str = "/etc/apt";
/// Suffix of Debian security suites (`bookworm-security`); those are served by the security archive.
const SECURITY_SUFFIX: &str = "-security";
/// URI path segment of the Debian archive and of the security archive on every official mirror.
const ARCHIVE_SEGMENT: &str = "debian";
const SECURITY_SEGMENT: &str = "debian-security";
/// Hex digits of the sources hash used as the private directory name (64 bits: no collisions in
/// practice, short enough to read).
const KEY_HEX_LEN: usize = 16;

/// A package the spec asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageRequest {
    pub name: String,
    pub suite: String,
}

/// The spec's `[apt]` section: mirrors that replace the discovered ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MirrorOverrides {
    /// Serves the Debian archive (`bookworm`, `trixie`, `bookworm-updates`, …).
    pub mirror: Option<String>,
    /// Serves the security archive (suites ending in `-security`).
    pub security_mirror: Option<String>,
}

/// Which Debian archive serves a suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    Archive,
    Security,
}

impl ArchiveKind {
    pub fn of_suite(suite: &str) -> Self {
        if suite.ends_with(SECURITY_SUFFIX) {
            Self::Security
        } else {
            Self::Archive
        }
    }

    fn spec_key(self) -> &'static str {
        match self {
            Self::Archive => "mirror",
            Self::Security => "security_mirror",
        }
    }
}

/// A keyring that signs a mirror's Release files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keyring {
    /// Keyring files (absolute paths), as in `signed-by=/usr/share/keyrings/x.gpg`.
    Files(Vec<PathBuf>),
    /// An ASCII-armoured key embedded in a deb822 `Signed-By:` field.
    Inline(String),
}

/// A mirror URI and the keyring to verify it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub uri: String,
    pub keyring: Keyring,
}

/// One source entry of the machine's apt configuration (either file format).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceEntry {
    pub types: Vec<String>,
    pub uris: Vec<String>,
    pub suites: Vec<String>,
    pub components: Vec<String>,
    pub signed_by: Option<String>,
    pub enabled: bool,
}

/// The private apt installation.
#[derive(Debug)]
pub struct Apt {
    dir: PathBuf,
    suites: Vec<String>,
    mirrors: Vec<(String, Mirror)>,
}

impl Apt {
    /// Set up (or reuse) the private apt configuration for `suites` under `<cache_dir>/apt/`, with
    /// mirrors from `overrides` or else from the machine's `/etc/apt`. Does not touch the network.
    pub fn new(cache_dir: &Path, suites: &[String], overrides: &MirrorOverrides) -> Result<Self> {
        Self::with_host_config(cache_dir, suites, overrides, Path::new(HOST_APT_ETC))
    }

    /// As [`Apt::new`], discovering mirrors from `host_etc` instead of `/etc/apt`.
    pub fn with_host_config(
        cache_dir: &Path,
        suites: &[String],
        overrides: &MirrorOverrides,
        host_etc: &Path,
    ) -> Result<Self> {
        let mut suites = suites.to_vec();
        suites.sort();
        suites.dedup();
        if suites.is_empty() {
            bail!("no suites requested: the private apt configuration needs at least one");
        }
        let host = read_host_sources(host_etc)?;
        let mut mirrors = Vec::new();
        for suite in &suites {
            let kind = ArchiveKind::of_suite(suite);
            mirrors.push((
                suite.clone(),
                choose_mirror(kind, overrides, &host, host_etc)?,
            ));
        }
        let apt_root = cache_dir.join("apt");
        let sources = render_sources(&mirrors, &apt_root.join("keyrings"))?;
        let key = hex::encode(Sha256::digest(sources.as_bytes()));
        let dir = apt_root.join(&key[..KEY_HEX_LEN]);
        let apt = Self {
            dir,
            suites,
            mirrors,
        };
        apt.write_layout(&sources)?;
        Ok(apt)
    }

    /// The private directory (`apt.conf`, `sources.list`, `state/`, `cache/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Suites this configuration serves, sorted.
    pub fn suites(&self) -> &[String] {
        &self.suites
    }

    /// The mirror serving `suite`.
    pub fn mirror(&self, suite: &str) -> Option<&Mirror> {
        self.mirrors
            .iter()
            .find(|(s, _)| s == suite)
            .map(|(_, m)| m)
    }

    /// `apt-get update` on the private configuration, unconditionally.
    pub fn update(&self) -> Result<()> {
        let _guard = self.lock()?;
        self.update_locked()
    }

    /// Run `apt-get update` only if some suite has no downloaded Release file; returns whether it ran.
    pub fn update_if_needed(&self) -> Result<bool> {
        let _guard = self.lock()?;
        self.update_if_needed_locked()
    }

    /// Newest version of `req.name` in `req.suite`, with the SHA256, size and pool path of its `.deb`
    /// as the (signature-verified) Packages index states them.
    pub fn resolve(&self, req: &PackageRequest) -> Result<LockedPackage> {
        self.require_suite(&req.suite)?;
        let _guard = self.lock()?;
        let updated = self.update_if_needed_locked()?;
        if let Some(pkg) = self.lookup_locked(req)? {
            return Ok(pkg);
        }
        if !updated {
            eprintln!(
                "cvm-image: {} not found in {}; refreshing the package lists",
                req.name, req.suite
            );
            self.update_locked()?;
            if let Some(pkg) = self.lookup_locked(req)? {
                return Ok(pkg);
            }
        }
        bail!(
            "package {} not found in suite {} ({}); check the package name and suite in the image spec",
            req.name,
            req.suite,
            self.mirror_uri(&req.suite)
        )
    }

    /// `apt-get download name=version` into `dir` (an existing, preferably empty directory); returns
    /// the path of the `.deb`. apt checks the file against the index; the caller checks the lock's sha256.
    pub fn download(&self, pkg: &LockedPackage, dir: &Path) -> Result<PathBuf> {
        self.require_suite(&pkg.suite)?;
        let _guard = self.lock()?;
        let updated = self.update_if_needed_locked()?;
        let mut outcome = self.download_locked(pkg, dir)?;
        if let Err(stderr) = &outcome {
            if !updated && is_unavailable(stderr) {
                eprintln!(
                    "cvm-image: {} {} not available from the current lists; refreshing them",
                    pkg.name, pkg.version
                );
                self.update_locked()?;
                outcome = self.download_locked(pkg, dir)?;
            }
        }
        match outcome {
            Ok(path) => Ok(path),
            Err(stderr) if is_unavailable(&stderr) => bail!(
                "{} {} (pinned in cvm-image.lock, suite {}) is no longer available from {}: {}\n\
                 The mirror has dropped this version (Debian keeps only the newest one per suite). \
                 Run `cvm-image lock` to re-resolve the package, review the change and commit the new lock.",
                pkg.name,
                pkg.version,
                pkg.suite,
                self.mirror_uri(&pkg.suite),
                stderr.trim()
            ),
            Err(stderr) => bail!(
                "apt-get download {}={} failed (private apt config {}): {}",
                pkg.name,
                pkg.version,
                self.dir.display(),
                stderr.trim()
            ),
        }
    }

    // ---- private: layout -------------------------------------------------------------------------

    fn write_layout(&self, sources: &str) -> Result<()> {
        for sub in [
            "empty",
            "state/lists/partial",
            "cache/archives/partial",
            "log",
        ] {
            let path = self.dir.join(sub);
            std::fs::create_dir_all(&path)
                .with_context(|| format!("cannot create directory {}", path.display()))?;
        }
        let status = self.dir.join("state/status");
        if !status.exists() {
            atomic::write_file(&status, b"")?;
        }
        atomic::write_file_if_changed(&self.dir.join("sources.list"), sources.as_bytes())?;
        let conf = render_apt_conf(&self.dir, &host_proxy_settings())?;
        atomic::write_file_if_changed(&self.config_path(), conf.as_bytes())
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("apt.conf")
    }

    fn lists_dir(&self) -> PathBuf {
        self.dir.join("state/lists")
    }

    fn mirror_uri(&self, suite: &str) -> String {
        self.mirror(suite)
            .map_or_else(|| "?".into(), |m| m.uri.clone())
    }

    fn require_suite(&self, suite: &str) -> Result<()> {
        if self.suites.iter().any(|s| s == suite) {
            return Ok(());
        }
        bail!(
            "suite {suite} is not configured in this apt instance (configured: {}); \
             every suite of the spec must be passed to Apt::new",
            self.suites.join(", ")
        )
    }

    /// Serialise all apt runs on this directory across threads and processes: apt's own lock on the
    /// lists fails instead of waiting, and concurrent builds share the cache.
    fn lock(&self) -> Result<File> {
        let path = self.dir.join("apt.flock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        file.lock()
            .with_context(|| format!("cannot lock {}", path.display()))?;
        Ok(file)
    }

    // ---- private: apt runs (caller holds the lock) -----------------------------------------------

    fn update_if_needed_locked(&self) -> Result<bool> {
        let missing: Vec<&String> = self
            .suites
            .iter()
            .filter(|s| !has_release_file(&self.lists_dir(), s))
            .collect();
        if missing.is_empty() {
            return Ok(false);
        }
        self.update_locked()?;
        Ok(true)
    }

    fn update_locked(&self) -> Result<()> {
        eprintln!(
            "cvm-image: updating package lists for {} (private apt config in {})",
            self.suites.join(", "),
            self.dir.display()
        );
        let out = self.run("apt-get", &["update"], None, StdoutTo::Stderr)?;
        if !out.success {
            bail!(
                "apt-get update failed for suites {} (private apt config {}):\n{}\n\
                 Check network access to the mirrors, or set [apt] mirror / security_mirror in the spec.",
                self.suites.join(", "),
                self.dir.display(),
                out.stderr.trim()
            );
        }
        let missing: Vec<&String> = self
            .suites
            .iter()
            .filter(|s| !has_release_file(&self.lists_dir(), s))
            .collect();
        if !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
            bail!(
                "apt-get update did not fetch a Release file for {}:\n{}",
                names.join(", "),
                out.stderr.trim()
            );
        }
        forward_warnings(&out.stderr);
        Ok(())
    }

    fn lookup_locked(&self, req: &PackageRequest) -> Result<Option<LockedPackage>> {
        let out = self.run(
            "apt-cache",
            &["madison", &req.name],
            None,
            StdoutTo::Capture,
        )?;
        if !out.success {
            bail!(
                "apt-cache madison {} failed: {}",
                req.name,
                out.stderr.trim()
            );
        }
        let Some(version) = newest_in_suite(&out.stdout, &req.name, &req.suite) else {
            return Ok(None);
        };
        let spec = format!("{}={version}", req.name);
        let out = self.run("apt-cache", &["show", &spec], None, StdoutTo::Capture)?;
        if !out.success {
            bail!("apt-cache show {spec} failed: {}", out.stderr.trim());
        }
        let pkg = parse_show_record(&out.stdout, &req.name, &version, &req.suite)
            .with_context(|| format!("reading the index record of {spec} ({})", req.suite))?;
        Ok(Some(pkg))
    }

    /// Ok(path) on success, Err(apt's stderr) when apt failed; outer Err for our own failures.
    fn download_locked(
        &self,
        pkg: &LockedPackage,
        dir: &Path,
    ) -> Result<std::result::Result<PathBuf, String>> {
        let spec = format!("{}={}", pkg.name, pkg.version);
        let out = self.run("apt-get", &["download", &spec], Some(dir), StdoutTo::Stderr)?;
        if !out.success {
            return Ok(Err(out.stderr));
        }
        forward_warnings(&out.stderr);
        let path = dir.join(download_file_name(pkg));
        if !path.is_file() {
            bail!(
                "apt-get download {spec} succeeded but {} does not exist",
                path.display()
            );
        }
        Ok(Ok(path))
    }

    fn run(
        &self,
        program: &str,
        args: &[&str],
        cwd: Option<&Path>,
        stdout: StdoutTo,
    ) -> Result<AptOutput> {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("APT_CONFIG", self.config_path())
            // apt's messages are parsed (not-found detection): force untranslated output.
            .env("LC_ALL", "C")
            .env_remove("LANGUAGE")
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        match stdout {
            StdoutTo::Capture => cmd.stdout(Stdio::piped()),
            StdoutTo::Stderr => cmd.stdout(Stdio::from(std::io::stderr())),
        };
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let output = cmd.output().with_context(|| {
            format!("cannot run {program} (package apt); it is needed to fetch Debian packages")
        })?;
        Ok(AptOutput {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

#[derive(Clone, Copy)]
enum StdoutTo {
    Capture,
    /// apt's progress lines (`Get:1 …`) go to our stderr, keeping our stdout for results.
    Stderr,
}

struct AptOutput {
    success: bool,
    stdout: String,
    stderr: String,
}

/// apt's warnings (`W:`) are worth seeing even when it succeeded.
fn forward_warnings(stderr: &str) {
    for line in stderr.lines().filter(|l| l.starts_with("W:")) {
        eprintln!("apt: {line}");
    }
}

/// apt messages meaning "this name=version is not (or no longer) in the index / on the mirror".
fn is_unavailable(stderr: &str) -> bool {
    const MARKERS: [&str; 4] = [
        "was not found",
        "Unable to locate package",
        "Can't find a source to download",
        // HTTP 404 from the mirror: the lists were older than the mirror's pool.
        "Not Found",
    ];
    MARKERS.iter().any(|m| stderr.contains(m))
}

/// The name `apt-get download` gives a package file: `name_version_arch.deb` with the epoch colon
/// URL-quoted (apt's `QuoteString(…, "_:")`).
fn download_file_name(pkg: &LockedPackage) -> String {
    format!(
        "{}_{}_{}.deb",
        pkg.name,
        pkg.version.replace(':', "%3a"),
        pkg.arch
    )
}

/// apt names list files after the URI with `/` → `_`: `<host>_<path>_dists_<suite>_InRelease`.
fn has_release_file(lists: &Path, suite: &str) -> bool {
    let suite = suite.replace('/', "_");
    let endings = [
        format!("_dists_{suite}_InRelease"),
        format!("_dists_{suite}_Release"),
    ];
    let Ok(entries) = std::fs::read_dir(lists) else {
        return false;
    };
    entries.flatten().any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        endings.iter().any(|end| name.ends_with(end.as_str()))
    })
}

// ---- madison / show parsing ----------------------------------------------------------------------

/// First version `apt-cache madison` lists for `name` from `suite`. apt keeps each package's version
/// list sorted newest first and madison prints it in that order, so the first match is the newest.
pub fn newest_in_suite(madison: &str, name: &str, suite: &str) -> Option<String> {
    madison.lines().find_map(|line| {
        let mut parts = line.split('|').map(str::trim);
        let (pkg, version, origin) = (parts.next()?, parts.next()?, parts.next()?);
        // origin: "<uri> <suite>/<component> <arch> Packages"
        let fields: Vec<&str> = origin.split_whitespace().collect();
        let [_, dist, _, kind] = fields.as_slice() else {
            return None;
        };
        let (line_suite, _component) = dist.rsplit_once('/')?;
        (pkg == name && line_suite == suite && *kind == "Packages").then(|| version.to_string())
    })
}

/// The record of `name` `version` in `apt-cache show name=version` output, as a lock entry.
pub fn parse_show_record(
    show: &str,
    name: &str,
    version: &str,
    suite: &str,
) -> Result<LockedPackage> {
    let para = show
        .split("\n\n")
        .find(|p| {
            field(p, "Package") == Some(name.into()) && field(p, "Version") == Some(version.into())
        })
        .with_context(|| format!("apt-cache show printed no record for {name} {version}"))?;
    let get = |key: &str| field(para, key).with_context(|| format!("index record lacks {key}:"));
    let arch = get("Architecture")?;
    if arch != IMAGE_ARCH && arch != "all" {
        bail!("{name} {version} is for architecture {arch}, not {IMAGE_ARCH}");
    }
    let sha256 = get("SHA256")?;
    if !super::is_sha256_hex(&sha256) {
        bail!("index SHA256 of {name} {version} is malformed: {sha256:?}");
    }
    let size = get("Size")?;
    Ok(LockedPackage {
        name: name.into(),
        version: version.into(),
        suite: suite.into(),
        arch,
        sha256,
        size: size
            .parse()
            .with_context(|| format!("index Size of {name} {version} is not a number: {size:?}"))?,
        filename: get("Filename")?,
    })
}

fn field(paragraph: &str, key: &str) -> Option<String> {
    super::deb::parse_control_field(paragraph.trim_start_matches('\n'), key)
}

// ---- generated configuration ---------------------------------------------------------------------

/// `sources.list` (one-line format) with one entry per suite. Inline keys are written to
/// content-addressed files under `keyring_dir` so the line can name them.
fn render_sources(mirrors: &[(String, Mirror)], keyring_dir: &Path) -> Result<String> {
    let mut out =
        String::from("# Generated by cvm-image: one source per suite of the image spec.\n");
    for (suite, mirror) in mirrors {
        let keyrings = keyring_paths(&mirror.keyring, keyring_dir)?;
        let signed_by: Vec<String> = keyrings.iter().map(|p| p.display().to_string()).collect();
        for token in signed_by.iter().chain([&mirror.uri, suite]) {
            if token.is_empty() || token.contains(char::is_whitespace) || token.contains(']') {
                bail!("{token:?} cannot be written to a sources.list line (empty, or has whitespace or ']')");
            }
        }
        out.push_str(&format!(
            "deb [signed-by={}] {} {suite} {COMPONENTS}\n",
            signed_by.join(","),
            mirror.uri
        ));
    }
    Ok(out)
}

fn keyring_paths(keyring: &Keyring, keyring_dir: &Path) -> Result<Vec<PathBuf>> {
    match keyring {
        Keyring::Files(files) => Ok(files.clone()),
        Keyring::Inline(armored) => {
            let hash = hex::encode(Sha256::digest(armored.as_bytes()));
            let path = keyring_dir.join(format!("{}.asc", &hash[..KEY_HEX_LEN]));
            std::fs::create_dir_all(keyring_dir)
                .with_context(|| format!("cannot create directory {}", keyring_dir.display()))?;
            atomic::write_file_if_changed(&path, armored.as_bytes())?;
            Ok(vec![path])
        }
    }
}

/// The private `apt.conf` (see the module documentation for why each setting is there).
fn render_apt_conf(dir: &Path, proxies: &[String]) -> Result<String> {
    let d = dir.display().to_string();
    if d.contains('"') {
        bail!("cache directory {d} contains a double quote, which apt.conf cannot express");
    }
    let mut conf = format!(
        "// Generated by cvm-image: a private apt configuration. It reads and writes nothing of the\n\
         // machine's own apt sources, lists, caches, preferences or trusted keys.\n\
         Dir::Etc::Main \"/dev/null\";\n\
         Dir::Etc::Parts \"{d}/empty\";\n\
         Dir::Etc::SourceList \"{d}/sources.list\";\n\
         Dir::Etc::SourceParts \"{d}/empty\";\n\
         Dir::Etc::Preferences \"/dev/null\";\n\
         Dir::Etc::PreferencesParts \"{d}/empty\";\n\
         Dir::Etc::Trusted \"/dev/null\";\n\
         Dir::Etc::TrustedParts \"{d}/empty\";\n\
         Dir::State \"{d}/state\";\n\
         Dir::State::status \"{d}/state/status\";\n\
         Dir::Cache \"{d}/cache\";\n\
         // srcpkgcache.bin only speeds up rebuilding pkgcache.bin after dpkg status changes; ours\n\
         // never changes, so skip its ~40 MB.\n\
         Dir::Cache::srcpkgcache \"\";\n\
         Dir::Log \"{d}/log\";\n\
         APT::Architecture \"{IMAGE_ARCH}\";\n\
         APT::Architectures {{ \"{IMAGE_ARCH}\"; }};\n\
         // Only Packages indexes: no Translation files.\n\
         Acquire::Languages \"none\";\n\
         // Keep lists compressed on disk (bookworm main: ~20 MB instead of ~95 MB).\n\
         Acquire::GzipIndexes \"true\";\n\
         // Our directories live in the user's cache, which the _apt sandbox user usually cannot\n\
         // enter; apt would fall back to root with a warning on every run. (No effect as non-root.)\n\
         APT::Sandbox::User \"root\";\n"
    );
    if !proxies.is_empty() {
        conf.push_str("// Proxy settings carried over from the machine's apt configuration.\n");
        for line in proxies {
            conf.push_str(line);
            conf.push('\n');
        }
    }
    Ok(conf)
}

/// `Acquire::http(s)::Proxy…` lines of the machine's apt configuration: the network path to the
/// mirrors is the machine's business, so a configured proxy is honoured (environment proxies are
/// honoured by apt itself). Empty when apt-config is unavailable.
fn host_proxy_settings() -> Vec<String> {
    let Ok(out) = Command::new("apt-config")
        .arg("dump")
        .env_remove("APT_CONFIG")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    proxy_lines(&String::from_utf8_lossy(&out.stdout))
}

fn proxy_lines(dump: &str) -> Vec<String> {
    dump.lines()
        .filter(|l| {
            let key = l
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            key.starts_with("acquire::http::proxy") || key.starts_with("acquire::https::proxy")
        })
        .map(str::to_string)
        .collect()
}

// ---- mirror discovery ----------------------------------------------------------------------------

/// The mirror for `kind`: the spec's override (with the discovered or default keyring), else the
/// first matching source of the machine.
fn choose_mirror(
    kind: ArchiveKind,
    overrides: &MirrorOverrides,
    host: &[SourceEntry],
    host_etc: &Path,
) -> Result<Mirror> {
    let discovered = discover_mirror(host, kind);
    let override_uri = match kind {
        ArchiveKind::Archive => overrides.mirror.as_ref(),
        ArchiveKind::Security => overrides.security_mirror.as_ref(),
    };
    if let Some(uri) = override_uri {
        let keyring = discovered
            .map(|m| m.keyring)
            .unwrap_or_else(|| Keyring::Files(vec![PathBuf::from(DEFAULT_KEYRING)]));
        return Ok(Mirror {
            uri: uri.trim_end_matches('/').to_string(),
            keyring,
        });
    }
    discovered.with_context(|| {
        let (what, segment) = match kind {
            ArchiveKind::Archive => ("Debian archive", ARCHIVE_SEGMENT),
            ArchiveKind::Security => ("Debian security archive", SECURITY_SEGMENT),
        };
        format!(
            "no {what} mirror found in {0}/sources.list or {0}/sources.list.d/ (looked for an enabled \
             `deb` source whose URI path has a /{segment}/ component); set `[apt] {1} = \"<URI>\"` in the image spec",
            host_etc.display(),
            kind.spec_key()
        )
    })
}

/// First enabled `deb` entry serving `kind`, in apt's reading order.
pub fn discover_mirror(entries: &[SourceEntry], kind: ArchiveKind) -> Option<Mirror> {
    entries
        .iter()
        .filter(|e| e.enabled && e.types.iter().any(|t| t == "deb"))
        .find_map(|e| {
            let security_suite = e.suites.iter().any(|s| s.ends_with(SECURITY_SUFFIX));
            let uri = e.uris.iter().find(|u| match kind {
                ArchiveKind::Security => security_suite || has_segment(u, SECURITY_SEGMENT),
                ArchiveKind::Archive => !security_suite && has_segment(u, ARCHIVE_SEGMENT),
            })?;
            Some(Mirror {
                uri: uri.trim_end_matches('/').to_string(),
                keyring: keyring_of(e.signed_by.as_deref()),
            })
        })
}

/// Whether a `/`-separated component of `uri` (after the scheme) equals `segment`.
fn has_segment(uri: &str, segment: &str) -> bool {
    let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
    rest.split('/').skip(1).any(|s| s == segment)
}

/// Interpret a `Signed-By` value: an inline armoured key, or keyring paths; fingerprints (which
/// select keys from the machine's trusted.gpg.d, deliberately not used here) are dropped, and with
/// nothing left the Debian archive keyring is used.
fn keyring_of(signed_by: Option<&str>) -> Keyring {
    if let Some(value) = signed_by {
        if value.contains("BEGIN PGP PUBLIC KEY BLOCK") {
            return Keyring::Inline(value.trim().to_string() + "\n");
        }
        let files: Vec<PathBuf> = value
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| s.starts_with('/'))
            .map(PathBuf::from)
            .collect();
        if !files.is_empty() {
            return Keyring::Files(files);
        }
    }
    Keyring::Files(vec![PathBuf::from(DEFAULT_KEYRING)])
}

/// All source entries of the machine in apt's order: `sources.list`, then `sources.list.d/*.list`
/// and `*.sources` sorted by name (other files, e.g. `*.disabled`, are ignored as apt ignores them).
fn read_host_sources(etc: &Path) -> Result<Vec<SourceEntry>> {
    let mut entries = Vec::new();
    let main = etc.join("sources.list");
    if main.is_file() {
        entries.extend(parse_one_line(&read(&main)?));
    }
    let parts = etc.join("sources.list.d");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&parts) {
        Ok(dir) => dir.flatten().map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    for file in files {
        match file.extension().and_then(|e| e.to_str()) {
            Some("list") => entries.extend(parse_one_line(&read(&file)?)),
            Some("sources") => entries.extend(parse_deb822(&read(&file)?)),
            _ => {}
        }
    }
    Ok(entries)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Parse one-line-style sources (sources.list(5)): `deb [opt=val …] uri suite [component…]`.
pub fn parse_one_line(text: &str) -> Vec<SourceEntry> {
    text.lines().filter_map(parse_one_line_entry).collect()
}

fn parse_one_line_entry(line: &str) -> Option<SourceEntry> {
    let line = line.split('#').next().unwrap_or("");
    let mut tokens = line.split_whitespace().peekable();
    let kind = tokens.next()?.to_string();
    let mut signed_by = None;
    if tokens.peek().is_some_and(|t| t.starts_with('[')) {
        for token in tokens.by_ref() {
            let done = token.ends_with(']');
            let opt = token.trim_start_matches('[').trim_end_matches(']');
            if let Some(v) = opt.strip_prefix("signed-by=") {
                signed_by = Some(v.to_string());
            }
            if done {
                break;
            }
        }
    }
    let uri = tokens.next()?.to_string();
    let suite = tokens.next()?.to_string();
    Some(SourceEntry {
        types: vec![kind],
        uris: vec![uri],
        suites: vec![suite],
        components: tokens.map(str::to_string).collect(),
        signed_by,
        enabled: true,
    })
}

/// Parse deb822-style sources (sources.list(5) "DEB822-STYLE FORMAT").
pub fn parse_deb822(text: &str) -> Vec<SourceEntry> {
    let mut entries = Vec::new();
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.lines().chain(std::iter::once("")) {
        if line.starts_with('#') {
            continue; // comments may appear anywhere and do not end a paragraph
        }
        if line.trim().is_empty() {
            if !fields.is_empty() {
                entries.push(deb822_entry(&fields));
                fields.clear();
            }
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some((_, value)) = fields.last_mut() {
                let cont = line.strip_prefix([' ', '\t']).unwrap_or(line);
                value.push('\n');
                value.push_str(if cont.trim() == "." { "" } else { cont });
            }
            continue;
        }
        if let Some((key, value)) = line.split_once(':') {
            fields.push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    entries
}

fn deb822_entry(fields: &[(String, String)]) -> SourceEntry {
    let get = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let list = |key: &str| -> Vec<String> {
        get(key)
            .map(|v| v.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };
    SourceEntry {
        types: list("types"),
        uris: list("uris"),
        suites: list("suites"),
        components: list("components"),
        signed_by: get("signed-by").map(|v| v.trim().to_string()),
        enabled: !get("enabled").is_some_and(|v| v.trim().eq_ignore_ascii_case("no")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Sample texts use reserved example hosts: the project never names real mirror hosts in code.
    const ONE_LINE: &str = "\
# comment line
deb [arch=amd64 signed-by=/usr/share/keyrings/a.gpg] http://mirror.example/debian bookworm main contrib
deb-src http://mirror.example/debian bookworm main
deb http://mirror.example/debian-security bookworm-security main # trailing comment
deb [ signed-by=/k/other.gpg ] https://vendor.example/apt cloud-sdk main
";

    const DEB822: &str = "\
Types: deb deb-src
# a comment inside the paragraph
URIs: http://archive.example/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://archive.example/debian-security
Suites: bookworm-security
Components: main
Enabled: no

Types: deb
URIs: http://snapshot.example/archive/debian-security/20250520T000000Z
Suites: bookworm-security
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBGPL0BUBEADmW5NdOOHwPIJlgPu6JDcKw/NZJPR8lsD3K87ZM18gzyQZJD+w
 -----END PGP PUBLIC KEY BLOCK-----
";

    #[test]
    fn one_line_format_is_parsed() {
        let entries = parse_one_line(ONE_LINE);
        assert_eq!(entries.len(), 4);
        assert_eq!(
            entries[0],
            SourceEntry {
                types: vec!["deb".into()],
                uris: vec!["http://mirror.example/debian".into()],
                suites: vec!["bookworm".into()],
                components: vec!["main".into(), "contrib".into()],
                signed_by: Some("/usr/share/keyrings/a.gpg".into()),
                enabled: true,
            }
        );
        assert_eq!(entries[2].components, vec!["main".to_string()]);
        assert_eq!(entries[3].signed_by.as_deref(), Some("/k/other.gpg"));
        assert_eq!(
            entries[3].uris,
            vec!["https://vendor.example/apt".to_string()]
        );
    }

    #[test]
    fn one_line_discovery_finds_both_archives() {
        let entries = parse_one_line(ONE_LINE);
        assert_eq!(
            discover_mirror(&entries, ArchiveKind::Archive),
            Some(Mirror {
                uri: "http://mirror.example/debian".into(),
                keyring: Keyring::Files(vec!["/usr/share/keyrings/a.gpg".into()]),
            })
        );
        assert_eq!(
            discover_mirror(&entries, ArchiveKind::Security),
            Some(Mirror {
                uri: "http://mirror.example/debian-security".into(),
                keyring: Keyring::Files(vec![DEFAULT_KEYRING.into()]),
            })
        );
    }

    #[test]
    fn deb822_format_is_parsed_and_disabled_entries_skipped() {
        let entries = parse_deb822(DEB822);
        assert_eq!(entries.len(), 3);
        assert_eq!(
            entries[0].types,
            vec!["deb".to_string(), "deb-src".to_string()]
        );
        assert_eq!(
            entries[0].suites,
            vec!["bookworm".to_string(), "bookworm-updates".to_string()]
        );
        assert!(!entries[1].enabled);
        let archive = discover_mirror(&entries, ArchiveKind::Archive).unwrap();
        assert_eq!(archive.uri, "http://archive.example/debian");
        assert_eq!(
            archive.keyring,
            Keyring::Files(vec!["/usr/share/keyrings/debian-archive-keyring.gpg".into()])
        );
        // The disabled security entry is skipped; the snapshot one (inline key) is chosen.
        let security = discover_mirror(&entries, ArchiveKind::Security).unwrap();
        assert_eq!(
            security.uri,
            "http://snapshot.example/archive/debian-security/20250520T000000Z"
        );
        assert_eq!(
            security.keyring,
            Keyring::Inline(
                "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBGPL0BUBEADmW5NdOOHwPIJlgPu6JDcKw/NZJPR8lsD3K87ZM18gzyQZJD+w\n-----END PGP PUBLIC KEY BLOCK-----\n"
                    .into()
            )
        );
    }

    #[test]
    fn vendor_repositories_are_not_mistaken_for_debian() {
        let entries = parse_one_line(
            "deb https://vendor.example/apt bookworm main\ndeb https://vendor.example/debian-extras bookworm main\n",
        );
        assert_eq!(discover_mirror(&entries, ArchiveKind::Archive), None);
        assert_eq!(discover_mirror(&entries, ArchiveKind::Security), None);
    }

    #[test]
    fn suites_are_routed_by_suffix() {
        assert_eq!(
            ArchiveKind::of_suite("bookworm-security"),
            ArchiveKind::Security
        );
        assert_eq!(ArchiveKind::of_suite("trixie"), ArchiveKind::Archive);
        assert_eq!(
            ArchiveKind::of_suite("bookworm-updates"),
            ArchiveKind::Archive
        );
    }

    fn sample_etc() -> atomic::TempDir {
        let etc = atomic::TempDir::new_in(&std::env::temp_dir(), "apt-etc-test").unwrap();
        std::fs::create_dir(etc.path().join("sources.list.d")).unwrap();
        std::fs::write(etc.path().join("sources.list.d/debian.sources"), DEB822).unwrap();
        std::fs::write(
            etc.path().join("sources.list.d/x.list.disabled"),
            "deb http://bad.example/debian trixie main\n",
        )
        .unwrap();
        etc
    }

    #[test]
    fn overrides_win_and_missing_mirror_names_the_spec_key() {
        let etc = sample_etc();
        let cache = atomic::TempDir::new_in(&std::env::temp_dir(), "apt-cache-test").unwrap();
        let overrides = MirrorOverrides {
            mirror: Some("http://override.example/debian/".into()),
            security_mirror: None,
        };
        let apt = Apt::with_host_config(
            cache.path(),
            &["trixie".into(), "bookworm-security".into(), "trixie".into()],
            &overrides,
            etc.path(),
        )
        .unwrap();
        assert_eq!(
            apt.suites(),
            ["bookworm-security".to_string(), "trixie".to_string()]
        );
        assert_eq!(
            apt.mirror("trixie").unwrap().uri,
            "http://override.example/debian"
        );
        let sources = std::fs::read_to_string(apt.dir().join("sources.list")).unwrap();
        let lines: Vec<&str> = sources.lines().skip(1).collect();
        assert!(lines[0].starts_with("deb [signed-by="), "{sources}");
        assert!(lines[0].ends_with("] http://snapshot.example/archive/debian-security/20250520T000000Z bookworm-security main"));
        assert_eq!(lines[1], "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://override.example/debian trixie main");

        let empty = atomic::TempDir::new_in(&std::env::temp_dir(), "apt-etc-test").unwrap();
        let err = Apt::with_host_config(
            cache.path(),
            &["bookworm-security".into()],
            &MirrorOverrides::default(),
            empty.path(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("security_mirror"), "{err}");
    }

    #[test]
    fn apt_conf_isolates_from_the_machine() {
        let etc = sample_etc();
        let cache = atomic::TempDir::new_in(&std::env::temp_dir(), "apt-cache-test").unwrap();
        let apt = Apt::with_host_config(
            cache.path(),
            &["bookworm".into()],
            &MirrorOverrides::default(),
            etc.path(),
        )
        .unwrap();
        // Ask apt itself (independent of our text) what the effective configuration is.
        let out = Command::new("apt-config")
            .arg("dump")
            .env("APT_CONFIG", apt.dir().join("apt.conf"))
            .output()
            .expect("apt-config (package apt) is required");
        let dump = String::from_utf8(out.stdout).unwrap();
        let d = apt.dir().display().to_string();
        for expected in [
            format!("Dir::Etc::sourcelist \"{d}/sources.list\";"),
            format!("Dir::Etc::parts \"{d}/empty\";"),
            format!("Dir::State \"{d}/state\";"),
            format!("Dir::State::status \"{d}/state/status\";"),
            format!("Dir::Cache \"{d}/cache\";"),
            "Dir::Etc::preferences \"/dev/null\";".to_string(),
        ] {
            assert!(dump.contains(&expected), "missing {expected} in\n{dump}");
        }
        // Hooks from the machine's apt.conf.d must not apply to us.
        assert!(!dump.contains("Post-Invoke"), "{dump}");
    }

    #[test]
    fn madison_parsing_picks_first_version_of_the_suite() {
        let madison = "\
    linux-image-amd64 | 6.1.158-1 | http://m.example/debian-security bookworm-security/main amd64 Packages
    linux-image-amd64 | 6.1.153-1 | http://m.example/debian bookworm/main amd64 Packages
    linux-image-amd64 | 6.1.140-1 | http://m.example/debian bookworm/main amd64 Packages
";
        assert_eq!(
            newest_in_suite(madison, "linux-image-amd64", "bookworm").as_deref(),
            Some("6.1.153-1")
        );
        assert_eq!(
            newest_in_suite(madison, "linux-image-amd64", "bookworm-security").as_deref(),
            Some("6.1.158-1")
        );
        assert_eq!(
            newest_in_suite(madison, "linux-image-amd64", "trixie"),
            None
        );
        assert_eq!(newest_in_suite(madison, "linux-image", "bookworm"), None);
    }

    #[test]
    fn show_record_is_parsed() {
        let show = "Package: p\nVersion: 1:2-3\nArchitecture: all\nDescription: d\n more\nFilename: pool/main/p/p_2-3_all.deb\nSize: 42\nSHA256: 0000000000000000000000000000000000000000000000000000000000000001\n\n";
        let pkg = parse_show_record(show, "p", "1:2-3", "s").unwrap();
        assert_eq!(pkg.arch, "all");
        assert_eq!(pkg.size, 42);
        assert_eq!(pkg.filename, "pool/main/p/p_2-3_all.deb");
        assert_eq!(download_file_name(&pkg), "p_1%3a2-3_all.deb");
        assert!(parse_show_record(show, "p", "9", "s").is_err());
    }

    #[test]
    fn proxy_lines_are_selected() {
        let dump = "APT \"\";\nAcquire::http::Proxy \"http://proxy.example:3142\";\nAcquire::http::Proxy::mirror.example \"DIRECT\";\nAcquire::https::Proxy \"DIRECT\";\nAcquire::Retries \"3\";\n";
        assert_eq!(proxy_lines(dump).len(), 3);
    }
}
