//! Which Secure Boot keys the deployed image carries: the owner's certificates the build left in
//! `out/secure-boot/`, or none (the platform's default keys apply).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Where the Secure Boot part of the build leaves the owner's certificates, relative to `out/`.
pub const SECURE_BOOT_DIR: &str = "secure-boot";

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

/// A key file's bytes, with the path in the error.
pub fn read_key_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}
