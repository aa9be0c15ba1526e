//! Which TPM the agent talks to, and the PCR read the API serves.
//!
//! In the guest that is the kernel's device (`/dev/tpmrm0`, else `/dev/tpm0`); in host tests a swtpm
//! on TCP. A fresh connection per request keeps the agent stateless towards the TPM: the kernel's
//! resource manager (or swtpm, one client at a time) serialises access, and a failed request leaves
//! nothing half-open behind.

use std::collections::BTreeMap;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use cvm_tpm::{DeviceTransport, HashAlg, Tpm};
use serde::ser::{Serialize, SerializeMap, Serializer};

/// PCR indices a PC-client TPM has (0-23).
pub const PCR_INDICES: std::ops::Range<u32> = 0..24;

/// Where to find the TPM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TpmSource {
    /// `/dev/tpmrm0`, falling back to `/dev/tpm0`.
    Auto,
    /// A specific character device.
    Device(String),
    /// swtpm's command port, `host:port`.
    Tcp(String),
}

impl FromStr for TpmSource {
    type Err = anyhow::Error;

    /// `auto`, `tcp:HOST:PORT`, or an absolute device path.
    fn from_str(s: &str) -> Result<Self> {
        if s == "auto" {
            Ok(TpmSource::Auto)
        } else if let Some(addr) = s.strip_prefix("tcp:") {
            Ok(TpmSource::Tcp(addr.to_string()))
        } else if s.starts_with('/') {
            Ok(TpmSource::Device(s.to_string()))
        } else {
            bail!(
                "TPM \"{s}\": expected \"auto\", a device path like /dev/tpmrm0, or tcp:HOST:PORT"
            )
        }
    }
}

impl TpmSource {
    pub fn open(&self) -> Result<Tpm> {
        match self {
            TpmSource::Auto => Tpm::open_device().context("opening the TPM"),
            TpmSource::Device(path) => Ok(Tpm::with_transport(Box::new(
                DeviceTransport::open(path)
                    .with_context(|| format!("opening TPM device {path}"))?,
            ))),
            TpmSource::Tcp(addr) => Tpm::connect_tcp(addr.as_str())
                .with_context(|| format!("connecting to swtpm at {addr}")),
        }
    }
}

/// One bank's PCR values, serialised as a JSON object in numeric PCR order (`"0"`, `"1"`, … `"23"`)
/// rather than the string order a map would give (`"0"`, `"1"`, `"10"`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrValues(pub Vec<(u32, Vec<u8>)>);

impl Serialize for PcrValues {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (index, digest) in &self.0 {
            map.serialize_entry(&index.to_string(), &hex::encode(digest))?;
        }
        map.end()
    }
}

/// PCRs 0-23 of every active bank, by bank name ("sha1", "sha256", "sha384", "sha512"; a JSON
/// object in that order).
pub type BankValues = BTreeMap<&'static str, PcrValues>;

/// Reads PCRs 0-23 of every active bank (blocking): the init and the firmware extend every bank,
/// and a verifier may check any of them. Banks with an algorithm the TPM client does not know
/// (SM3) are not served.
pub fn read_all_pcrs(source: &TpmSource) -> Result<BankValues> {
    let mut tpm = source.open()?;
    let banks = tpm
        .active_banks()
        .context("listing the TPM's active PCR banks")?;
    if banks.is_empty() {
        bail!("the TPM has no active SHA-1/SHA-2 PCR bank");
    }
    banks
        .into_iter()
        .map(|bank| Ok((bank.name(), read_bank(&mut tpm, bank)?)))
        .collect()
}

fn read_bank(tpm: &mut Tpm, bank: HashAlg) -> Result<PcrValues> {
    let indices: Vec<u32> = PCR_INDICES.collect();
    let name = bank.name();
    let values = tpm
        .pcr_read(bank, &indices)
        .with_context(|| format!("reading {name} PCRs 0-23"))?;
    if values.len() != indices.len() {
        bail!(
            "the TPM returned {} of 24 {name} PCRs (is the {name} bank allocated?)",
            values.len()
        );
    }
    Ok(PcrValues(values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        assert_eq!("auto".parse::<TpmSource>().unwrap(), TpmSource::Auto);
        assert_eq!(
            "/dev/tpm0".parse::<TpmSource>().unwrap(),
            TpmSource::Device("/dev/tpm0".into())
        );
        assert_eq!(
            "tcp:127.0.0.1:2321".parse::<TpmSource>().unwrap(),
            TpmSource::Tcp("127.0.0.1:2321".into())
        );
        assert!("tpm0".parse::<TpmSource>().is_err());
    }

    #[test]
    fn pcr_values_serialise_in_numeric_order() {
        let v = PcrValues((0..12).map(|i| (i, vec![i as u8])).collect());
        let json = serde_json::to_string(&v).unwrap();
        assert!(json.starts_with(r#"{"0":"00","1":"01","2":"02""#), "{json}");
        assert!(json.ends_with(r#""10":"0a","11":"0b"}"#), "{json}");
    }

    #[test]
    fn missing_device_error_names_it() {
        let e = TpmSource::Device("/nonexistent/tpm".into())
            .open()
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("/nonexistent/tpm"), "{e:#}");
    }
}
