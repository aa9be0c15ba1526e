//! What a VM presents to the verifier: reported PCR values, the firmware's TCG event log and the
//! init's runtime (PCR 23) log — read from files, or fetched from the guest agent.
//!
//! Today the PCR values are the agent's `/pcrs` answer, i.e. *reported*, not *quoted*: nothing binds
//! them to a TPM key or to a fresh nonce. [`Evidence::quote`] is the slot where the TPM quote
//! (TPMS_ATTEST, signature, AK public, nonce) goes once the agent serves it; the checks of
//! [`super::check`] then take the PCR values from the verified quote instead.

use anyhow::{bail, Context, Result};
use cvm_measure::eventlog::{self, EventLog, HashAlg};
use cvm_measure::workload::{self, RuntimeEvent};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Number of PCRs of a PC Client TPM; an index at or above it in a PCR file is an input error.
const PCR_COUNT: u32 = eventlog::PCR_COUNT;
/// Largest agent answer read (the firmware log of a cloud VM is ~50 KiB; the limit only stops a
/// misbehaving server from exhausting memory).
const MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;
/// Agent paths (guest-agent/src/api.rs).
const PATH_PCRS: &str = "/pcrs";
const PATH_EVENTLOG: &str = "/eventlog";
const PATH_RUNTIME_LOG: &str = "/eventlog/runtime";

/// Reported PCR values: bank → PCR index → value.
pub type PcrValues = BTreeMap<HashAlg, BTreeMap<u32, Vec<u8>>>;

/// A TPM quote over the PCRs (issue 5; not produced or checked yet).
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
    /// PCR values as the VM reports them.
    pub pcrs: PcrValues,
    /// The firmware's TCG event log.
    pub eventlog: EventLog,
    /// The init's runtime log, when provided.
    pub runtime: Option<Vec<RuntimeEvent>>,
    /// The TPM quote, once the agent serves one (issue 5).
    pub quote: Option<Quote>,
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
        })
    }

    /// Fetch `/pcrs`, `/eventlog` and `/eventlog/runtime` from the agent at `url`. A 404 on the
    /// runtime log means the VM has none (no workload measured); the others are required.
    pub fn from_agent(url: &str, timeout: Duration) -> Result<Self> {
        let base = url.trim_end_matches('/');
        let get = |path: &str| fetch(&format!("{base}{path}"), timeout);
        let pcrs_url = format!("{base}{PATH_PCRS}");
        let log_url = format!("{base}{PATH_EVENTLOG}");
        let pcrs = get(PATH_PCRS)?
            .with_context(|| format!("GET {pcrs_url}: 404 (is {base} a cvm-image agent?)"))?;
        let log = get(PATH_EVENTLOG)?
            .with_context(|| format!("GET {log_url}: 404 (the VM has no firmware event log)"))?;
        let runtime = match get(PATH_RUNTIME_LOG)? {
            Some(bytes) => Some(parse_runtime(&bytes, &format!("{base}{PATH_RUNTIME_LOG}"))?),
            None => None,
        };
        Ok(Evidence {
            origin: Origin::Agent {
                url: base.to_string(),
            },
            pcrs: parse_pcrs(&pcrs, &pcrs_url)?,
            eventlog: parse_eventlog(&log, &log_url)?,
            runtime,
            quote: None,
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// GET `url`: `Some(body)` on 2xx, `None` on 404, an error otherwise. Never through a proxy (the
/// agent is usually a forwarded loopback port, which an `http_proxy` must not capture).
fn fetch(url: &str, timeout: Duration) -> Result<Option<Vec<u8>>> {
    let config = ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let mut resp = agent.get(url).call().with_context(|| {
        format!("GET {url} (is the VM running? `cvm-image run` prints the agent URL)")
    })?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_BODY_BYTES)
        .read_to_vec()
        .with_context(|| format!("reading the body of GET {url}"))?;
    match status {
        200..=299 => Ok(Some(body)),
        404 => Ok(None),
        _ => bail!(
            "GET {url}: HTTP {status}: {}",
            String::from_utf8_lossy(&body).trim()
        ),
    }
}

fn parse_eventlog(bytes: &[u8], name: &str) -> Result<EventLog> {
    eventlog::parse(bytes).with_context(|| format!("{name} is not a TCG event log"))
}

fn parse_runtime(bytes: &[u8], name: &str) -> Result<Vec<RuntimeEvent>> {
    let text = std::str::from_utf8(bytes)
        .with_context(|| format!("{name}: the runtime event log is not UTF-8 JSON lines"))?;
    workload::parse_log(text)
        .with_context(|| format!("{name} is not a cvm-image runtime event log"))
}

/// Parse the agent's `/pcrs` JSON: `{"sha256": {"0": "<hex>", …}, …}` (any bank the TPM has).
pub fn parse_pcrs(bytes: &[u8], name: &str) -> Result<PcrValues> {
    let raw: BTreeMap<String, BTreeMap<String, String>> = serde_json::from_slice(bytes)
        .with_context(|| {
            format!("{name}: expected JSON {{\"sha256\": {{\"0\": \"<hex>\", …}}}} as GET /pcrs answers")
        })?;
    let mut out = PcrValues::new();
    for (bank_name, values) in raw {
        let bank = HashAlg::from_name(&bank_name)
            .with_context(|| format!("{name}: unknown PCR bank {bank_name:?}"))?;
        let len = bank
            .digest_len()
            .with_context(|| format!("{name}: bank {bank_name} has no known digest size"))?;
        let mut parsed = BTreeMap::new();
        for (index, hex_value) in values {
            let pcr: u32 = index
                .parse()
                .ok()
                .filter(|&p| p < PCR_COUNT)
                .with_context(|| format!("{name}: {bank_name} PCR {index:?} is not 0–23"))?;
            let value = hex::decode(&hex_value)
                .ok()
                .filter(|v| v.len() == len)
                .with_context(|| {
                    format!(
                        "{name}: {bank_name} PCR {pcr} is not {} hex digits",
                        len * 2
                    )
                })?;
            parsed.insert(pcr, value);
        }
        out.insert(bank, parsed);
    }
    if out.is_empty() {
        bail!("{name}: no PCR bank");
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

    #[test]
    fn agent_404_on_runtime_log_means_none_and_other_statuses_fail() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for (status, body) in [
                ("404 Not Found", "{}"),
                ("503 Service Unavailable", "{\"error\":\"tpm\"}"),
            ] {
                let (mut s, _) = listener.accept().unwrap();
                let mut req = [0u8; 1024];
                let _ = s.read(&mut req).unwrap();
                write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
        });
        let url = format!("http://127.0.0.1:{port}/x");
        assert_eq!(fetch(&url, Duration::from_secs(5)).unwrap(), None);
        let e = format!("{:#}", fetch(&url, Duration::from_secs(5)).unwrap_err());
        assert!(e.contains("HTTP 503") && e.contains("tpm"), "{e}");
        server.join().unwrap();
    }
}
