//! `cvm-image golden …`: export a golden file in another project's format, sign it, check its
//! signature.

use super::golden_sign;
use crate::automata;
use crate::verify::load_golden;
use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use std::path::PathBuf;

/// `cvm-image golden …`.
#[derive(clap::Args, Debug)]
pub struct GoldenArgs {
    #[command(subcommand)]
    pub command: GoldenCmd,
}

#[derive(Subcommand, Debug)]
pub enum GoldenCmd {
    /// Print one profile of a golden file in another project's format (JSON on stdout).
    Export(ExportArgs),
    /// Write a detached signature of a golden file (GOLDEN.sig) with an ECDSA P-256 or RSA key.
    Sign(golden_sign::SignArgs),
    /// Check a golden file's detached signature with a public key (exit 1 when refused).
    Verify(golden_sign::VerifySigArgs),
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Output format: automata = Automata's off-chain golden measurement (golden_measurement.pcrs[]).
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// The golden measurement file written by `cvm-image build`.
    #[arg(long, default_value = "out/golden-measurement.json")]
    pub golden: PathBuf,
    /// The profile to export (qemu, gcp, aws, azure).
    #[arg(long, default_value = "qemu")]
    pub profile: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Automata,
}

impl GoldenArgs {
    pub fn run(&self) -> Result<std::process::ExitCode> {
        match &self.command {
            GoldenCmd::Export(a) => {
                let golden = load_golden(&a.golden)?;
                let out = match a.format {
                    ExportFormat::Automata => automata::export(&golden, &a.profile)
                        .with_context(|| format!("exporting {}", a.golden.display()))?,
                };
                let json = serde_json::to_string_pretty(&out).context("serialising the export")?;
                println!("{json}");
                Ok(std::process::ExitCode::SUCCESS)
            }
            GoldenCmd::Sign(a) => a.run(),
            GoldenCmd::Verify(a) => a.run(),
        }
    }
}
