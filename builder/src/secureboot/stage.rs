//! Secure Boot in the build: sign the UKI (a cached stage after `boot::uki`) and write the
//! enrolled variable store and the per-cloud key material into the output directory.
//!
//! Outputs (all through [`OutputDir`]'s temporary names, committed with the rest of the build):
//! `OVMF_VARS.fd` (Debian's OVMF_VARS_4M.fd with PK/KEK/db enrolled, Secure Boot on) and the
//! directory `secure-boot/` holding `PK.der`, `KEK.der`, `db.der` (GCP image flags, Azure
//! `uefiSettings`) and `aws-uefi-data.bin` (`register-image --uefi-data`). It is written as
//! `.secure-boot.tmp/` and renamed as a whole, so a half-written set never sits under the final
//! name. Only certificates leave the key directory; the manifest records their sha256.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use super::keys::{Role, SecureBootKeys};
use super::{authenticode, aws, pcr7, varstore, Guid};
use crate::boot::{Uki, UkiMeta};
use crate::output::OutputDir;
use crate::pcr_prediction::{EventInfo, PcrPrediction};
use crate::stages::StageCache;
use crate::{ids, uki};
use cvm_measure::eventlog::HashAlg;
use cvm_measure::predict::pcr7::PCR;
use cvm_measure::predict::pcr_values;

/// Output name of the enrolled variable store.
pub const OVMF_VARS_OUTPUT: &str = "OVMF_VARS.fd";
/// Output directory of the certificates and the AWS blob (what `deploy` discovers).
pub const KEY_MATERIAL_DIR: &str = crate::deploy::SECURE_BOOT_DIR;
/// File name of the AWS `--uefi-data` blob inside [`KEY_MATERIAL_DIR`].
pub const AWS_UEFI_DATA: &str = "aws-uefi-data.bin";

/// What the manifest records about Secure Boot: certificates (never keys), the signature owner,
/// the enrolled store and the PCR 7 a boot with it produces.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecureBootInfo {
    /// PK, KEK, db in enrollment order.
    pub certificates: Vec<CertificateInfo>,
    /// SignatureOwner GUID of the enrolled signature lists.
    pub signature_owner: String,
    /// sha256 of `OVMF_VARS.fd`.
    pub ovmf_vars_sha256: String,
    /// PCR 7 of a boot of the signed UKI with `OVMF_VARS.fd` (QEMU profile: no option ROM
    /// verified by db before the UKI).
    pub pcr7: PcrPrediction,
}

/// One enrolled certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertificateInfo {
    /// `PK`, `KEK` or `db`.
    pub name: String,
    /// sha256 of the DER certificate.
    pub sha256: String,
}

/// What [`write_outputs`] wrote.
pub struct SecureBootOutputs {
    pub info: SecureBootInfo,
    /// Final names of the outputs to commit (`OVMF_VARS.fd`, `secure-boot`).
    pub commit: Vec<&'static str>,
    /// (manifest path, temporary path) of every file written, for the manifest's outputs list.
    pub files: Vec<(String, PathBuf)>,
}

/// The signature owner of the enrolled lists: derived from the PK certificate, so it is stable
/// for an owner and differs between owners (the GUID only identifies who added an entry).
pub fn signature_owner(keys: &SecureBootKeys) -> Result<Guid> {
    let uuid = ids::uuid("secure-boot-signature-owner", &[&keys.pk.cert_der()?]);
    Ok(Guid::from_fields(
        u32::from_be_bytes(uuid.as_bytes()[0..4].try_into()?),
        u16::from_be_bytes(uuid.as_bytes()[4..6].try_into()?),
        u16::from_be_bytes(uuid.as_bytes()[6..8].try_into()?),
        uuid.as_bytes()[8..16].try_into()?,
    ))
}

/// Sign the UKI stage's output with the db key: a cached stage keyed by the unsigned UKI and
/// the db certificate (which [`super::keys::load`] proved belongs to the key). The signature is
/// deterministic, so the signed UKI is as reproducible as the unsigned one. Sections, and so
/// the PCR 11 prediction, are unchanged; hash and size are those of the signed file.
pub fn sign_uki(stages: &StageCache, unsigned: &Uki, keys: &SecureBootKeys) -> Result<Uki> {
    let cert = keys.db.cert_der()?;
    let (dir, meta) = stages.get_or_build("uki-signed", &[&unsigned.sha256, &cert], |dir| {
        eprintln!("cvm-image: uki: signing with the db key");
        let image = std::fs::read(&unsigned.path)
            .with_context(|| format!("cannot read {}", unsigned.path.display()))?;
        let signed = authenticode::sign(&image, &keys.db).context("signing the UKI")?;
        let path = dir.join("uki.efi");
        std::fs::write(&path, &signed)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(UkiMeta {
            sha256: hex::encode(ids::sha256(&signed)),
            size: signed.len() as u64,
            sections: uki::list_sections(&signed)?,
            ..unsigned.meta.clone()
        })
    })?;
    let sha256 = hex::decode(&meta.sha256)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("bad cached signed-UKI hash in {}", dir.display()))?;
    Ok(Uki {
        path: dir.join("uki.efi"),
        sha256,
        meta,
    })
}

/// Write `OVMF_VARS.fd` (enrolled from `vars_template`) and `secure-boot/` under their
/// temporary names in `out`.
pub fn write_outputs(
    out: &OutputDir,
    vars_template: &Path,
    keys: &SecureBootKeys,
) -> Result<SecureBootOutputs> {
    let owner = signature_owner(keys)?;
    let template = std::fs::read(vars_template).with_context(|| {
        format!(
            "cannot read the OVMF variable store {}",
            vars_template.display()
        )
    })?;
    let what = vars_template.display().to_string();
    let vars = varstore::enroll(template, &what, keys, &varstore::default_enrollment(owner))?;
    let vars_tmp = out.temp(OVMF_VARS_OUTPUT);
    write(&vars_tmp, &vars)?;

    let dir_tmp = out.temp(KEY_MATERIAL_DIR);
    std::fs::create_dir_all(&dir_tmp)
        .with_context(|| format!("cannot create {}", dir_tmp.display()))?;
    let mut files = vec![(OVMF_VARS_OUTPUT.to_string(), vars_tmp)];
    let mut certificates = Vec::new();
    for role in Role::ALL {
        let der = keys.pair(role).cert_der()?;
        let name = format!("{}.der", role.name());
        write(&dir_tmp.join(&name), &der)?;
        files.push((format!("{KEY_MATERIAL_DIR}/{name}"), dir_tmp.join(&name)));
        certificates.push(CertificateInfo {
            name: role.name().into(),
            sha256: hex::encode(ids::sha256(&der)),
        });
    }
    let aws_vars = aws::policy_variables(keys, owner, None)?;
    let aws_path = dir_tmp.join(AWS_UEFI_DATA);
    write(&aws_path, aws::blob(&aws_vars)?.as_bytes())?;
    files.push((format!("{KEY_MATERIAL_DIR}/{AWS_UEFI_DATA}"), aws_path));

    let pcr7 = pcr7_prediction(&vars, &keys.db.cert_der()?)
        .with_context(|| format!("predicting PCR 7 of {OVMF_VARS_OUTPUT}"))?;
    Ok(SecureBootOutputs {
        info: SecureBootInfo {
            certificates,
            signature_owner: owner.to_string(),
            ovmf_vars_sha256: hex::encode(ids::sha256(&vars)),
            pcr7,
        },
        commit: vec![OVMF_VARS_OUTPUT, KEY_MATERIAL_DIR],
        files,
    })
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(path, data).with_context(|| format!("cannot write {}", path.display()))
}

/// PCR 7 in the manifest's form: the SHA-256 bank.
fn pcr7_prediction(vars: &[u8], db_cert: &[u8]) -> Result<PcrPrediction> {
    let events = pcr7::pcr7_expected(vars, db_cert, &[HashAlg::SHA256])?;
    let values = pcr_values(&events, &[PCR], HashAlg::SHA256)?;
    Ok(PcrPrediction {
        bank: HashAlg::SHA256.name(),
        value: hex::encode(&values[&PCR]),
        events: events
            .iter()
            .map(|e| EventInfo {
                description: e.description.clone(),
                digest: hex::encode(&e.digests[&HashAlg::SHA256]),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secureboot::keys::load;
    use crate::secureboot::keys::tests::{other_keys_dir, run, test_keys_dir};
    use crate::secureboot::varstore::tests::template_path;
    use crate::testutil::{fixture, TempDir};

    fn sbverify(cert: &Path, file: &Path) -> bool {
        run(
            "sbverify",
            &["--cert", cert.to_str().unwrap(), file.to_str().unwrap()],
        )
        .status
        .success()
    }

    /// The stage signs what sbverify accepts with db.crt and rejects with another db, keeps the
    /// sections, and a second call reuses the cached result byte for byte.
    #[test]
    fn sign_uki_stage_is_verifiable_and_cached() {
        let tmp = TempDir::new("sb-stage");
        let stages = StageCache::new(tmp.join("cache"));
        let stub = fixture("systemd-boot-efi/usr/lib/systemd/boot/efi/linuxx64.efi.stub");
        let image = std::fs::read(&stub).unwrap();
        let unsigned = Uki {
            path: stub.clone(),
            sha256: ids::sha256(&image),
            meta: UkiMeta {
                sha256: hex::encode(ids::sha256(&image)),
                size: image.len() as u64,
                stub_version: "test".into(),
                cmdline: String::new(),
                sections: uki::list_sections(&image).unwrap(),
            },
        };
        let keys = load(&test_keys_dir()).unwrap();
        let signed = sign_uki(&stages, &unsigned, &keys).unwrap();
        let bytes = std::fs::read(&signed.path).unwrap();
        assert_eq!(hex::encode(ids::sha256(&bytes)), signed.meta.sha256);
        assert_eq!(bytes.len() as u64, signed.meta.size);
        assert_eq!(signed.meta.sections, unsigned.meta.sections);
        assert!(sbverify(&test_keys_dir().join("db.crt"), &signed.path));
        assert!(!sbverify(&other_keys_dir().join("db.crt"), &signed.path));
        assert!(!sbverify(&test_keys_dir().join("db.crt"), &stub));

        let again = sign_uki(&stages, &unsigned, &keys).unwrap();
        assert_eq!(again.path, signed.path);
        assert_eq!(again.sha256, signed.sha256);
    }

    /// The outputs: a store virt-fw-vars reads with our certificates and Secure Boot on, the DER
    /// certificates openssl reads, the AWS blob uefivars reads, all under temporary names.
    #[test]
    fn write_outputs_writes_temporaries_the_tools_accept() {
        let tmp = TempDir::new("sb-out");
        let out = OutputDir::prepare(tmp.path()).unwrap();
        let keys = load(&test_keys_dir()).unwrap();
        let written = write_outputs(&out, &template_path(), &keys).unwrap();
        assert_eq!(written.commit, ["OVMF_VARS.fd", "secure-boot"]);
        let names: Vec<&str> = written.files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "OVMF_VARS.fd",
                "secure-boot/PK.der",
                "secure-boot/KEK.der",
                "secure-boot/db.der",
                "secure-boot/aws-uefi-data.bin"
            ]
        );
        assert!(!tmp.join("OVMF_VARS.fd").exists() && !tmp.join("secure-boot").exists());

        let vars = tmp.join(".OVMF_VARS.fd.tmp");
        let o = run(
            "virt-fw-vars",
            &["-i", vars.to_str().unwrap(), "--print", "--verbose"],
        );
        let text =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{text}");
        for cn in ["PK", "KEK", "db"] {
            assert!(
                text.contains(&format!("subject CN=cvm-image {cn}")),
                "{text}"
            );
        }
        assert!(text.contains("name=SecureBootEnable"), "{text}");

        for (i, role) in Role::ALL.iter().enumerate() {
            let der = tmp
                .join(".secure-boot.tmp")
                .join(format!("{}.der", role.name()));
            let o = run(
                "openssl",
                &[
                    "x509",
                    "-inform",
                    "DER",
                    "-in",
                    der.to_str().unwrap(),
                    "-noout",
                    "-fingerprint",
                    "-sha256",
                ],
            );
            assert!(o.status.success());
            let fp = String::from_utf8_lossy(&o.stdout)
                .trim()
                .rsplit('=')
                .next()
                .unwrap()
                .replace(':', "")
                .to_lowercase();
            assert_eq!(fp, written.info.certificates[i].sha256, "{}", role.name());
        }
        let blob = tmp.join(".secure-boot.tmp").join(AWS_UEFI_DATA);
        let o = run(
            "uefivars",
            &["-i", "aws", "-o", "json", "-I", blob.to_str().unwrap()],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

        // Deterministic, and a second owner's keys give another store and owner.
        let again = write_outputs(&out, &template_path(), &keys).unwrap();
        assert_eq!(again.info.ovmf_vars_sha256, written.info.ovmf_vars_sha256);
        assert_eq!(again.info.pcr7.value, written.info.pcr7.value);
        let other = load(&other_keys_dir()).unwrap();
        assert_ne!(
            signature_owner(&other).unwrap(),
            signature_owner(&keys).unwrap()
        );
        // Nothing committed: dropping the OutputDir removes the temporaries.
        drop(out);
        assert!(!vars.exists() && !tmp.join(".secure-boot.tmp").exists());
    }
}
