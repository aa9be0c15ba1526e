//! What a VM presents to the verifier: PCR values, the firmware's TCG event log and the init's
//! runtime (PCR 23) log — read from files (offline: the values are only *reported*, nothing binds
//! them to a TPM key or a fresh nonce), or from the agent's collaterals, whose TPM quote
//! ([`Evidence::quote`]) authenticates them (the `collaterals` module).

use crate::attestation::AttestCheck;
use crate::error::{Kind, Result, ResultExt, VerifyError};
use crate::wire::PcrsJson;
use cvm_measure::eventlog::{self, EventLog, HashAlg};
use cvm_measure::workload::{self, RuntimeEvent};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Number of PCRs of a PC Client TPM; an index at or above it in a PCR file is an input error.
const PCR_COUNT: u32 = eventlog::PCR_COUNT;

/// Reported PCR values: bank → PCR index → value.
pub type PcrValues = BTreeMap<HashAlg, BTreeMap<u32, Vec<u8>>>;

/// The TPM quote the PCR values came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// `TPMS_ATTEST` bytes as signed by the AK.
    pub attest: Vec<u8>,
    /// `TPMT_SIGNATURE` bytes.
    pub signature: Vec<u8>,
    /// `TPM2B_PUBLIC` of the attestation key.
    pub ak_public: Vec<u8>,
    /// The verifier's nonce, expected as the quote's qualifying data.
    pub nonce: Vec<u8>,
}

/// Everything the verifier checks against the golden file.
#[derive(Debug, Clone)]
pub struct Evidence {
    /// Where the evidence came from (files or agent URL), for the report.
    pub origin: Origin,
    /// PCR values: as reported (files), or as quoted (collaterals whose quote verified).
    pub pcrs: PcrValues,
    /// The firmware's TCG event log.
    pub eventlog: EventLog,
    /// The init's runtime log, when provided.
    pub runtime: Option<Vec<RuntimeEvent>>,
    /// The TPM quote (agent evidence only).
    pub quote: Option<Quote>,
    /// Outcome of the quote, AK↔EK, EK certificate, signing key and TEE checks (agent evidence only).
    pub attestation: Vec<AttestCheck>,
    /// The agent's boot signing key, when its certification and PCR policy checked out.
    pub signing_key: Option<crate::attest::signing_key::VerifiedSigningKey>,
}

/// Where the evidence came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Origin {
    Files {
        eventlog: PathBuf,
        pcrs: PathBuf,
        #[serde(skip_serializing_if = "Option::is_none")]
        runtime_log: Option<PathBuf>,
    },
    Agent {
        url: String,
    },
}

impl Origin {
    /// One line for the text report.
    pub fn describe(&self) -> String {
        match self {
            Origin::Files {
                eventlog,
                pcrs,
                runtime_log,
            } => {
                let mut s = format!("files {} and {}", eventlog.display(), pcrs.display());
                if let Some(r) = runtime_log {
                    s.push_str(&format!(", runtime log {}", r.display()));
                }
                s
            }
            Origin::Agent { url } => format!("agent {url}"),
        }
    }
}

impl Evidence {
    /// Read the evidence from files (`--eventlog`, `--pcrs`, optional `--runtime-log`).
    pub fn from_files(eventlog: &Path, pcrs: &Path, runtime_log: Option<&Path>) -> Result<Self> {
        let log_bytes = read(eventlog)?;
        let pcr_bytes = read(pcrs)?;
        let runtime = match runtime_log {
            Some(p) => Some(parse_runtime(&read(p)?, &p.display().to_string())?),
            None => None,
        };
        Ok(Evidence {
            origin: Origin::Files {
                eventlog: eventlog.to_path_buf(),
                pcrs: pcrs.to_path_buf(),
                runtime_log: runtime_log.map(Path::to_path_buf),
            },
            pcrs: parse_pcrs(&pcr_bytes, &pcrs.display().to_string())?,
            eventlog: parse_eventlog(&log_bytes, &eventlog.display().to_string())?,
            runtime,
            quote: None,
            attestation: vec![],
            signing_key: None,
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).input(format!("cannot read {}", path.display()))
}

pub fn parse_eventlog(bytes: &[u8], name: &str) -> Result<EventLog> {
    eventlog::parse(bytes).malformed(format!("{name} is not a TCG event log"))
}

pub fn parse_runtime(bytes: &[u8], name: &str) -> Result<Vec<RuntimeEvent>> {
    let text = std::str::from_utf8(bytes).malformed(format!(
        "{name}: the runtime event log is not UTF-8 JSON lines"
    ))?;
    workload::parse_log(text).malformed(format!("{name} is not a cvm-image runtime event log"))
}

/// Parse the agent's `/pcrs` JSON: `{"sha256": {"0": "<hex>", …}, …}` (any bank the TPM has).
pub fn parse_pcrs(bytes: &[u8], name: &str) -> Result<PcrValues> {
    let raw: PcrsJson = serde_json::from_slice(bytes).or_kind_with(Kind::Malformed, || {
        format!(
            "{name}: expected JSON {{\"sha256\": {{\"0\": \"<hex>\", …}}}} as GET /pcrs answers"
        )
    })?;
    pcr_values(&raw, name)
}

/// The values of `/pcrs` JSON (or the collaterals' `pcrs`), checked: known banks, PCRs 0–23,
/// digests of the bank's size.
pub fn pcr_values(raw: &PcrsJson, name: &str) -> Result<PcrValues> {
    let mut out = PcrValues::new();
    for (bank_name, values) in raw {
        let bank = HashAlg::from_name(bank_name).ok_or_else(|| {
            VerifyError::malformed(format!("{name}: unknown PCR bank {bank_name:?}"))
        })?;
        let len = bank.digest_len().ok_or_else(|| {
            VerifyError::malformed(format!("{name}: bank {bank_name} has no known digest size"))
        })?;
        let mut parsed = BTreeMap::new();
        for (&pcr, hex_value) in &values.0 {
            if pcr >= PCR_COUNT {
                return Err(VerifyError::malformed(format!(
                    "{name}: {bank_name} PCR \"{pcr}\" is not 0–23"
                )));
            }
            let value = hex::decode(hex_value)
                .ok()
                .filter(|v| v.len() == len)
                .ok_or_else(|| {
                    VerifyError::malformed(format!(
                        "{name}: {bank_name} PCR {pcr} is not {} hex digits",
                        len * 2
                    ))
                })?;
            parsed.insert(pcr, value);
        }
        out.insert(bank, parsed);
    }
    if out.is_empty() {
        return Err(VerifyError::malformed(format!("{name}: no PCR bank")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcrs_json_of_the_agent() {
        let zero = "00".repeat(32);
        let json = format!(
            r#"{{"sha256":{{"0":"{zero}","23":"{}"}}}}"#,
            "ab".repeat(32)
        );
        let p = parse_pcrs(json.as_bytes(), "pcrs.json").unwrap();
        assert_eq!(p[&HashAlg::SHA256][&0], vec![0; 32]);
        assert_eq!(p[&HashAlg::SHA256][&23], vec![0xab; 32]);
    }

    #[test]
    fn bad_pcrs_json_names_the_problem() {
        let err = |s: &str| format!("{:#}", parse_pcrs(s.as_bytes(), "p.json").unwrap_err());
        assert!(err(r#"{"sha256":{"24":"00"}}"#).contains("PCR \"24\" is not 0–23"));
        assert!(err(r#"{"sha256":{"1":"abcd"}}"#).contains("sha256 PCR 1 is not 64 hex digits"));
        assert!(err(r#"{"md5":{}}"#).contains("unknown PCR bank \"md5\""));
        assert!(err("{}").contains("no PCR bank"));
        assert!(err("[]").contains("GET /pcrs"));
    }
}
