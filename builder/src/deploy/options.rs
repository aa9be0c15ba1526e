//! What a deployment plan depends on: the cloud, the TEE and the user's options (names, region,
//! size, ports, the build output). A leaf module: the per-cloud planners and the shared steps
//! read it, it reads none of them.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The attestation API port (docs/attestation-api.md), always opened.
pub const AGENT_PORT: u16 = 8000;
/// The golden measurement the build writes next to the artifacts; the plan's last step checks the
/// VM against it.
pub const GOLDEN_FILE: &str = "golden-measurement.json";

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
    /// The build output directory holding the artifacts, the golden file and `secure-boot/`.
    pub out_dir: PathBuf,
    /// The CA bundle the VM's vTPM EK certificate must chain to, for the final `verify` step
    /// (without it that step runs with `--insecure-no-ek`, and says so).
    pub ek_ca: Option<PathBuf>,
    /// The `cvm-image` executable the final step runs [default: `cvm-image` from PATH].
    pub cvm_image: Option<PathBuf>,
}

impl DeployOptions {
    /// The ports to open, agent port first, duplicates removed, order kept.
    pub fn ports(&self) -> Vec<u16> {
        let mut ports = vec![AGENT_PORT];
        for &p in &self.additional_ports {
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        ports
    }

    pub fn required<'a>(
        &self,
        value: &'a Option<String>,
        flag: &str,
        why: &str,
    ) -> Result<&'a str> {
        match value.as_deref() {
            Some(v) if !v.is_empty() => Ok(v),
            _ => bail!("missing required option {flag}: {why}"),
        }
    }

    pub fn or_default<'a>(value: &'a Option<String>, default: &'a str) -> &'a str {
        value
            .as_deref()
            .filter(|v| !v.is_empty())
            .unwrap_or(default)
    }

    /// A build output the plan reads (artifact or golden file); it must have been built.
    pub fn built_file(&self, name: &str, target: &str) -> Result<PathBuf> {
        let path = self.out_dir.join(name);
        if !path.is_file() {
            bail!(
                "{} not found: build it first with `cvm-image build --target {target}`",
                path.display()
            );
        }
        Ok(path)
    }

    /// The `cvm-image` program of the final verification step.
    pub fn cvm_image(&self) -> &Path {
        self.cvm_image
            .as_deref()
            .unwrap_or_else(|| Path::new("cvm-image"))
    }
}
