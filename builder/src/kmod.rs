//! Kernel module index and dependency closure for an extracted Debian `linux-image` package.
//!
//! Debian's `.deb` ships `lib/modules/<version>/` without the files `depmod` generates at install time
//! (`modules.dep`, `modules.alias`, …; docs/formats.md §10), so the closure is computed from the modules
//! themselves:
//!
//! * **name → file** comes from file names alone (`kernel/**/<name>.ko[.xz]`, `-` normalised to `_` as the
//!   kernel does), which is fast: ~4,000 modules are indexed without opening any of them.
//! * **built-in modules** come from `modules.builtin` (they need no loading) and their aliases from
//!   `modules.builtin.modinfo`.
//! * **dependencies** come from each module's `.modinfo` ELF section (NUL-separated `key=value`:
//!   `depends=a,b`, `softdep=pre: x post: y`), read lazily and only for modules in the closure. 6.12
//!   modules are `.ko.xz` and are decompressed in memory; 6.1 modules are plain `.ko`.
//!
//! The xz decoder is the `liblzma` crate (bindings to xz-utils' liblzma, the library kmod itself uses):
//! the builder already depends on it to unpack `.deb` `data.tar.xz` members, so module decoding adds no
//! dependency, and it decodes every xz filter chain. (Pure-Rust `lzma-rs` would also do for today's
//! modules — kbuild writes `xz --check=crc32 --lzma2=dict=1MiB`, a single LZMA2 filter — but would be a
//! second xz decoder in the tree and rejects BCJ filters.)
//!
//! Load order is the order of a depth-first walk: for each wanted module (in the caller's order), its
//! `softdep pre:` modules, then its `depends=` modules (in `.modinfo` order), then the module itself;
//! every module appears once. That is a valid `insmod` order (`modprobe --show-depends` gives the same
//! set; its order among independent modules may differ).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use object::read::elf::ElfFile64;
use object::{Endianness, Object, ObjectSection};

/// Directory below `lib/modules/<version>/` that holds the loadable modules.
const KERNEL_SUBDIR: &str = "kernel";
/// List of built-in modules, one `kernel/<path>.ko` per line (written by kbuild, shipped in the .deb).
const MODULES_BUILTIN: &str = "modules.builtin";
/// `<module>.<key>=<value>` NUL-separated records of built-in modules (kbuild, shipped in the .deb).
const MODULES_BUILTIN_MODINFO: &str = "modules.builtin.modinfo";
/// ELF section holding a module's `key=value` records (`MODULE_INFO()` in `include/linux/module.h`).
const MODINFO_SECTION: &str = ".modinfo";
/// Suffix of an uncompressed module (Debian 6.1).
const KO_SUFFIX: &str = ".ko";
/// Suffix of an xz-compressed module (Debian 6.12, `MODULE_COMPRESS_XZ`).
const KO_XZ_SUFFIX: &str = ".ko.xz";
/// Other module compressions kbuild can produce; Debian uses none of them, so they are rejected loudly.
const UNSUPPORTED_KO_SUFFIXES: [&str; 2] = [".ko.zst", ".ko.gz"];
/// How many similar names an "unknown module" error lists.
const MAX_SUGGESTIONS: usize = 8;

/// One loadable module of the closure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    /// Module name as the kernel knows it (`-` normalised to `_`), e.g. `dm_verity`.
    pub name: String,
    /// Path relative to `lib/modules/<version>/`, e.g. `kernel/drivers/md/dm-verity.ko.xz`.
    pub rel_path: String,
    /// `depends=` of `.modinfo`, normalised names, in file order (may include built-in modules only in
    /// theory: modpost lists loadable modules).
    pub depends: Vec<String>,
    /// `softdep=… pre: …` names of `.modinfo` as written (they may be aliases, e.g. `crypto-crc32c`).
    pub softdep_pre: Vec<String>,
}

impl ModuleInfo {
    /// True for `.ko.xz`: the init must pass `MODULE_INIT_COMPRESSED_FILE` to `finit_module`.
    pub fn is_xz_compressed(&self) -> bool {
        self.rel_path.ends_with(KO_XZ_SUFFIX)
    }
}

/// A `softdep pre:` name that is neither a module file, a built-in module nor a built-in alias.
///
/// Typically an alias provided by loadable modules (`crypto-crc32c` → `crc32c_generic`, `crc32c-intel`):
/// resolving it needs `modules.alias`, which only `depmod` over the whole tree produces. Name the
/// providers explicitly in the module list if the softdep matters for boot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct UnresolvedSoftdep {
    /// Module whose `.modinfo` names the softdep.
    pub module: String,
    /// The softdep name as written.
    pub softdep: String,
}

/// Result of [`ModuleIndex::closure`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closure {
    /// Loadable modules in load order (dependencies first), each once.
    pub modules: Vec<ModuleInfo>,
    /// Requested or depended-on names that are built into the kernel (sorted, normalised).
    pub builtin: Vec<String>,
    /// `softdep pre:` names skipped because nothing in the tree provides them by name (sorted).
    pub unresolved_softdeps: Vec<UnresolvedSoftdep>,
}

/// Index of `<root>/lib/modules/<version>/`.
#[derive(Debug, Clone)]
pub struct ModuleIndex {
    dir: PathBuf,
    version: String,
    /// Normalised name → path relative to `dir`.
    modules: BTreeMap<String, String>,
    /// Normalised names of built-in modules.
    builtin: BTreeSet<String>,
    /// Alias → normalised built-in module name providing it.
    builtin_aliases: BTreeMap<String, String>,
}

/// The kernel treats `-` and `_` in module names as the same character (`kernel/module/main.c`).
pub fn normalize_name(name: &str) -> String {
    name.replace('-', "_")
}

impl ModuleIndex {
    /// Index `<root>/lib/modules/<version>/` of an extracted linux-image .deb: names and paths from file
    /// names, built-in modules from `modules.builtin`. No module is opened here.
    pub fn open(modules_dir: &Path) -> Result<Self> {
        let version = modules_dir
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| {
                format!(
                    "{}: expected lib/modules/<kernel version> of an extracted linux-image package",
                    modules_dir.display()
                )
            })?
            .to_string();
        let mut modules = BTreeMap::new();
        scan_modules(modules_dir, Path::new(KERNEL_SUBDIR), &mut modules)?;
        if modules.is_empty() {
            bail!(
                "{}: no kernel modules (*.ko, *.ko.xz) found below {KERNEL_SUBDIR}/ — is this an extracted \
                 linux-image package's lib/modules/<version>/?",
                modules_dir.display()
            );
        }
        let builtin = read_builtin_list(&modules_dir.join(MODULES_BUILTIN))?;
        let builtin_aliases = read_builtin_aliases(&modules_dir.join(MODULES_BUILTIN_MODINFO))?;
        Ok(Self {
            dir: modules_dir.to_path_buf(),
            version,
            modules,
            builtin,
            builtin_aliases,
        })
    }

    /// Kernel release this tree belongs to (the directory name, e.g. `6.12.117+deb12-amd64`).
    pub fn kernel_version(&self) -> &str {
        &self.version
    }

    /// Number of loadable modules indexed.
    pub fn module_count(&self) -> usize {
        self.modules.len()
    }

    /// True if this kernel has `name` (with `-` or `_`), as a loadable module or built in.
    pub fn contains(&self, name: &str) -> bool {
        let norm = normalize_name(name);
        self.modules.contains_key(&norm) || self.builtin.contains(&norm)
    }

    /// True if `name` (with `-` or `_`) is built into the kernel.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize_name(name))
    }

    /// Closure of `wanted` (names with `-` or `_`): dependencies first, each module once, deterministic
    /// order; `softdep pre:` modules included (if the tree has them) before the module; built-in modules
    /// skipped and reported; an unknown name is an error listing similar names.
    pub fn closure(&self, wanted: &[String]) -> Result<Closure> {
        let mut walk = Walk::default();
        for name in wanted {
            let norm = normalize_name(name);
            if self.modules.contains_key(&norm) {
                self.visit(&norm, &mut walk)?;
            } else if self.builtin.contains(&norm) {
                walk.builtin.insert(norm);
            } else {
                bail!("{}", self.unknown_module_message(name));
            }
        }
        Ok(Closure {
            modules: walk.order,
            builtin: walk.builtin.into_iter().collect(),
            unresolved_softdeps: walk.unresolved.into_iter().collect(),
        })
    }

    /// Reads the module's `.modinfo` (decompressing `.ko.xz` in memory).
    pub fn module_info(&self, name: &str) -> Result<ModuleInfo> {
        let norm = normalize_name(name);
        let rel_path = self
            .modules
            .get(&norm)
            .with_context(|| self.unknown_module_message(name))?;
        let path = self.dir.join(rel_path);
        let stored =
            fs::read(&path).with_context(|| format!("reading kernel module {}", path.display()))?;
        let elf = decompress_module(&stored, rel_path)
            .with_context(|| format!("decompressing kernel module {}", path.display()))?;
        let records = modinfo_records(&elf)
            .with_context(|| format!("{}: reading .modinfo", path.display()))?;
        let modinfo = parse_modinfo(&records);
        self.check_identity(&modinfo, &norm, &path)?;
        Ok(ModuleInfo {
            name: norm,
            rel_path: rel_path.clone(),
            depends: modinfo.depends,
            softdep_pre: modinfo.softdep_pre,
        })
    }

    /// File bytes as stored in the package (still xz-compressed for `.ko.xz`; signatures untouched).
    pub fn read_module(&self, m: &ModuleInfo) -> Result<Vec<u8>> {
        let path = self.dir.join(&m.rel_path);
        fs::read(&path).with_context(|| format!("reading kernel module {}", path.display()))
    }

    /// Depth-first post-order visit: softdeps, then depends, then the module.
    fn visit(&self, name: &str, walk: &mut Walk) -> Result<()> {
        if walk.placed.contains(name) {
            return Ok(());
        }
        if walk.stack.iter().any(|n| n == name) {
            bail!(
                "kernel {}: module dependency cycle {} -> {name} (corrupt module tree?)",
                self.version,
                walk.stack.join(" -> ")
            );
        }
        walk.stack.push(name.to_string());
        let info = self.module_info(name)?;
        for soft in &info.softdep_pre {
            self.visit_softdep(&info.name, soft, walk)?;
        }
        for dep in &info.depends {
            if self.modules.contains_key(dep) {
                self.visit(dep, walk)?;
            } else if self.builtin.contains(dep) {
                walk.builtin.insert(dep.clone());
            } else {
                bail!(
                    "{}: module {name} depends on {dep}, which is neither a module file nor listed in \
                     {MODULES_BUILTIN} (incomplete or mixed module tree?)",
                    self.dir.display()
                );
            }
        }
        walk.stack.pop();
        walk.placed.insert(name.to_string());
        walk.order.push(info);
        Ok(())
    }

    /// Softdeps are optional (modprobe skips what it cannot find): resolve by module name, built-in name
    /// or built-in alias, otherwise record it as unresolved. A softdep back into the module being
    /// resolved is ignored rather than treated as a cycle, as modprobe does.
    fn visit_softdep(&self, module: &str, soft: &str, walk: &mut Walk) -> Result<()> {
        let norm = normalize_name(soft);
        if self.modules.contains_key(&norm) {
            if walk.stack.contains(&norm) {
                return Ok(());
            }
            return self.visit(&norm, walk);
        }
        if self.builtin.contains(&norm) {
            walk.builtin.insert(norm);
        } else if let Some(provider) = self.builtin_aliases.get(soft) {
            walk.builtin.insert(provider.clone());
        } else {
            walk.unresolved.insert(UnresolvedSoftdep {
                module: module.to_string(),
                softdep: soft.to_string(),
            });
        }
        Ok(())
    }

    /// Guards against a module from another kernel or a renamed file: `name=` must match the file name
    /// and `vermagic=` must start with this tree's kernel release.
    fn check_identity(&self, modinfo: &Modinfo, norm: &str, path: &Path) -> Result<()> {
        if let Some(declared) = &modinfo.name {
            if normalize_name(declared) != norm {
                bail!(
                    "{}: .modinfo name={declared} does not match the file name",
                    path.display()
                );
            }
        }
        let release = modinfo
            .vermagic
            .as_deref()
            .and_then(|v| v.split_whitespace().next());
        if release != Some(self.version.as_str()) {
            bail!(
                "{}: vermagic {:?} is not for kernel {} (module from another kernel in this tree?)",
                path.display(),
                modinfo.vermagic.as_deref().unwrap_or("<missing>"),
                self.version
            );
        }
        Ok(())
    }

    fn unknown_module_message(&self, name: &str) -> String {
        let similar = similar_names(
            &normalize_name(name),
            self.modules.keys().chain(self.builtin.iter()),
        );
        let hint = if similar.is_empty() {
            "no similar names".to_string()
        } else {
            format!("similar names: {}", similar.join(", "))
        };
        format!(
            "unknown kernel module {name:?} for kernel {} ({}): no {KERNEL_SUBDIR}/**/{name}.ko[.xz] and not \
             in {MODULES_BUILTIN}; {hint}",
            self.version,
            self.dir.display()
        )
    }
}

/// Mutable state of one closure walk.
#[derive(Default)]
struct Walk {
    order: Vec<ModuleInfo>,
    placed: BTreeSet<String>,
    stack: Vec<String>,
    builtin: BTreeSet<String>,
    unresolved: BTreeSet<UnresolvedSoftdep>,
}

/// Recursively indexes `base/rel` (sorted, so duplicate detection and errors are deterministic).
fn scan_modules(base: &Path, rel: &Path, out: &mut BTreeMap<String, String>) -> Result<()> {
    let dir = base.join(rel);
    let mut entries = fs::read_dir(&dir)
        .with_context(|| format!("listing module directory {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("listing module directory {}", dir.display()))?;
    entries.sort();
    for file_name in entries {
        let child = rel.join(&file_name);
        let full = base.join(&child);
        let file_type = fs::symlink_metadata(&full)
            .with_context(|| format!("stat {}", full.display()))?
            .file_type();
        if file_type.is_dir() {
            scan_modules(base, &child, out)?;
            continue;
        }
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        let Some(stem) = module_stem(file_name, &full)? else {
            continue;
        };
        let rel_path = child
            .to_str()
            .with_context(|| format!("{}: module path is not UTF-8", full.display()))?
            .to_string();
        if let Some(previous) = out.insert(normalize_name(stem), rel_path.clone()) {
            bail!(
                "{}: two files provide module {}: {previous} and {rel_path}",
                base.display(),
                normalize_name(stem)
            );
        }
    }
    Ok(())
}

/// Module name part of a module file name; `None` for non-module files.
fn module_stem<'a>(file_name: &'a str, full: &Path) -> Result<Option<&'a str>> {
    if let Some(suffix) = UNSUPPORTED_KO_SUFFIXES
        .iter()
        .find(|s| file_name.ends_with(*s))
    {
        bail!(
            "{}: {suffix} modules are not supported (Debian kernels use .ko or .ko.xz)",
            full.display()
        );
    }
    Ok(file_name
        .strip_suffix(KO_XZ_SUFFIX)
        .or_else(|| file_name.strip_suffix(KO_SUFFIX)))
}

/// `modules.builtin`: one `kernel/…/<name>.ko` per line.
fn read_builtin_list(path: &Path) -> Result<BTreeSet<String>> {
    let text = fs::read_to_string(path).with_context(|| {
        format!(
            "reading {} (shipped in every linux-image package; is the package fully extracted?)",
            path.display()
        )
    })?;
    let mut names = BTreeSet::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let file = line.rsplit('/').next().unwrap_or(line);
        let stem = file
            .strip_suffix(KO_SUFFIX)
            .with_context(|| format!("{}: line {line:?} does not name a .ko", path.display()))?;
        names.insert(normalize_name(stem));
    }
    Ok(names)
}

/// `modules.builtin.modinfo`: NUL-separated `<module>.alias=<alias>` records (other keys ignored).
fn read_builtin_aliases(path: &Path) -> Result<BTreeMap<String, String>> {
    let bytes = fs::read(path).with_context(|| {
        format!(
            "reading {} (shipped in every linux-image package; is the package fully extracted?)",
            path.display()
        )
    })?;
    let mut aliases = BTreeMap::new();
    for record in bytes.split(|&b| b == 0).filter(|r| !r.is_empty()) {
        let Ok(record) = std::str::from_utf8(record) else {
            continue;
        };
        let Some((key, value)) = record.split_once('=') else {
            continue;
        };
        if let Some(module) = key.strip_suffix(".alias") {
            // First provider wins; the map is built in file order, which is deterministic.
            aliases
                .entry(value.to_string())
                .or_insert_with(|| normalize_name(module));
        }
    }
    Ok(aliases)
}

/// The ELF bytes of a module file (xz-decoded for `.ko.xz`).
fn decompress_module(stored: &[u8], rel_path: &str) -> Result<Vec<u8>> {
    if !rel_path.ends_with(KO_XZ_SUFFIX) {
        return Ok(stored.to_vec());
    }
    liblzma::decode_all(stored).context("xz decoding failed (truncated or corrupt .ko.xz?)")
}

/// The NUL-separated `key=value` records of the `.modinfo` section.
fn modinfo_records(elf: &[u8]) -> Result<Vec<String>> {
    let file =
        ElfFile64::<Endianness>::parse(elf).context("not a 64-bit ELF relocatable object")?;
    let section = file
        .section_by_name(MODINFO_SECTION)
        .context("no .modinfo section (not a kernel module?)")?;
    let data = section.data().context("reading .modinfo section data")?;
    data.split(|&b| b == 0)
        .filter(|r| !r.is_empty())
        .map(|r| {
            std::str::from_utf8(r)
                .map(str::to_string)
                .with_context(|| format!("non-UTF-8 .modinfo record {r:?}"))
        })
        .collect()
}

/// The `.modinfo` keys the closure needs.
#[derive(Debug, Default, PartialEq, Eq)]
struct Modinfo {
    name: Option<String>,
    vermagic: Option<String>,
    depends: Vec<String>,
    softdep_pre: Vec<String>,
}

fn parse_modinfo(records: &[String]) -> Modinfo {
    let mut info = Modinfo::default();
    for record in records {
        let Some((key, value)) = record.split_once('=') else {
            continue;
        };
        match key {
            "name" => info.name = Some(value.to_string()),
            "vermagic" => info.vermagic = Some(value.to_string()),
            "depends" => info.depends.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(normalize_name),
            ),
            "softdep" => info.softdep_pre.extend(softdep_pre(value)),
            _ => {}
        }
    }
    info
}

/// Names after `pre:` in a `softdep=` value (`pre: a b post: c`). Words before the first `pre:`/`post:`
/// keyword are ignored, as kmod does (6.1's cifs has `softdep=gcm`, which modprobe never loads).
fn softdep_pre(value: &str) -> Vec<String> {
    let mut in_pre = false;
    let mut names = Vec::new();
    for word in value.split_whitespace() {
        match word {
            "pre:" => in_pre = true,
            "post:" => in_pre = false,
            name if in_pre => names.push(name.to_string()),
            _ => {}
        }
    }
    names
}

/// Up to [`MAX_SUGGESTIONS`] names within a small edit distance of `query` or containing it.
fn similar_names<'a>(query: &str, candidates: impl Iterator<Item = &'a String>) -> Vec<String> {
    let max_distance = (query.len() / 4).max(2);
    let mut scored: Vec<(usize, &String)> = candidates
        .filter_map(|c| {
            let d = edit_distance(query, c);
            let contains = query.len() >= 3 && c.contains(query);
            (d <= max_distance || contains).then_some((d, c))
        })
        .collect();
    scored.sort();
    scored.dedup();
    scored
        .into_iter()
        .take(MAX_SUGGESTIONS)
        .map(|(_, c)| c.clone())
        .collect()
}

/// Levenshtein distance over bytes (module names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{fixture, TempDir};
    use std::process::Command;

    const K612: &str = "linux-image-6.12.117+deb12-amd64/lib/modules/6.12.117+deb12-amd64";
    const K61: &str = "linux-image-6.1.0-56-amd64/lib/modules/6.1.0-56-amd64";
    /// Boot-relevant modules common to both kernels (docs/formats.md §11).
    const COMMON_SET: [&str; 4] = ["dm-verity", "virtio_blk", "virtio_net", "squashfs"];

    /// Runs a reference tool; a missing tool fails the test with the package to install.
    fn run(cmd: &mut Command, package: &str) -> String {
        let out = cmd.output().unwrap_or_else(|e| {
            panic!("cannot run {cmd:?} ({e}): install Debian package {package}")
        });
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("tool output is UTF-8")
    }

    /// kmod's `modinfo -F <field> FILE` — an independent .modinfo reader (libkmod, liblzma).
    fn modinfo_field(file: &Path, field: &str) -> String {
        run(
            Command::new("modinfo").args(["-F", field]).arg(file),
            "kmod",
        )
        .trim()
        .to_string()
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn realistic_set(extra: &[&str]) -> Vec<String> {
        strings(&COMMON_SET)
            .into_iter()
            .chain(strings(extra))
            .collect()
    }

    /// Every `depends=` module is loaded before its user.
    fn assert_dependency_order(closure: &Closure) {
        for (i, m) in closure.modules.iter().enumerate() {
            for dep in &m.depends {
                let pos = closure.modules.iter().position(|x| &x.name == dep);
                match pos {
                    Some(p) => assert!(p < i, "{} loaded before its dependency {dep}", m.name),
                    None => assert!(
                        closure.builtin.contains(dep),
                        "{} needs {dep}, not in the closure",
                        m.name
                    ),
                }
            }
        }
    }

    fn names(closure: &Closure) -> Vec<&str> {
        closure.modules.iter().map(|m| m.name.as_str()).collect()
    }

    /// Oracle: kmod's `depmod` over the fixture (via a symlink, the fixture stays read-only), then
    /// `modprobe --show-depends` per name. Returns (insmod paths relative to the version dir, builtin).
    fn modprobe_show_depends(
        modules_dir: &Path,
        wanted: &[String],
    ) -> (BTreeSet<String>, BTreeSet<String>) {
        let version = modules_dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("version dir name");
        let tmp = TempDir::new(&format!("depmod-{version}"));
        let vdir = tmp.join("lib/modules").join(version);
        fs::create_dir_all(&vdir).expect("create oracle tree");
        std::os::unix::fs::symlink(modules_dir.join(KERNEL_SUBDIR), vdir.join(KERNEL_SUBDIR))
            .expect("symlink");
        for f in [MODULES_BUILTIN, MODULES_BUILTIN_MODINFO, "modules.order"] {
            fs::copy(modules_dir.join(f), vdir.join(f)).expect("copy module metadata");
        }
        run(
            Command::new("depmod")
                .arg("-b")
                .arg(tmp.path())
                .arg(version),
            "kmod",
        );
        let prefix = format!("{}/", vdir.display());
        let (mut insmod, mut builtin) = (BTreeSet::new(), BTreeSet::new());
        for name in wanted {
            let out = run(
                Command::new("modprobe").arg("-d").arg(tmp.path()).args([
                    "-S",
                    version,
                    "--show-depends",
                    name,
                ]),
                "kmod",
            );
            for line in out.lines() {
                let line = line.trim();
                if let Some(path) = line.strip_prefix("insmod ") {
                    insmod.insert(
                        path.strip_prefix(&prefix)
                            .expect("path under oracle tree")
                            .to_string(),
                    );
                } else if let Some(b) = line.strip_prefix("builtin ") {
                    builtin.insert(normalize_name(b));
                } else {
                    panic!("unexpected modprobe output {line:?}");
                }
            }
        }
        (insmod, builtin)
    }

    /// Full check of a realistic set against both oracles (modinfo per module, depmod+modprobe overall).
    fn check_realistic_set(rel: &str, extra: &[&str]) -> Closure {
        let dir = fixture(rel);
        let index = ModuleIndex::open(&dir).expect("open module tree");
        let wanted = realistic_set(extra);
        let closure = index.closure(&wanted).expect("closure");
        for m in &closure.modules {
            let file = dir.join(&m.rel_path);
            let oracle: Vec<String> = modinfo_field(&file, "depends")
                .split(',')
                .filter(|d| !d.is_empty())
                .map(normalize_name)
                .collect();
            assert_eq!(m.depends, oracle, "depends of {}", m.rel_path);
            assert_eq!(
                normalize_name(&modinfo_field(&file, "name")),
                m.name,
                "name of {}",
                m.rel_path
            );
            assert_eq!(
                index.read_module(m).expect("read module"),
                fs::read(&file).expect("read file")
            );
        }
        assert_dependency_order(&closure);
        let (insmod, builtin) = modprobe_show_depends(&dir, &wanted);
        let ours: BTreeSet<String> = closure.modules.iter().map(|m| m.rel_path.clone()).collect();
        assert_eq!(ours, insmod, "closure vs modprobe --show-depends");
        assert_eq!(
            closure.builtin.iter().cloned().collect::<BTreeSet<_>>(),
            builtin,
            "built-in modules"
        );
        assert!(
            closure.unresolved_softdeps.is_empty(),
            "{:?}",
            closure.unresolved_softdeps
        );
        closure
    }

    #[test]
    fn dm_verity_closure_6_1_matches_formats_md() {
        let index = ModuleIndex::open(&fixture(K61)).expect("open");
        assert_eq!(index.kernel_version(), "6.1.0-56-amd64");
        let closure = index.closure(&strings(&["dm-verity"])).expect("closure");
        let by_name = |n: &str| {
            closure
                .modules
                .iter()
                .find(|m| m.name == n)
                .expect(n)
                .clone()
        };
        // docs/formats.md §10, 6.1.0-56 table.
        assert_eq!(
            by_name("dm_verity").depends,
            strings(&["reed_solomon", "dm_mod", "dm_bufio"])
        );
        assert_eq!(by_name("dm_bufio").depends, strings(&["dm_mod"]));
        let mut set = names(&closure);
        set.sort();
        assert_eq!(set, ["dm_bufio", "dm_mod", "dm_verity", "reed_solomon"]);
        assert_eq!(names(&closure).last(), Some(&"dm_verity"));
        assert_dependency_order(&closure);
        assert!(closure
            .modules
            .iter()
            .all(|m| !m.is_xz_compressed() && m.rel_path.ends_with(".ko")));
    }

    #[test]
    fn dm_verity_closure_6_12_matches_formats_md() {
        let index = ModuleIndex::open(&fixture(K612)).expect("open");
        assert_eq!(index.kernel_version(), "6.12.117+deb12-amd64");
        let closure = index.closure(&strings(&["dm_verity"])).expect("closure");
        let by_name = |n: &str| {
            closure
                .modules
                .iter()
                .find(|m| m.name == n)
                .expect(n)
                .clone()
        };
        // docs/formats.md §10, 6.12.117 table.
        assert_eq!(
            by_name("dm_verity").depends,
            strings(&["dm_mod", "dm_bufio", "reed_solomon"])
        );
        assert_eq!(
            by_name("dm_verity").rel_path,
            "kernel/drivers/md/dm-verity.ko.xz"
        );
        let mut set = names(&closure);
        set.sort();
        assert_eq!(set, ["dm_bufio", "dm_mod", "dm_verity", "reed_solomon"]);
        assert_dependency_order(&closure);
        assert!(closure.modules.iter().all(ModuleInfo::is_xz_compressed));
    }

    #[test]
    fn realistic_set_6_1_matches_modinfo_and_modprobe() {
        let closure = check_realistic_set(K61, &["virtio_pci"]);
        // docs/formats.md §10/§11: on 6.1 virtio and virtio_pci are modules.
        for n in [
            "virtio",
            "virtio_ring",
            "virtio_pci",
            "virtio_pci_modern_dev",
            "virtio_pci_legacy_dev",
        ] {
            assert!(
                names(&closure).contains(&n),
                "{n} missing from {:?}",
                names(&closure)
            );
        }
        assert!(closure.builtin.is_empty());
    }

    #[test]
    fn realistic_set_6_12_matches_modinfo_and_modprobe() {
        let closure = check_realistic_set(K612, &["sev-guest", "tdx-guest", "virtio_pci"]);
        // docs/formats.md §10: sev-guest, tdx-guest → tsm → configfs; virtio_pci built in.
        let pos = |n: &str| names(&closure).iter().position(|x| *x == n).expect(n);
        assert!(
            pos("configfs") < pos("tsm")
                && pos("tsm") < pos("sev_guest")
                && pos("tsm") < pos("tdx_guest")
        );
        assert_eq!(closure.builtin, ["virtio_pci"]);
        let builtin_list =
            fs::read_to_string(fixture(K612).join(MODULES_BUILTIN)).expect("modules.builtin");
        assert!(builtin_list
            .lines()
            .any(|l| l == "kernel/drivers/virtio/virtio_pci.ko"));
    }

    #[test]
    fn builtin_only_request_loads_nothing() {
        let index = ModuleIndex::open(&fixture(K612)).expect("open");
        let closure = index
            .closure(&strings(&["virtio-pci", "virtio_console"]))
            .expect("closure");
        assert!(closure.modules.is_empty());
        assert_eq!(closure.builtin, ["virtio_console", "virtio_pci"]);
        assert!(index.is_builtin("virtio_ring") && !index.is_builtin("dm_verity"));
    }

    #[test]
    fn unknown_module_error_lists_similar_names() {
        let index = ModuleIndex::open(&fixture(K612)).expect("open");
        let err = format!(
            "{:#}",
            index
                .closure(&strings(&["squashfs", "dm-verty"]))
                .unwrap_err()
        );
        assert!(err.contains("unknown kernel module \"dm-verty\""), "{err}");
        assert!(err.contains("dm_verity"), "{err}");
        let err = format!(
            "{:#}",
            index.closure(&strings(&["qqqqqqqqqqqq"])).unwrap_err()
        );
        assert!(err.contains("no similar names"), "{err}");
    }

    #[test]
    fn alias_softdep_is_reported_unresolved() {
        let dir = fixture(K612);
        let index = ModuleIndex::open(&dir).expect("open");
        let closure = index.closure(&strings(&["ext4"])).expect("closure");
        let ext4 = closure
            .modules
            .iter()
            .find(|m| m.name == "ext4")
            .expect("ext4");
        assert_eq!(
            modinfo_field(&dir.join(&ext4.rel_path), "softdep"),
            "pre: crypto-crc32c"
        );
        assert_eq!(ext4.softdep_pre, ["crypto-crc32c"]);
        assert!(closure.unresolved_softdeps.contains(&UnresolvedSoftdep {
            module: "ext4".into(),
            softdep: "crypto-crc32c".into()
        }));
        assert_dependency_order(&closure);
    }

    #[test]
    fn module_from_another_kernel_is_rejected() {
        let tmp = TempDir::new("vermagic");
        let vdir = tmp.join("lib/modules/9.9.9-test");
        fs::create_dir_all(vdir.join("kernel")).expect("mkdir");
        fs::copy(
            fixture(K612).join("kernel/drivers/md/dm-mod.ko.xz"),
            vdir.join("kernel/dm-mod.ko.xz"),
        )
        .expect("copy");
        let err = format!("{:#}", ModuleIndex::open(&vdir).unwrap_err());
        assert!(err.contains("modules.builtin"), "{err}");
        fs::write(vdir.join(MODULES_BUILTIN), "").expect("write");
        fs::write(vdir.join(MODULES_BUILTIN_MODINFO), "").expect("write");
        let index = ModuleIndex::open(&vdir).expect("open");
        let err = format!("{:#}", index.closure(&strings(&["dm_mod"])).unwrap_err());
        assert!(
            err.contains("vermagic") && err.contains("9.9.9-test"),
            "{err}"
        );
    }

    #[test]
    fn truncated_module_names_the_file() {
        let tmp = TempDir::new("truncated");
        let vdir = tmp.join("lib/modules/6.12.117+deb12-amd64");
        fs::create_dir_all(vdir.join("kernel")).expect("mkdir");
        let full = fs::read(fixture(K612).join("kernel/drivers/md/dm-mod.ko.xz")).expect("read");
        fs::write(vdir.join("kernel/dm-mod.ko.xz"), &full[..full.len() / 2]).expect("write");
        fs::write(vdir.join(MODULES_BUILTIN), "").expect("write");
        fs::write(vdir.join(MODULES_BUILTIN_MODINFO), "").expect("write");
        let index = ModuleIndex::open(&vdir).expect("open");
        let err = format!("{:#}", index.closure(&strings(&["dm-mod"])).unwrap_err());
        assert!(
            err.contains("xz decoding failed") && err.contains("dm-mod.ko.xz"),
            "{err}"
        );
    }

    #[test]
    fn softdep_parsing_follows_kmod() {
        assert_eq!(softdep_pre("pre: a b post: c pre: d"), ["a", "b", "d"]);
        assert!(softdep_pre("gcm").is_empty());
        assert!(softdep_pre("post: x").is_empty());
    }

    #[test]
    fn edit_distance_examples() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("dm_verty", "dm_verity"), 1);
    }
}
