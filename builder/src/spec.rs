//! The image spec (`image.toml`) and the kernel profile it points to.
//!
//! Parsing is strict: unknown keys are errors that name the file, line and column, because a typo in a
//! spec silently ignored would produce an image the user did not ask for. Paths in a spec are relative to
//! the spec file and are resolved here, once, so later stages only see absolute paths.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A parsed and resolved image spec.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The spec file itself.
    pub path: PathBuf,
    /// Directory the spec's relative paths are resolved against.
    pub dir: PathBuf,
    pub image: ImageSection,
    pub kernel: KernelProfile,
    /// The kernel profile file.
    pub kernel_profile: PathBuf,
    pub stub: StubSection,
    pub firmware: FirmwareSection,
    pub uki: UkiSection,
    pub rootfs: RootfsSection,
    pub workload: Option<WorkloadSection>,
    pub partitions: PartitionsSection,
    pub apt: AptSection,
    /// Per-target additions (`[targets.gcp]` …), by target name.
    pub targets: std::collections::BTreeMap<String, TargetSection>,
    /// `[secure_boot]`: sign the UKI and enroll the owner's keys (`build --keys` overrides it).
    pub secure_boot: Option<SecureBootSection>,
    /// `[golden]`: sign the golden measurement (`build --golden-key` overrides it).
    pub golden: Option<GoldenSection>,
}

/// `[golden] signing_key = "keys/golden.key"`: the private key (PEM, `cvm-image keys generate`'s
/// golden.key) that signs `golden-measurement.json`, resolved against the spec's directory. The
/// signature is written beside the file and embedded with it in the ESP.
#[derive(Debug, Clone)]
pub struct GoldenSection {
    pub signing_key: PathBuf,
}

/// `[secure_boot] keys = "keys"`: the directory of `cvm-image keys generate`, resolved against the
/// spec's directory.
#[derive(Debug, Clone)]
pub struct SecureBootSection {
    pub keys: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSection {
    pub name: String,
    pub version: String,
    /// The only timestamp that appears in outputs (`SOURCE_DATE_EPOCH`); 0 when absent.
    #[serde(default)]
    pub source_date_epoch: u64,
    /// A number the owner raises when older images must no longer be accepted (a security fix):
    /// carried into the golden file's and the manifest's `image`, where `verify
    /// --min-security-version` requires it. Absent: the outputs do not mention it.
    #[serde(default)]
    pub security_version: Option<u64>,
}

/// Kernel selection: which Debian package, which modules go into the initramfs, the command line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelProfile {
    pub package: String,
    pub suite: String,
    pub modules: Vec<String>,
    #[serde(default)]
    pub optional_modules: Vec<String>,
    #[serde(default)]
    pub cmdline: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StubSection {
    pub package: String,
    pub suite: String,
    /// Path of the stub inside the package.
    pub path: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirmwareSection {
    pub package: String,
    pub suite: String,
    pub code: String,
    pub vars: String,
}

#[derive(Debug, Clone)]
pub struct UkiSection {
    pub os_release: PathBuf,
    pub cmdline: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsCompression {
    Zstd,
    Gzip,
}

#[derive(Debug, Clone)]
pub struct RootfsSection {
    pub overlay: PathBuf,
    pub compression: FsCompression,
}

#[derive(Debug, Clone)]
pub struct WorkloadSection {
    pub dir: PathBuf,
    /// Entries of `dir` that go into the workload partition (files or directories); all of it when empty.
    pub include: Vec<String>,
    pub binaries: Vec<WorkloadBinary>,
}

/// A binary built from this workspace and placed into the workload partition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadBinary {
    pub package: String,
    pub bin: String,
    pub dest: String,
}

/// A partition size: exact bytes, or "fit" (content rounded up to 1 MiB plus headroom).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartSize {
    Fit,
    Bytes(u64),
}

#[derive(Debug, Clone)]
pub struct PartitionsSection {
    pub esp: PartSize,
    pub root: PartSize,
    pub workload: PartSize,
    pub headroom_percent: u32,
}

/// What a deployment target adds to the image: the drivers its platform needs (loaded as optional
/// modules: absent hardware is not an error, so one image serves every requested target) and kernel
/// command-line words.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSection {
    #[serde(default)]
    pub modules: Vec<String>,
    #[serde(default)]
    pub cmdline: String,
}

/// Target names a spec may configure (the `--target` values).
pub const TARGET_NAMES: &[&str] = &["qemu", "gcp", "aws", "azure"];

/// Overrides of the Debian mirrors discovered from the machine's apt configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AptSection {
    pub mirror: Option<String>,
    pub security_mirror: Option<String>,
}

// ---- raw (on-disk) shapes -------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    image: ImageSection,
    kernel: RawKernel,
    stub: StubSection,
    firmware: FirmwareSection,
    uki: RawUki,
    rootfs: RawRootfs,
    workload: Option<RawWorkload>,
    partitions: RawPartitions,
    #[serde(default)]
    apt: AptSection,
    #[serde(default)]
    targets: std::collections::BTreeMap<String, TargetSection>,
    secure_boot: Option<RawSecureBoot>,
    golden: Option<RawGolden>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGolden {
    signing_key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecureBoot {
    keys: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKernel {
    profile: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUki {
    os_release: String,
    cmdline: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRootfs {
    overlay: String,
    #[serde(default = "default_compression")]
    compression: FsCompression,
}

fn default_compression() -> FsCompression {
    FsCompression::Zstd
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    dir: String,
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    binaries: Vec<WorkloadBinary>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPartitions {
    esp: String,
    root: String,
    workload: String,
    #[serde(default)]
    headroom_percent: u32,
}

/// Parse TOML from `path`, rejecting unknown keys; the error names the file and the TOML position.
fn parse_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))
}

impl Spec {
    /// Load a spec; `kernel_override` replaces the spec's kernel profile (e.g. `--kernel kernel/debian-6.1.toml`).
    pub fn load(path: &Path, kernel_override: Option<&Path>) -> Result<Spec> {
        let path = std::path::absolute(path)
            .with_context(|| format!("cannot resolve {}", path.display()))?;
        let raw: RawSpec = parse_toml(&path)?;
        let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let resolve = |p: &str| dir.join(p);

        let kernel_profile = match kernel_override {
            Some(p) => std::path::absolute(p)?,
            None => resolve(&raw.kernel.profile),
        };
        let kernel: KernelProfile = parse_toml(&kernel_profile)
            .with_context(|| format!("kernel profile named by {}", path.display()))?;

        let size = |key: &str, v: &str| {
            parse_size(v).with_context(|| format!("{}: [partitions] {key} = {v:?}", path.display()))
        };
        let partitions = PartitionsSection {
            esp: size("esp", &raw.partitions.esp)?,
            root: size("root", &raw.partitions.root)?,
            workload: size("workload", &raw.partitions.workload)?,
            headroom_percent: raw.partitions.headroom_percent,
        };

        let spec = Spec {
            image: raw.image,
            kernel,
            kernel_profile,
            stub: raw.stub,
            firmware: raw.firmware,
            uki: UkiSection {
                os_release: resolve(&raw.uki.os_release),
                cmdline: raw.uki.cmdline.as_deref().map(resolve),
            },
            rootfs: RootfsSection {
                overlay: resolve(&raw.rootfs.overlay),
                compression: raw.rootfs.compression,
            },
            workload: raw.workload.map(|w| WorkloadSection {
                dir: resolve(&w.dir),
                include: w.include,
                binaries: w.binaries,
            }),
            partitions,
            apt: raw.apt,
            targets: raw.targets,
            secure_boot: raw.secure_boot.map(|sb| SecureBootSection {
                keys: resolve(&sb.keys),
            }),
            golden: raw.golden.map(|g| GoldenSection {
                signing_key: resolve(&g.signing_key),
            }),
            path,
            dir,
        };
        if let Some(unknown) = spec
            .targets
            .keys()
            .find(|t| !TARGET_NAMES.contains(&t.as_str()))
        {
            bail!(
                "{}: [targets.{unknown}] is not a target; known targets: {}",
                spec.path.display(),
                TARGET_NAMES.join(", ")
            );
        }
        spec.check_paths()?;
        Ok(spec)
    }

    /// Optional modules of the kernel profile plus those of the requested targets, each once, in order.
    pub fn optional_modules(&self, targets: &[String]) -> Vec<String> {
        let mut v = self.kernel.optional_modules.clone();
        for t in targets {
            for m in self
                .targets
                .get(t)
                .map(|s| s.modules.as_slice())
                .unwrap_or_default()
            {
                if !v.contains(m) {
                    v.push(m.clone());
                }
            }
        }
        v
    }

    /// Every file and directory the spec names must exist: fail early, naming the key and the path.
    fn check_paths(&self) -> Result<()> {
        let mut wanted: Vec<(&str, &Path, bool)> = vec![
            ("[uki] os_release", &self.uki.os_release, false),
            ("[rootfs] overlay", &self.rootfs.overlay, true),
        ];
        if let Some(c) = &self.uki.cmdline {
            wanted.push(("[uki] cmdline", c, false));
        }
        if let Some(w) = &self.workload {
            wanted.push(("[workload] dir", &w.dir, true));
        }
        if let Some(g) = &self.golden {
            wanted.push(("[golden] signing_key", &g.signing_key, false));
        }
        for (key, p, is_dir) in wanted {
            let ok = if is_dir { p.is_dir() } else { p.is_file() };
            if !ok {
                let kind = if is_dir { "directory" } else { "file" };
                bail!(
                    "{}: {key} names {}, which is not an existing {kind}",
                    self.path.display(),
                    p.display()
                );
            }
        }
        Ok(())
    }

    /// The kernel command line put into the UKI's `.cmdline`: the profile's defaults, the image's, then
    /// each requested target's words (in `targets` order, each word once).
    pub fn cmdline(&self, targets: &[String]) -> Result<String> {
        let mut parts = vec![self.kernel.cmdline.trim().to_string()];
        if let Some(p) = &self.uki.cmdline {
            let extra = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            parts.push(extra.split_whitespace().collect::<Vec<_>>().join(" "));
        }
        for t in targets {
            for word in self
                .targets
                .get(t)
                .map(|s| s.cmdline.split_whitespace())
                .into_iter()
                .flatten()
            {
                if !parts
                    .iter()
                    .any(|p| p.split_whitespace().any(|w| w == word))
                {
                    parts.push(word.to_string());
                }
            }
        }
        Ok(parts
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" "))
    }
}

/// Load a kernel profile file on its own (for `lock` and `fetch` of extra kernels).
pub fn load_kernel_profile(path: &Path) -> Result<KernelProfile> {
    parse_toml(path)
}

/// Parse "fit", "123", "64MiB", "1GiB", "512KiB" (binary units only: partition sizes are MiB-aligned).
pub fn parse_size(text: &str) -> Result<PartSize> {
    let t = text.trim();
    if t == "fit" {
        return Ok(PartSize::Fit);
    }
    let (num, mult) = [
        ("KiB", 1u64 << 10),
        ("MiB", 1 << 20),
        ("GiB", 1 << 30),
        ("TiB", 1 << 40),
    ]
    .iter()
    .find_map(|(suffix, m)| t.strip_suffix(suffix).map(|n| (n.trim(), *m)))
    .unwrap_or((t, 1));
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("expected \"fit\" or a size like \"64MiB\" / \"2GiB\""))?;
    n.checked_mul(mult)
        .map(PartSize::Bytes)
        .ok_or_else(|| anyhow::anyhow!("size overflows 64 bits"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("fit").unwrap(), PartSize::Fit);
        assert_eq!(parse_size("64MiB").unwrap(), PartSize::Bytes(64 << 20));
        assert_eq!(parse_size("2 GiB").unwrap(), PartSize::Bytes(2 << 30));
        assert_eq!(parse_size("4096").unwrap(), PartSize::Bytes(4096));
        assert!(parse_size("64MB").is_err());
        assert!(parse_size("lots").is_err());
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    /// The default spec's text with its relative paths made absolute, to load from elsewhere.
    fn default_spec_with_absolute_paths() -> String {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .canonicalize()
            .unwrap();
        std::fs::read_to_string(root.join("image.toml"))
            .unwrap()
            .replace("\"kernel/", &format!("\"{}/kernel/", root.display()))
            .replace("\"esp/", &format!("\"{}/esp/", root.display()))
            .replace(
                "overlay = \"rootfs\"",
                &format!("overlay = \"{}/rootfs\"", root.display()),
            )
            .replace(
                "dir = \"workload\"",
                &format!("dir = \"{}/workload\"", root.display()),
            )
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cvm-spec-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn default_spec_loads() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let spec = Spec::load(&root.join("image.toml"), None).unwrap();
        assert!(spec.kernel.package.starts_with("linux-image-6.12"));
        assert!(spec.cmdline(&[]).unwrap().contains("console=ttyS0"));
        assert!(spec.targets.contains_key("gcp"));
    }

    /// `[image] security_version`: absent in the default spec (so its outputs do not change),
    /// an unsigned integer when given.
    #[test]
    fn security_version_is_optional_and_an_unsigned_integer() {
        let d = scratch("security-version");
        let text = default_spec_with_absolute_paths();
        let plain = write(&d, "plain.toml", &text);
        assert_eq!(
            Spec::load(&plain, None).unwrap().image.security_version,
            None
        );
        let with = |value: &str| {
            text.replace(
                "[image]\n",
                &format!("[image]\nsecurity_version = {value}\n"),
            )
        };
        let seven = write(&d, "seven.toml", &with("7"));
        assert_eq!(
            Spec::load(&seven, None).unwrap().image.security_version,
            Some(7)
        );
        let negative = write(&d, "negative.toml", &with("-1"));
        let err = format!("{:#}", Spec::load(&negative, None).unwrap_err());
        assert!(err.contains("security_version"), "{err}");
    }

    #[test]
    fn unknown_key_names_file_and_line() {
        let d = scratch("unknown");
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let text = std::fs::read_to_string(root.join("image.toml")).unwrap();
        let text = text.replace("[rootfs]\n", "[rootfs]\ncompresion = \"zstd\"\n");
        let line = text
            .lines()
            .position(|l| l.starts_with("compresion"))
            .unwrap()
            + 1;
        let p = write(&d, "image.toml", &text);
        let err = format!("{:#}", Spec::load(&p, None).unwrap_err());
        assert!(err.contains(&p.display().to_string()), "{err}");
        assert!(err.contains("compresion"), "{err}");
        assert!(err.contains(&format!("line {line}")), "{err}");
    }

    #[test]
    fn missing_overlay_is_named() {
        let d = scratch("missing");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .canonicalize()
            .unwrap();
        let text = std::fs::read_to_string(root.join("image.toml")).unwrap();
        let text = text
            .replace("\"kernel/", &format!("\"{}/kernel/", root.display()))
            .replace("\"esp/", &format!("\"{}/esp/", root.display()))
            .replace(
                "dir = \"workload\"",
                &format!("dir = \"{}/workload\"", root.display()),
            );
        let p = write(&d, "image.toml", &text);
        let err = format!("{:#}", Spec::load(&p, None).unwrap_err());
        assert!(err.contains("[rootfs] overlay"), "{err}");
        assert!(
            err.contains(&d.join("rootfs").display().to_string()),
            "{err}"
        );
    }
    /// `[secure_boot] keys` is optional, resolved against the spec's directory, and strict.
    #[test]
    fn secure_boot_section_resolves_keys_against_the_spec() {
        let d = scratch("secure-boot");
        let text = default_spec_with_absolute_paths();
        let without = write(&d, "plain.toml", &text);
        assert!(Spec::load(&without, None).unwrap().secure_boot.is_none());
        let with = write(
            &d,
            "image.toml",
            &format!("{text}\n[secure_boot]\nkeys = \"my-keys\"\n"),
        );
        let spec = Spec::load(&with, None).unwrap();
        assert_eq!(spec.secure_boot.unwrap().keys, d.join("my-keys"));
        let typo = write(
            &d,
            "typo.toml",
            &format!("{text}\n[secure_boot]\nkey = \"k\"\n"),
        );
        let err = format!("{:#}", Spec::load(&typo, None).unwrap_err());
        assert!(err.contains("unknown field `key`"), "{err}");
    }

    /// `[golden] signing_key` is optional, resolved against the spec, must exist, and is strict.
    #[test]
    fn golden_section_names_an_existing_key() {
        let d = scratch("golden");
        let text = default_spec_with_absolute_paths();
        let plain = write(&d, "plain.toml", &text);
        assert!(Spec::load(&plain, None).unwrap().golden.is_none());
        let with = format!("{text}\n[golden]\nsigning_key = \"keys/golden.key\"\n");
        let spec_path = write(&d, "image.toml", &with);
        let err = format!("{:#}", Spec::load(&spec_path, None).unwrap_err());
        assert!(err.contains("[golden] signing_key"), "{err}");
        assert!(
            err.contains(&d.join("keys/golden.key").display().to_string()),
            "{err}"
        );
        write(&d, "keys/golden.key", "not checked here");
        let spec = Spec::load(&spec_path, None).unwrap();
        assert_eq!(spec.golden.unwrap().signing_key, d.join("keys/golden.key"));
        let typo = write(
            &d,
            "typo.toml",
            &format!("{text}\n[golden]\nsigning-key = \"k\"\n"),
        );
        let err = format!("{:#}", Spec::load(&typo, None).unwrap_err());
        assert!(err.contains("unknown field `signing-key`"), "{err}");
    }
}
