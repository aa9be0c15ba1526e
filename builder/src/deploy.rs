//! `cvm-image deploy gcp|aws|azure`: the exact cloud-CLI command sequence that uploads the built
//! artifact, creates a confidential VM from it on a static public IP, waits for its agent and
//! verifies it against the image's golden file — printed as a runnable shell script, and run step
//! by step with `--execute`.
//!
//! Options and defaults follow the seed project's deploy scripts (automata-linux `cvm-cli`,
//! `scripts/make_{gcp,aws,azure}_vm.sh`; docs/deploy.md): VM name `cvm-test`
//! (`cvm_test` on Azure), GCP zone `asia-southeast1-b` / machine `c3-standard-4`, AWS region
//! `us-east-2` / `m6a.large`, Azure `East US 2` / `Standard_DC2es_v5`, resource group
//! `<vm>_rg` with storage account and gallery derived from the VM name, port 8000 (attestation
//! API) always open plus `--additional-ports`. Differences, on purpose: the TEE is asked for
//! (`--tee`) and checked against the machine type and region ([`sizes`], the providers' documented
//! lists) instead of guessed from it; names are derived, never random (the seeds appended random
//! suffixes); there is no "delete what exists first" step (a plan that deletes cloud resources by
//! name is too dangerous to print as a default); waiting is done with the CLIs' own `wait`
//! commands instead of polling loops; the plan ends in `cvm-image verify` ([`verdict`]).
//!
//! Secure Boot keys: when `out/secure-boot/{PK,KEK,db}.der` exist the image carries them (GCP
//! `--platform-key-file`…, Azure `additionalSignatures` with `NoSignatureTemplate`, AWS
//! `--uefi-data out/secure-boot/aws-uefi-data.bin`); otherwise the plan says so and the platform's
//! default (Microsoft) keys apply ([`keys`]).
//!
//! Values only known at run time (AWS task/snapshot/image/instance ids, the static IP, the Azure
//! subscription id) are captured from one command's stdout into a variable that later arguments
//! use as `${NAME}` — the same in the printed script and in `--execute` ([`run`]).

mod aws;
mod azure;
pub mod command;
mod gcp;
pub mod keys;
pub mod options;
pub mod run;
pub mod sizes;
#[cfg(test)]
mod testutil;
mod verdict;

use std::path::PathBuf;

use anyhow::{Context, Result};

pub use command::{render, shell_quote, PlannedCommand};
pub use keys::{SecureBootKeys, SECURE_BOOT_DIR};
pub use options::{Cloud, DeployOptions, Tee, AGENT_PORT};
pub use run::{check_programs, execute};

/// The command sequence for `cloud`. Reads only `out/` (artifact and golden file presence, key
/// files).
pub fn plan(cloud: Cloud, opts: &DeployOptions) -> Result<Vec<PlannedCommand>> {
    let keys = SecureBootKeys::discover(&opts.out_dir)?;
    match cloud {
        Cloud::Gcp => gcp::plan(opts, &keys),
        Cloud::Aws => aws::plan(opts, &keys),
        Cloud::Azure => azure::plan(opts, &keys),
    }
    .with_context(|| format!("planning the {cloud} deployment"))
}

/// `cvm-image deploy` arguments (hook with `#[command(subcommand)]` → `Deploy(DeployArgs)`).
#[derive(Debug, Clone, clap::Args)]
#[command(after_long_help = sizes::help())]
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
    /// Machine type [default: c3-standard-4 / n2d-standard-2, m6a.large, Standard_DC2es_v5 / Standard_DC2as_v5];
    /// checked against the provider's confidential sizes for the TEE (listed at the end of --help).
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
    /// Build output directory (artifacts, golden-measurement.json and secure-boot/).
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// CA bundle (PEM) the VM's vTPM EK certificate must chain to, for the plan's final
    /// `cvm-image verify`; without it that step runs with --insecure-no-ek.
    #[arg(long)]
    pub ek_ca: Option<PathBuf>,
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
            ek_ca: self.ek_ca.clone(),
            // The final step runs this same executable, so the printed script works without
            // cvm-image on PATH.
            cvm_image: std::env::current_exe().ok(),
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
