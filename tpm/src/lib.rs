//! A minimal TPM 2.0 client: read PCRs, extend a PCR, list the PCR banks, and the attestation
//! commands (keys, quote, EK certificate, credential activation; see `attest`), and the boot
//! signing key: a PCR-policy-bound key certified by the AK (`signing_key`, `policy`, `ecdsa`).
//!
//! It is also the one definition of the TPM 2.0 vocabulary both ends of attestation speak, which a
//! verifier uses without the client: the constants ([`constants`]), [`HashAlg`], and parsers of the
//! structures a TPM signs or publishes ([`Public`], [`QuoteInfo`], [`CertifyInfo`], [`Signature`],
//! [`PcrSelection`]), on the same reader ([`Reader`]) the client takes responses apart with.
//!
//! This is all the guest needs at boot (the init extends PCR 23) and at run time (the agent reads PCRs
//! for attestation), and all it can afford in PID 1: no TSS, no C library, no resource manager of its
//! own (the kernel's `/dev/tpmrm0` is one). Host tests speak to swtpm over TCP with the same code.
//!
//! ```no_run
//! # fn main() -> cvm_tpm::Result<()> {
//! let mut tpm = cvm_tpm::Tpm::open_device()?;
//! tpm.pcr_extend(23, &[0u8; 32])?;
//! let values = tpm.pcr_read(cvm_tpm::HashAlg::Sha256, &[23])?;
//! # Ok(()) }
//! ```

mod attest;
mod attestation;
mod codec;
pub mod constants;
mod ecdsa;
mod extend;
mod hash_alg;
mod marshal;
mod pcr_selection;
mod policy;
mod public;
mod rc;
mod signature;
mod signing_key;
pub mod templates;
mod transport;

use std::net::ToSocketAddrs;

pub use attest::{KeyObject, NvPublic, Quote};
pub use attestation::{AttestHeader, CertifyInfo, ClockInfo, QuoteInfo};
pub use codec::{tpm2b, Reader};
pub use constants::{TPM_RH_ENDORSEMENT, TPM_RH_NULL};
pub use hash_alg::HashAlg;
pub use pcr_selection::PcrSelection;
pub use policy::{pcr_policy_digest, pcr_selection_list, POLICY_DIGEST_LEN, TPM_CC_POLICY_PCR};
pub use public::{Public, PublicKey};
pub use rc::ResponseCode;
pub use signature::{EcdsaSignature, Signature};
pub use signing_key::{Certification, SIGN_DIGEST_LEN};
pub use templates::EkType;
pub use transport::{DeviceTransport, TcpTransport, Transport};

use constants::{TPM_ST_NO_SESSIONS, TPM_ST_SESSIONS};
use marshal::HEADER_LEN;

/// The resource-manager device (shared between processes), tried first.
pub const DEVICE_TPMRM: &str = "/dev/tpmrm0";
/// The raw device, used when the kernel has no resource manager node.
pub const DEVICE_TPM: &str = "/dev/tpm0";
/// How often a command answered with TPM_RC_RETRY/YIELDED/TESTING is sent again.
const MAX_RETRIES: usize = 8;
/// Pause between retries (the TPM said it is busy).
const RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

/// Errors of this crate. Every variant says which command or file it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed: {rc}")]
    Tpm {
        command: &'static str,
        rc: ResponseCode,
    },
    /// The TPM refused a PCR-policy authorization: the PCRs no longer hold the values the key's
    /// authPolicy was computed from (TPM_RC_POLICY_FAIL), or kept changing (TPM_RC_PCR_CHANGED).
    #[error(
        "{command} refused by the key's PCR policy ({rc}): the PCRs changed since the key was \
         created"
    )]
    PcrPolicyMismatch {
        command: &'static str,
        rc: ResponseCode,
    },
    #[error("malformed TPM response: {0}")]
    Malformed(String),
    /// A well-formed structure of a kind this crate does not implement (an algorithm, curve or
    /// object type it has no parser or digest for): not necessarily wrong, but unusable here.
    #[error("unsupported TPM structure: {0}")]
    Unsupported(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error(
        "no TPM found: {DEVICE_TPMRM}: {rm}; {DEVICE_TPM}: {raw} (is a TPM attached to this VM?)"
    )]
    NoDevice {
        rm: std::io::Error,
        raw: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// One allocated PCR bank as reported by TPM2_GetCapability(TPM_CAP_PCRS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrBank {
    /// Raw `TPM_ALG_ID` (a bank may use an algorithm this crate has no name for).
    pub alg_id: u16,
    /// The algorithm, when it is one of [`HashAlg`].
    pub alg: Option<HashAlg>,
    /// PCRs allocated in this bank; empty = bank present but not active.
    pub pcrs: Vec<u32>,
}

impl PcrBank {
    pub fn is_active(&self) -> bool {
        !self.pcrs.is_empty()
    }
}

/// A TPM 2.0 connection.
pub struct Tpm {
    transport: Box<dyn Transport>,
}

impl Tpm {
    /// Opens `/dev/tpmrm0`, falling back to `/dev/tpm0`.
    pub fn open_device() -> Result<Self> {
        match DeviceTransport::open(DEVICE_TPMRM) {
            Ok(t) => Ok(Self::with_transport(Box::new(t))),
            Err(Error::Io { source: rm, .. }) => match DeviceTransport::open(DEVICE_TPM) {
                Ok(t) => Ok(Self::with_transport(Box::new(t))),
                Err(Error::Io { source: raw, .. }) => Err(Error::NoDevice { rm, raw }),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Connects to swtpm's command port (`swtpm socket --tpm2 --server type=tcp,port=P
    /// --flags not-need-init,startup-clear`).
    pub fn connect_tcp(addr: impl ToSocketAddrs + std::fmt::Debug) -> Result<Self> {
        Ok(Self::with_transport(Box::new(TcpTransport::connect(addr)?)))
    }

    /// Uses any transport (e.g. a test double).
    pub fn with_transport(transport: Box<dyn Transport>) -> Self {
        Tpm { transport }
    }

    /// Reads `pcrs` from `bank`, returned as `(index, digest)` in ascending PCR order.
    ///
    /// A TPM returns at most 8 digests per TPM2_PCR_Read (TPML_DIGEST holds 8), and says in
    /// pcrSelectionOut which ones it returned; the rest are asked for again until none are left.
    pub fn pcr_read(&mut self, bank: HashAlg, pcrs: &[u32]) -> Result<Vec<(u32, Vec<u8>)>> {
        let mut wanted = PcrSelection::from_pcrs(bank.alg_id(), pcrs)?.pcrs();
        let mut out = Vec::with_capacity(wanted.len());
        while !wanted.is_empty() {
            let got = self.pcr_read_once(bank, &wanted)?;
            if got.is_empty() {
                return Err(Error::Malformed(format!(
                    "TPM2_PCR_Read returned no value for {} PCRs {wanted:?} \
                     (is the {} bank allocated?)",
                    bank.name(),
                    bank.name()
                )));
            }
            wanted.retain(|p| !got.iter().any(|(q, _)| q == p));
            out.extend(got);
        }
        out.sort_by_key(|(p, _)| *p);
        Ok(out)
    }

    /// One TPM2_PCR_Read: returns what the TPM chose to return of `pcrs`.
    fn pcr_read_once(&mut self, bank: HashAlg, pcrs: &[u32]) -> Result<Vec<(u32, Vec<u8>)>> {
        let sel = PcrSelection::from_pcrs(bank.alg_id(), pcrs)?;
        let resp = self.execute("TPM2_PCR_Read", &marshal::pcr_read_command(&sel))?;
        let parsed = marshal::parse_pcr_read(&resp)?;
        let returned: Vec<u32> = parsed
            .selection
            .iter()
            .filter(|s| s.alg == bank.alg_id())
            .flat_map(PcrSelection::pcrs)
            .collect();
        if returned.len() != parsed.digests.len() {
            return Err(Error::Malformed(format!(
                "TPM2_PCR_Read: pcrSelectionOut names {} PCRs but {} digests came back",
                returned.len(),
                parsed.digests.len()
            )));
        }
        if let Some(p) = returned.iter().find(|p| !pcrs.contains(p)) {
            return Err(Error::Malformed(format!(
                "TPM2_PCR_Read: returned PCR {p} which was not asked for"
            )));
        }
        let digests = returned.into_iter().zip(parsed.digests);
        digests
            .map(|(p, d)| {
                if d.len() == bank.digest_len() {
                    Ok((p, d))
                } else {
                    Err(Error::Malformed(format!(
                        "TPM2_PCR_Read: PCR {p} {} value has {} bytes",
                        bank.name(),
                        d.len()
                    )))
                }
            })
            .collect()
    }

    /// Extends `pcr` in the SHA-256 bank with `sha256` (PCR := SHA-256(PCR ‖ sha256)), authorized by
    /// the PCR's empty password (TPM_RS_PW). Other active banks are left alone: the TPM extends only
    /// the banks listed in the command.
    pub fn pcr_extend(&mut self, pcr: u32, sha256: &[u8; 32]) -> Result<()> {
        if pcr >= pcr_selection::PCR_COUNT {
            return Err(Error::InvalidArgument(format!("PCR {pcr} out of range")));
        }
        let resp = self.execute("TPM2_PCR_Extend", &marshal::pcr_extend_command(pcr, sha256))?;
        // Nothing to read but the (empty) parameter area; check that it is well formed.
        marshal::session_response_params(&resp)?;
        Ok(())
    }

    /// Every PCR bank the TPM has, active or not (TPM2_GetCapability(TPM_CAP_PCRS)).
    pub fn pcr_banks(&mut self) -> Result<Vec<PcrBank>> {
        let cmd = marshal::get_capability_pcrs_command();
        let resp = self.execute("TPM2_GetCapability", &cmd)?;
        let sels = marshal::parse_capability_pcrs(&resp)?;
        Ok(sels
            .into_iter()
            .map(|s| PcrBank {
                alg_id: s.alg,
                alg: HashAlg::from_alg_id(s.alg),
                pcrs: s.pcrs(),
            })
            .collect())
    }

    /// The active banks with algorithms this crate knows, in TPM order.
    pub fn active_banks(&mut self) -> Result<Vec<HashAlg>> {
        Ok(self
            .pcr_banks()?
            .into_iter()
            .filter(PcrBank::is_active)
            .filter_map(|b| b.alg)
            .collect())
    }

    /// Sends `cmd`, retrying on the "try again" warnings; returns the response after its header.
    fn execute(&mut self, command: &'static str, cmd: &[u8]) -> Result<Vec<u8>> {
        let mut attempt = 0;
        loop {
            let resp = self.transport.transact(cmd)?;
            let hdr = marshal::parse_header(&resp)?;
            let rc = ResponseCode(hdr.code);
            if hdr.code == rc::TPM_RC_SUCCESS {
                check_tag(command, hdr.tag, cmd)?;
                return Ok(resp[HEADER_LEN..].to_vec());
            }
            attempt += 1;
            if !rc.is_retryable() || attempt > MAX_RETRIES {
                return Err(Error::Tpm { command, rc });
            }
            std::thread::sleep(RETRY_DELAY);
        }
    }
}

/// A successful response carries the same session tag as its command.
fn check_tag(command: &'static str, tag: u16, cmd: &[u8]) -> Result<()> {
    let sent = u16::from_be_bytes([cmd[0], cmd[1]]);
    if tag == sent && (tag == TPM_ST_SESSIONS || tag == TPM_ST_NO_SESSIONS) {
        Ok(())
    } else {
        Err(Error::Malformed(format!(
            "{command}: response tag {tag:#06x}, command tag {sent:#06x}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transport that answers from a script and records what it was sent.
    struct Scripted {
        responses: Vec<Vec<u8>>,
        sent: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    }

    impl Transport for Scripted {
        fn transact(&mut self, cmd: &[u8]) -> Result<Vec<u8>> {
            self.sent.lock().unwrap().push(cmd.to_vec());
            Ok(self.responses.remove(0))
        }
    }

    fn pcr_read_response(select: [u8; 3], values: &[[u8; 32]]) -> Vec<u8> {
        let mut b = vec![0x80, 0x01, 0, 0, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(&7u32.to_be_bytes()); // pcrUpdateCounter
        b.extend_from_slice(&1u32.to_be_bytes());
        b.extend_from_slice(&[0x00, 0x0B, 3]);
        b.extend_from_slice(&select);
        b.extend_from_slice(&(values.len() as u32).to_be_bytes());
        for v in values {
            b.extend_from_slice(&32u16.to_be_bytes());
            b.extend_from_slice(v);
        }
        let n = b.len() as u32;
        b[2..6].copy_from_slice(&n.to_be_bytes());
        b
    }

    #[test]
    fn pcr_read_repeats_until_all_returned() {
        // First answer: PCRs 0..7 (select 0xff 00 00); second: 8 and 23.
        let first = pcr_read_response([0xFF, 0, 0], &[[1; 32]; 8]);
        let second = pcr_read_response([0, 0x01, 0x80], &[[2; 32], [3; 32]]);
        let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tpm = Tpm::with_transport(Box::new(Scripted {
            responses: vec![first, second],
            sent: sent.clone(),
        }));
        let pcrs: Vec<u32> = (0..9).chain([23]).collect();
        let got = tpm.pcr_read(HashAlg::Sha256, &pcrs).unwrap();
        assert_eq!(got.len(), 10);
        assert_eq!(got[8], (8, vec![2; 32]));
        assert_eq!(got[9], (23, vec![3; 32]));
        // The second request asks only for what is missing: select 00 01 80.
        let sent = sent.lock().unwrap();
        assert_eq!(&sent[1][16..20], &[3, 0x00, 0x01, 0x80]);
    }

    #[test]
    fn tpm_error_is_decoded() {
        let resp = vec![0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x00];
        let mut tpm = Tpm::with_transport(Box::new(Scripted {
            responses: vec![resp],
            sent: Default::default(),
        }));
        let err = tpm.pcr_read(HashAlg::Sha256, &[0]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "TPM2_PCR_Read failed: TPM_RC_INITIALIZE (TPM2_Startup was not run) (rc 0x100)"
        );
    }
}

// Last in the file, so that the guest build (feature off) sees every other line where it was.
#[cfg(feature = "swtpm")]
pub mod swtpm;
