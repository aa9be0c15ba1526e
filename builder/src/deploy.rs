//! `cvm-image deploy gcp|aws|azure`: the exact cloud-CLI command sequence that uploads the built
//! artifact and creates a confidential VM from it — printed as a runnable shell script, and run
//! step by step with `--execute`.
//!
//! Options and defaults follow the seed project's deploy scripts (automata-linux `cvm-cli`,
//! `scripts/make_{gcp,aws,azure}_vm.sh`; reference/prior-art.md §1.4): VM name `cvm-test`
//! (`cvm_test` on Azure), GCP zone `asia-southeast1-b` / machine `c3-standard-4`, AWS region
//! `us-east-2` / `m6a.large`, Azure `East US 2` / `Standard_DC2es_v5`, resource group
//! `<vm>_rg` with storage account and gallery derived from the VM name, port 8000 (attestation
//! API) always open plus `--additional-ports`. Differences, on purpose: the TEE is asked for
//! (`--tee`) and checked against the machine type instead of guessed from it; names are derived,
//! never random (the seeds appended random suffixes); there is no "delete what exists first" step
//! (a plan that deletes cloud resources by name is too dangerous to print as a default); waiting is
//! done with the CLIs' own `wait` commands instead of polling loops.
//!
//! Secure Boot keys: when `out/secure-boot/{PK,KEK,db}.der` exist the image carries them (GCP
//! `--platform-key-file`…, Azure `additionalSignatures` with `NoSignatureTemplate`, AWS
//! `--uefi-data out/secure-boot/aws-uefi-data.bin`); otherwise the plan says so and the platform's
//! default (Microsoft) keys apply.
//!
//! Values only known at run time (AWS task/snapshot/image/security-group ids, the Azure
//! subscription id) are captured from one command's stdout into a variable that later arguments
//! use as `${NAME}` — the same in the printed script and in `--execute`.

mod aws;
mod azure;
mod gcp;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The attestation API port (DESIGN.md §3), always opened.
pub const AGENT_PORT: u16 = 8000;
/// Where the Secure Boot part of the build leaves the owner's certificates, relative to `out/`.
pub const SECURE_BOOT_DIR: &str = "secure-boot";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Cloud {
    Gcp,
    Aws,
    Azure,
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cloud::Gcp => "gcp",
            Cloud::Aws => "aws",
            Cloud::Azure => "azure",
        })
    }
}

/// The confidential-computing technology the VM must run under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Tee {
    /// AMD SEV-SNP
    Snp,
    /// Intel TDX
    Tdx,
}

impl fmt::Display for Tee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tee::Snp => "SEV-SNP",
            Tee::Tdx => "TDX",
        })
    }
}

/// Everything a plan depends on. `None` means "the seed's default for this cloud".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeployOptions {
    pub tee: Option<Tee>,
    pub vm_name: Option<String>,
    /// GCP: zone; AWS: region; Azure: location.
    pub region: Option<String>,
    pub machine_type: Option<String>,
    /// GCP project (required).
    pub project: Option<String>,
    /// GCS / S3 bucket for the upload (required on GCP and AWS).
    pub bucket: Option<String>,
    /// GCP and AWS: add a command creating the bucket first.
    pub create_bucket: bool,
    pub resource_group: Option<String>,
    pub storage_account: Option<String>,
    pub gallery: Option<String>,
    /// Opened in addition to [`AGENT_PORT`] (TCP, from anywhere).
    pub additional_ports: Vec<u16>,
    /// Size of an empty data disk to attach, GB.
    pub data_disk_gb: Option<u32>,
    /// The build output directory holding the artifacts and `secure-boot/`.
    pub out_dir: PathBuf,
}

impl DeployOptions {
    /// The ports to open, agent port first, duplicates removed, order kept.
    fn ports(&self) -> Vec<u16> {
        let mut ports = vec![AGENT_PORT];
        for &p in &self.additional_ports {
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        ports
    }

    fn required<'a>(&self, value: &'a Option<String>, flag: &str, why: &str) -> Result<&'a str> {
        match value.as_deref() {
            Some(v) if !v.is_empty() => Ok(v),
            _ => bail!("missing required option {flag}: {why}"),
        }
    }

    fn or_default<'a>(value: &'a Option<String>, default: &'a str) -> &'a str {
        value
            .as_deref()
            .filter(|v| !v.is_empty())
            .unwrap_or(default)
    }

    /// The artifact the plan uploads; it must have been built.
    fn artifact(&self, name: &str, target: &str) -> Result<PathBuf> {
        let path = self.out_dir.join(name);
        if !path.is_file() {
            bail!(
                "{} not found: build it first with `cvm-image build --target {target}`",
                path.display()
            );
        }
        Ok(path)
    }
}

/// One step of a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedCommand {
    pub program: String,
    pub args: Vec<String>,
    pub description: String,
    /// When set, the command's trimmed stdout becomes `${capture}` for the following commands.
    pub capture: Option<String>,
}

impl PlannedCommand {
    fn new(program: &str, description: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            description: description.into(),
            capture: None,
        }
    }

    fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, a: I) -> Self {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }

    /// `--flag=value` as one argument (gcloud style).
    fn eq(self, flag: &str, value: impl fmt::Display) -> Self {
        self.arg(format!("{flag}={value}"))
    }

    /// `--flag value` as two arguments (aws / az style).
    fn opt(self, flag: &str, value: impl Into<String>) -> Self {
        self.arg(flag).arg(value)
    }

    fn capture(mut self, var: &str) -> Self {
        self.capture = Some(var.into());
        self
    }

    /// The command as one shell line (`VAR=$(…)` when captured).
    pub fn shell_line(&self) -> String {
        let words: Vec<String> = std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .map(shell_quote)
            .collect();
        match &self.capture {
            Some(var) => format!("{var}=$({})", words.join(" ")),
            None => words.join(" "),
        }
    }
}

/// Quotes a word for POSIX sh: bare when safe, single quotes when it has no `${`, double quotes
/// (escaping everything but `${VAR}` references) when it must expand a captured variable.
pub fn shell_quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:=,@%+".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        return word.to_string();
    }
    if !word.contains("${") {
        return format!("'{}'", word.replace('\'', r"'\''"));
    }
    let mut out = String::from("\"");
    let mut rest = word;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("${") {
            if let Some(end) = rest.find('}') {
                out.push_str(&rest[..=end]);
                rest = &rest[end + 1..];
                continue;
            }
        }
        if matches!(c, '"' | '\\' | '`' | '$') {
            out.push('\\');
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out.push('"');
    out
}

/// The whole plan as a commented shell script (what `deploy` prints).
pub fn render(cloud: Cloud, commands: &[PlannedCommand]) -> String {
    let mut s = format!(
        "#!/bin/sh\n# cvm-image deploy {cloud}: {} steps\nset -eu\n",
        commands.len()
    );
    for (i, c) in commands.iter().enumerate() {
        s.push_str(&format!(
            "\n# {}. {}\n{}\n",
            i + 1,
            c.description,
            c.shell_line()
        ));
    }
    s
}

/// Which Secure Boot keys the image will carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecureBootKeys {
    /// The owner's PK, KEK and db certificates (DER), and for AWS the prepared UEFI variable store.
    Owner {
        pk: PathBuf,
        kek: PathBuf,
        db: PathBuf,
        aws_uefi_data: Option<PathBuf>,
    },
    /// No key material in `out/secure-boot/`: the platform's default keys apply.
    PlatformDefault,
}

impl SecureBootKeys {
    /// Looks for `out/secure-boot/{PK,KEK,db}.der` (+ `aws-uefi-data.bin`). All three certificates
    /// or none: a partial set is an error, never silently the platform default.
    pub fn discover(out_dir: &Path) -> Result<Self> {
        let dir = out_dir.join(SECURE_BOOT_DIR);
        let [pk, kek, db] = ["PK.der", "KEK.der", "db.der"].map(|n| dir.join(n));
        let present: Vec<bool> = [&pk, &kek, &db].iter().map(|p| p.is_file()).collect();
        if present.iter().all(|&p| !p) {
            return Ok(Self::PlatformDefault);
        }
        if present.iter().any(|&p| !p) {
            bail!(
                "{} holds only part of the Secure Boot keys (need PK.der, KEK.der and db.der): \
                 regenerate them with `cvm-image keys` or remove the directory to use the platform keys",
                dir.display()
            );
        }
        let aws = dir.join("aws-uefi-data.bin");
        Ok(Self::Owner {
            pk,
            kek,
            db,
            aws_uefi_data: aws.is_file().then_some(aws),
        })
    }
}

/// The command sequence for `cloud`. Reads only `out/` (artifact presence, key files).
pub fn plan(cloud: Cloud, opts: &DeployOptions) -> Result<Vec<PlannedCommand>> {
    let keys = SecureBootKeys::discover(&opts.out_dir)?;
    match cloud {
        Cloud::Gcp => gcp::plan(opts, &keys),
        Cloud::Aws => aws::plan(opts, &keys),
        Cloud::Azure => azure::plan(opts, &keys),
    }
    .with_context(|| format!("planning the {cloud} deployment"))
}

/// How to install each cloud CLI, for the "not found" error.
fn install_hint(program: &str) -> &'static str {
    match program {
        "gcloud" => "install the Google Cloud CLI: https://cloud.google.com/sdk/docs/install, then `gcloud auth login`",
        "aws" => "install AWS CLI v2: https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html, then `aws configure`",
        "az" => "install the Azure CLI: https://learn.microsoft.com/cli/azure/install-azure-cli, then `az login`",
        _ => "install it and make sure it is on PATH",
    }
}

/// Finds `program` on `PATH`.
fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Checks that every CLI the plan needs is installed, before anything runs.
pub fn check_programs(commands: &[PlannedCommand]) -> Result<()> {
    let mut programs: Vec<&str> = commands.iter().map(|c| c.program.as_str()).collect();
    programs.sort_unstable();
    programs.dedup();
    for p in programs {
        if find_on_path(p).is_none() {
            bail!("`{p}` is not installed or not on PATH: {}", install_hint(p));
        }
    }
    Ok(())
}

/// Replaces `${NAME}` with captured values; an unknown name is a plan error.
fn substitute(arg: &str, vars: &BTreeMap<String, String>) -> Result<String> {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(start) = rest.find("${") {
        let end = rest[start..]
            .find('}')
            .map(|e| start + e)
            .context("unterminated ${ in a planned argument")?;
        let name = &rest[start + 2..end];
        let value = vars
            .get(name)
            .with_context(|| format!("planned argument uses ${{{name}}} before it is captured"))?;
        out.push_str(&rest[..start]);
        out.push_str(value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Runs the plan in order, stopping at the first failure. Prints each step before it runs.
pub fn execute(commands: &[PlannedCommand]) -> Result<()> {
    check_programs(commands)?;
    let mut vars = BTreeMap::new();
    for (i, c) in commands.iter().enumerate() {
        eprintln!(
            "==> [{}/{}] {}\n    {}",
            i + 1,
            commands.len(),
            c.description,
            c.shell_line()
        );
        let args = c
            .args
            .iter()
            .map(|a| substitute(a, &vars))
            .collect::<Result<Vec<_>>>()?;
        let mut cmd = Command::new(&c.program);
        cmd.args(&args).stdin(Stdio::null());
        let step = || format!("step {} ({}) failed", i + 1, c.description);
        match &c.capture {
            Some(var) => {
                let out = cmd.stderr(Stdio::inherit()).output().with_context(step)?;
                if !out.status.success() {
                    bail!("{}: {} exited with {}", step(), c.program, out.status);
                }
                let value = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if value.is_empty() || value == "None" || value == "null" {
                    bail!(
                        "{}: expected a value for {var} on stdout, got {value:?}",
                        step()
                    );
                }
                eprintln!("    {var}={value}");
                vars.insert(var.clone(), value);
            }
            None => {
                let status = cmd.status().with_context(step)?;
                if !status.success() {
                    bail!("{}: {} exited with {status}", step(), c.program);
                }
            }
        }
    }
    Ok(())
}

/// Standard base64 (RFC 4648 §4, with padding): the Azure API and `--uefi-data` take it.
pub(crate) fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// `cvm-image deploy` arguments (hook with `#[command(subcommand)]` → `Deploy(DeployArgs)`).
#[derive(Debug, Clone, clap::Args)]
pub struct DeployArgs {
    /// Cloud to deploy to.
    #[arg(value_enum)]
    pub cloud: Cloud,
    /// Confidential-computing technology (default: tdx on GCP and Azure, snp on AWS — the seeds' default machine types).
    #[arg(long, value_enum)]
    pub tee: Option<Tee>,
    /// VM name; also names the image, firewall rule and (Azure) resource group [default: cvm-test, Azure cvm_test].
    #[arg(long)]
    pub vm_name: Option<String>,
    /// GCP zone / AWS region / Azure location [default: asia-southeast1-b, us-east-2, eastus2].
    #[arg(long, visible_alias = "zone")]
    pub region: Option<String>,
    /// Machine type [default: c3-standard-4 / n2d-standard-2, m6a.large, Standard_DC2es_v5 / Standard_DC2as_v5].
    #[arg(long, visible_alias = "vm-type")]
    pub machine_type: Option<String>,
    /// GCP project id (required for gcp).
    #[arg(long, visible_alias = "project-id")]
    pub project: Option<String>,
    /// GCS or S3 bucket that receives the upload (required for gcp and aws).
    #[arg(long)]
    pub bucket: Option<String>,
    /// Create the bucket first (gcp, aws).
    #[arg(long)]
    pub create_bucket: bool,
    /// Azure resource group [default: <vm-name>_rg].
    #[arg(long)]
    pub resource_group: Option<String>,
    /// Azure storage account [default: vm name, lowercase alphanumerics, 3–24 chars].
    #[arg(long)]
    pub storage_account: Option<String>,
    /// Azure compute gallery [default: vm name, lowercase alphanumerics, _ and .].
    #[arg(long)]
    pub gallery: Option<String>,
    /// Extra TCP ports to open, comma separated (8000 is always open).
    #[arg(long, value_delimiter = ',')]
    pub additional_ports: Vec<u16>,
    /// Attach an empty data disk of this many GB.
    #[arg(long)]
    pub data_disk_gb: Option<u32>,
    /// Build output directory (artifacts and secure-boot/).
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Run the commands instead of only printing them.
    #[arg(long)]
    pub execute: bool,
}

impl DeployArgs {
    pub fn options(&self) -> DeployOptions {
        DeployOptions {
            tee: self.tee,
            vm_name: self.vm_name.clone(),
            region: self.region.clone(),
            machine_type: self.machine_type.clone(),
            project: self.project.clone(),
            bucket: self.bucket.clone(),
            create_bucket: self.create_bucket,
            resource_group: self.resource_group.clone(),
            storage_account: self.storage_account.clone(),
            gallery: self.gallery.clone(),
            additional_ports: self.additional_ports.clone(),
            data_disk_gb: self.data_disk_gb,
            out_dir: self.out.clone(),
        }
    }

    /// Prints the plan; with `--execute`, runs it.
    pub fn run(&self) -> Result<()> {
        let commands = plan(self.cloud, &self.options())?;
        print!("{}", render(self.cloud, &commands));
        if self.execute {
            execute(&commands)?;
        } else {
            eprintln!("(plan only: add --execute to run it)");
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    /// An `out/` with the three artifacts (empty files) and optionally Secure Boot keys.
    pub fn out_dir(name: &str, keys: bool, aws_blob: Option<&[u8]>) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cvm-deploy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join(SECURE_BOOT_DIR)).unwrap();
        for a in ["gcp-disk.tar.gz", "aws-disk.vmdk", "azure-disk.vhd"] {
            std::fs::write(dir.join(a), b"").unwrap();
        }
        if keys {
            for (n, c) in [("PK.der", b"pk"), ("KEK.der", b"kk"), ("db.der", b"db")] {
                std::fs::write(dir.join(SECURE_BOOT_DIR).join(n), c).unwrap();
            }
        }
        if let Some(blob) = aws_blob {
            std::fs::write(dir.join(SECURE_BOOT_DIR).join("aws-uefi-data.bin"), blob).unwrap();
        }
        dir
    }

    pub fn lines(commands: &[PlannedCommand]) -> Vec<String> {
        commands.iter().map(PlannedCommand::shell_line).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        deploy: DeployArgs,
    }

    #[test]
    fn quoting_keeps_variables_expandable_and_everything_else_literal() {
        assert_eq!(shell_quote("c3-standard-4"), "c3-standard-4");
        assert_eq!(shell_quote("East US 2"), "'East US 2'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(
            shell_quote("--image-id=${IMAGE}"),
            "\"--image-id=${IMAGE}\""
        );
        assert_eq!(shell_quote(r#"{"a":"${X}$"}"#), r#""{\"a\":\"${X}\$\"}""#);
    }

    #[test]
    fn substitution_uses_captured_values_and_rejects_unknown_ones() {
        let vars = BTreeMap::from([("A".to_string(), "1".to_string())]);
        assert_eq!(substitute("x${A}y${A}", &vars).unwrap(), "x1y1");
        assert!(substitute("${B}", &vars)
            .unwrap_err()
            .to_string()
            .contains("${B}"));
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn a_partial_key_set_is_an_error() {
        let out = out_dir("partial", false, None);
        std::fs::write(out.join(SECURE_BOOT_DIR).join("PK.der"), b"pk").unwrap();
        let err = SecureBootKeys::discover(&out).unwrap_err();
        assert!(
            err.to_string()
                .contains("only part of the Secure Boot keys"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_cli_is_reported_with_an_install_hint() {
        let c = PlannedCommand::new("surely-not-a-cloud-cli-xyz", "x");
        let err = check_programs(&[c]).unwrap_err().to_string();
        assert!(err.contains("not installed"), "{err}");
    }

    #[test]
    fn execute_captures_and_substitutes() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("cvm-deploy-exec-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let file = dir.join("made-by-step-2");
        let plan = vec![
            PlannedCommand::new("echo", "produce")
                .arg("  value-1 ")
                .capture("V"),
            PlannedCommand::new("touch", "consume").arg(format!("{}-${{V}}", file.display())),
        ];
        execute(&plan)?;
        assert!(dir.join("made-by-step-2-value-1").is_file());
        let failing = vec![PlannedCommand::new("false", "fails")];
        assert!(execute(&failing)
            .unwrap_err()
            .to_string()
            .contains("step 1 (fails) failed"));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn clap_arguments_map_to_options() {
        let cli = Cli::parse_from([
            "x",
            "aws",
            "--tee",
            "snp",
            "--vm-name",
            "n",
            "--zone",
            "eu-west-1",
            "--vm-type",
            "c6a.large",
            "--bucket",
            "b",
            "--additional-ports",
            "80,443",
            "--data-disk-gb",
            "20",
            "--out",
            "o",
            "--execute",
        ]);
        let o = cli.deploy.options();
        assert_eq!(cli.deploy.cloud, Cloud::Aws);
        assert!(cli.deploy.execute);
        assert_eq!(o.tee, Some(Tee::Snp));
        assert_eq!(o.region.as_deref(), Some("eu-west-1"));
        assert_eq!(o.machine_type.as_deref(), Some("c6a.large"));
        assert_eq!(o.additional_ports, vec![80, 443]);
        assert_eq!(o.data_disk_gb, Some(20));
        assert_eq!(o.out_dir, PathBuf::from("o"));
    }

    #[test]
    fn a_missing_artifact_names_the_build_command() {
        let out = out_dir("noartifact", false, None);
        std::fs::remove_file(out.join("aws-disk.vmdk")).unwrap();
        let opts = DeployOptions {
            bucket: Some("b".into()),
            out_dir: out,
            ..Default::default()
        };
        let err = format!("{:#}", plan(Cloud::Aws, &opts).unwrap_err());
        assert!(err.contains("cvm-image build --target aws"), "{err}");
    }
}
