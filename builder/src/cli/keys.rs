//! `cvm-image keys …`: the owner's Secure Boot and golden-measurement keys.

use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::secureboot::keys;

/// `cvm-image keys`.
#[derive(clap::Args, Debug, Clone)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum KeysCommand {
    /// Generate PK, KEK and db (RSA-2048 with self-signed X.509 certificates) and the
    /// golden-measurement signing key (ECDSA P-256).
    ///
    /// Writes PK.key PK.crt PK.der KEK.key KEK.crt KEK.der db.key db.crt db.der golden.key
    /// golden.pub (private keys PKCS#8 PEM, mode 0600; certificates PEM with DER copies). Refuses
    /// to overwrite existing keys. `cvm-image build --keys DIR` then signs the UKI with db and
    /// enrolls the certificates; the private keys never enter the image or the manifest.
    Generate {
        /// Directory for the keys (created if missing).
        #[arg(long, default_value = "keys")]
        dir: PathBuf,
    },
}

/// Runs `cvm-image keys …`.
pub fn run(args: &KeysArgs) -> Result<ExitCode> {
    match &args.command {
        KeysCommand::Generate { dir } => {
            keys::generate(dir)?;
            println!("generated Secure Boot keys in {}:", dir.display());
            for name in keys::file_names() {
                println!("  {}", dir.join(name).display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
