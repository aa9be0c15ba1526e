//! `cvm-image golden sign` / `golden verify`: the command line over [`cvm_verify::golden_sign`].

use anyhow::{Context, Result};
use clap::Args;
use cvm_verify::golden_sign::{
    check_detached, default_sig_path, load_public_key, load_signing_key, render, EXIT_REFUSED,
};
use std::path::PathBuf;
use std::process::ExitCode;

/// `cvm-image golden sign`.
#[derive(Args, Debug)]
pub struct SignArgs {
    /// Private key PEM: ECDSA P-256 or RSA ≥ 2048 bits (`cvm-image keys generate` writes golden.key).
    #[arg(long)]
    pub key: PathBuf,
    /// The golden measurement file to sign.
    #[arg(long, default_value = "out/golden-measurement.json")]
    pub golden: PathBuf,
    /// Where to write the detached signature [default: GOLDEN.sig].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `cvm-image golden verify`.
#[derive(Args, Debug)]
pub struct VerifySigArgs {
    /// Public key PEM (SPKI, as `openssl pkey -pubout` writes it; golden.pub).
    #[arg(long)]
    pub pubkey: PathBuf,
    /// The golden measurement file to check.
    #[arg(long, default_value = "out/golden-measurement.json")]
    pub golden: PathBuf,
    /// The detached signature [default: GOLDEN.sig].
    #[arg(long)]
    pub signature: Option<PathBuf>,
}

impl SignArgs {
    pub fn run(&self) -> Result<ExitCode> {
        let key = load_signing_key(&self.key)?;
        let data = std::fs::read(&self.golden)
            .with_context(|| format!("cannot read the golden file {}", self.golden.display()))?;
        let sig = key
            .sign(&data)
            .with_context(|| format!("signing {}", self.golden.display()))?;
        let out = self
            .out
            .clone()
            .unwrap_or_else(|| default_sig_path(&self.golden));
        std::fs::write(&out, render(&sig)?)
            .with_context(|| format!("cannot write the signature {}", out.display()))?;
        println!(
            "{}: signed ({}, key {}) -> {}",
            self.golden.display(),
            sig.algorithm,
            sig.key_id,
            out.display()
        );
        Ok(ExitCode::SUCCESS)
    }
}

impl VerifySigArgs {
    pub fn run(&self) -> Result<ExitCode> {
        let key = load_public_key(&self.pubkey)?;
        let data = std::fs::read(&self.golden)
            .with_context(|| format!("cannot read the golden file {}", self.golden.display()))?;
        let sig_path = self
            .signature
            .clone()
            .unwrap_or_else(|| default_sig_path(&self.golden));
        match check_detached(&self.golden, &data, &sig_path, &key)? {
            Ok(()) => {
                println!(
                    "{}: good signature ({}, key {})",
                    self.golden.display(),
                    key.algorithm(),
                    key.key_id()?
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(r) => {
                eprintln!("cvm-image: REFUSED: {r}");
                Ok(ExitCode::from(EXIT_REFUSED))
            }
        }
    }
}
