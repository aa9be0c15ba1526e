//! The TPM keys behind the evidence: the EK (found, or created from its template), the AK (a
//! primary recreated per request and checked against the one of this boot) and the boot signing key
//! (bound to the PCRs at its first use).

use cvm_tpm::{EkType, HashAlg, KeyObject, Tpm};

use crate::boot_keys::{Keys, SigningKeyInfo};
use crate::http::error::{unavailable, Failure};
use crate::tpm::TpmSource;

/// PCRs a quote covers: firmware and boot (0–15) and the workload (23).
pub const QUOTED_PCRS: [u32; 17] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 23];
/// How often the PCRs are read again when one changed while quoting.
pub(super) const PCR_RACE_RETRIES: usize = 3;
/// Persistent handles where provisioning tools (swtpm_setup, cloud vTPMs) keep the EK (TCG EK
/// profile §2.2.1.4): RSA 2048 and ECC P-256.
const PERSISTENT_EK_RSA: u32 = 0x8101_0001;
const PERSISTENT_EK_ECC: u32 = 0x8101_0002;

pub(crate) fn open_tpm(source: &TpmSource) -> Result<Tpm, Failure> {
    source
        .open()
        .map_err(|e| Failure::Unavailable(format!("{e:#}")))
}

/// The EK certificate (trimmed to its DER length) and type: RSA 2048 if its certificate exists,
/// else ECC P-256 if its certificate exists, else RSA 2048 without certificate.
fn find_ek(tpm: &mut Tpm) -> Result<(EkType, Option<Vec<u8>>), Failure> {
    for ek in [EkType::Rsa2048, EkType::EccP256] {
        let cert = tpm
            .ek_certificate(ek)
            .map_err(unavailable("reading the EK certificate"))?;
        if let Some(cert) = cert {
            return Ok((ek, Some(trim_der(cert))));
        }
    }
    Ok((EkType::Rsa2048, None))
}

/// NV indices are often larger than the certificate (zero padding): cut at the outer DER length.
pub fn trim_der(mut der: Vec<u8>) -> Vec<u8> {
    let len = match der.as_slice() {
        [0x30, 0x82, hi, lo, ..] => 4 + ((*hi as usize) << 8 | *lo as usize),
        [0x30, 0x81, n, ..] => 3 + *n as usize,
        _ => der.len(),
    };
    der.truncate(len.min(der.len()));
    der
}

/// Creates the AK, checking it is the key of this boot; the first call also learns the EK.
pub(super) fn load_ak(tpm: &mut Tpm, keys: &mut Option<Keys>) -> Result<u32, Failure> {
    let ak = tpm
        .create_ak()
        .map_err(unavailable("creating the attestation key"))?;
    match keys {
        Some(k) if k.ak_public != ak.public => {
            let _ = tpm.flush_context(ak.handle);
            Err(Failure::Unavailable(
                "the attestation key changed during this boot (was the endorsement seed reset?)"
                    .into(),
            ))
        }
        Some(_) => Ok(ak.handle),
        None => {
            let learned = learn_ek(tpm).map(|ek| Keys {
                ak_public: ak.public.clone(),
                ak_name: ak.name.clone(),
                ek_type: ek.ek_type,
                ek_public: ek.public,
                ek_cert: ek.cert,
            });
            match learned {
                Ok(k) => {
                    *keys = Some(k);
                    Ok(ak.handle)
                }
                Err(e) => {
                    let _ = tpm.flush_context(ak.handle);
                    Err(e)
                }
            }
        }
    }
}

/// The EK of this TPM: type, public area (TPMT_PUBLIC) and certificate.
struct EkInfo {
    ek_type: EkType,
    public: Vec<u8>,
    cert: Option<Vec<u8>>,
}

fn learn_ek(tpm: &mut Tpm) -> Result<EkInfo, Failure> {
    let (ek_type, cert) = find_ek(tpm)?;
    let ek = tpm
        .create_ek(ek_type)
        .map_err(unavailable("creating the endorsement key"))?;
    let _ = tpm.flush_context(ek.handle);
    Ok(EkInfo {
        ek_type,
        public: ek.public,
        cert,
    })
}

pub(super) fn ek_type_name(ek: EkType) -> &'static str {
    match ek {
        EkType::Rsa2048 => "rsa2048",
        EkType::EccP256 => "ecc-p256",
    }
}

/// The EK as a handle: the persistent one when it is the same key, else created (and flushed after).
pub(super) fn ek_handle(tpm: &mut Tpm, keys: &Keys) -> Result<(u32, bool), Failure> {
    let persistent = match keys.ek_type {
        EkType::Rsa2048 => PERSISTENT_EK_RSA,
        EkType::EccP256 => PERSISTENT_EK_ECC,
    };
    if let Ok(p) = tpm.read_public(persistent) {
        if p.public == keys.ek_public {
            return Ok((persistent, false));
        }
    }
    let ek = tpm
        .create_ek(keys.ek_type)
        .map_err(unavailable("creating the endorsement key"))?;
    Ok((ek.handle, true))
}

/// Creates the boot signing key (first call: bound to the PCRs read now, with the same
/// before/after read as the quote so that no extend slips between reading and creating) or
/// recreates it and checks it is the same key. The caller flushes the handle.
pub(crate) fn load_signing_key(
    tpm: &mut Tpm,
    known: &mut Option<SigningKeyInfo>,
) -> Result<KeyObject, Failure> {
    if let Some(info) = known {
        let key = tpm
            .create_signing_key(&info.auth_policy)
            .map_err(unavailable("recreating the boot signing key"))?;
        if key.public != info.public {
            let _ = tpm.flush_context(key.handle);
            return Err(Failure::Unavailable(
                "the boot signing key changed during this boot (was the TPM reset?)".into(),
            ));
        }
        return Ok(key);
    }
    for _ in 0..PCR_RACE_RETRIES {
        let before = tpm
            .pcr_read(HashAlg::Sha256, &QUOTED_PCRS)
            .map_err(unavailable("reading PCRs"))?;
        let policy = cvm_tpm::pcr_policy_digest(HashAlg::Sha256, &before)
            .map_err(unavailable("computing the PCR policy"))?;
        let key = tpm
            .create_signing_key(&policy)
            .map_err(unavailable("creating the boot signing key"))?;
        let after = tpm
            .pcr_read(HashAlg::Sha256, &QUOTED_PCRS)
            .map_err(unavailable("reading PCRs"));
        match after {
            Ok(after) if after == before => {
                *known = Some(SigningKeyInfo {
                    auth_policy: policy,
                    public: key.public.clone(),
                });
                return Ok(key);
            }
            Ok(_) => {
                let _ = tpm.flush_context(key.handle);
            }
            Err(e) => {
                let _ = tpm.flush_context(key.handle);
                return Err(e);
            }
        }
    }
    Err(Failure::Unavailable(format!(
        "PCRs kept changing during {PCR_RACE_RETRIES} attempts to create the signing key; retry"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_trim() {
        let mut v = vec![0x30, 0x82, 0x00, 0x02, 1, 2];
        v.extend_from_slice(&[0; 10]);
        assert_eq!(trim_der(v), vec![0x30, 0x82, 0x00, 0x02, 1, 2]);
    }
}
