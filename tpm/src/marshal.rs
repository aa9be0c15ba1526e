//! Hand-written marshalling of the three commands this crate sends (TPM 2.0 Library, Part 3).
//!
//! Why not `tpm2-protocol`: the crate pins MSRV to the newest compiler, has had >100 releases with
//! API churn, and we need four structures (TPML_PCR_SELECTION, TPML_DIGEST, TPML_DIGEST_VALUES and a
//! password authorization). Each is a few big-endian fields; writing them here keeps PID 1 small and the
//! byte layout visible next to the spec's field names. Every builder is checked in the unit tests against
//! the bytes `tpm2-tools` 5.4 sends (captured with `tpm2_pcrread -v`/swtpm logging, see tests).

use crate::codec::{Command, Reader};
use crate::constants::{TPMA_SESSION_NONE, TPM_RS_PW, TPM_ST_NO_SESSIONS, TPM_ST_SESSIONS};
use crate::pcr_selection::PcrSelection;
use crate::{Error, HashAlg, Result};

/// `TPM_CC_GetCapability`.
pub const TPM_CC_GET_CAPABILITY: u32 = 0x0000_017A;
/// `TPM_CC_PCR_Read`.
pub const TPM_CC_PCR_READ: u32 = 0x0000_017E;
/// `TPM_CC_PCR_Extend`.
pub const TPM_CC_PCR_EXTEND: u32 = 0x0000_0182;
/// `TPM_CAP_PCRS`: GetCapability returns the allocated PCR banks (TPML_PCR_SELECTION).
pub const TPM_CAP_PCRS: u32 = 0x0000_0005;
/// Command/response header: tag u16, size u32, code u32.
pub const HEADER_LEN: usize = 10;

/// TPM2_PCR_Read(pcrSelectionIn).
pub fn pcr_read_command(sel: &PcrSelection) -> Vec<u8> {
    let mut c = Command::new(TPM_ST_NO_SESSIONS, TPM_CC_PCR_READ);
    c.u32(1);
    sel.write(&mut c);
    c.finish()
}

/// Parsed TPM2_PCR_Read response parameters.
#[derive(Debug)]
pub struct PcrReadResponse {
    pub selection: Vec<PcrSelection>,
    pub digests: Vec<Vec<u8>>,
}

/// Parses `pcrUpdateCounter`, `pcrSelectionOut`, `pcrValues` (after the header).
pub fn parse_pcr_read(params: &[u8]) -> Result<PcrReadResponse> {
    let mut r = Reader::new(params, "TPM2_PCR_Read");
    let _pcr_update_counter = r.u32()?;
    let selection = PcrSelection::read_list(&mut r)?;
    let count = r.u32()?;
    let digests = (0..count)
        .map(|_| r.tpm2b().map(<[u8]>::to_vec))
        .collect::<Result<Vec<_>>>()?;
    Ok(PcrReadResponse { selection, digests })
}

/// TPM2_PCR_Extend(pcrHandle, password session with empty auth, TPML_DIGEST_VALUES{sha256}).
pub fn pcr_extend_command(pcr: u32, sha256: &[u8; 32]) -> Vec<u8> {
    let mut c = Command::new(TPM_ST_SESSIONS, TPM_CC_PCR_EXTEND);
    c.u32(pcr); // pcrHandle: a PCR's handle is its index (TPM_HT_PCR = 0x00)
                // authorizationSize, then TPMS_AUTH_COMMAND: sessionHandle, nonceCaller (empty),
                // sessionAttributes, hmac (= the empty password of a PCR's authValue).
    c.u32(4 + 2 + 1 + 2);
    c.u32(TPM_RS_PW).u16(0).u8(TPMA_SESSION_NONE).u16(0);
    // digests: TPML_DIGEST_VALUES { count, TPMT_HA { hashAlg, digest } }
    c.u32(1).u16(HashAlg::Sha256.alg_id()).bytes(sha256);
    c.finish()
}

/// TPM2_GetCapability(TPM_CAP_PCRS, property 0, propertyCount 1).
pub fn get_capability_pcrs_command() -> Vec<u8> {
    let mut c = Command::new(TPM_ST_NO_SESSIONS, TPM_CC_GET_CAPABILITY);
    c.u32(TPM_CAP_PCRS).u32(0).u32(1);
    c.finish()
}

/// Parses `moreData`, `TPMS_CAPABILITY_DATA{TPM_CAP_PCRS, TPML_PCR_SELECTION}`.
pub fn parse_capability_pcrs(params: &[u8]) -> Result<Vec<PcrSelection>> {
    let mut r = Reader::new(params, "TPM2_GetCapability(TPM_CAP_PCRS)");
    let _more_data = r.u8()?;
    let cap = r.u32()?;
    if cap != TPM_CAP_PCRS {
        return Err(Error::Malformed(format!(
            "TPM2_GetCapability: asked for TPM_CAP_PCRS ({TPM_CAP_PCRS}), got capability {cap}"
        )));
    }
    PcrSelection::read_list(&mut r)
}

/// Response header fields.
#[derive(Debug, Clone, Copy)]
pub struct ResponseHeader {
    pub tag: u16,
    pub size: u32,
    pub code: u32,
}

pub fn parse_header(buf: &[u8]) -> Result<ResponseHeader> {
    let mut r = Reader::new(buf, "response header");
    Ok(ResponseHeader {
        tag: r.u16()?,
        size: r.u32()?,
        code: r.u32()?,
    })
}

/// For a `TPM_ST_SESSIONS` response: the parameter area (after parameterSize), without the
/// trailing authorization area.
pub fn session_response_params(body: &[u8]) -> Result<&[u8]> {
    let mut r = Reader::new(body, "session response");
    let n = r.u32()? as usize;
    r.take(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference bytes: what tpm2-tools 5.4 sends, from `swtpm socket ... --log level=20`
    // (SWTPM_IO_Read dumps every command):
    //   tpm2_pcrread sha256:23            -> 80 01 00 00 00 14 00 00 01 7e 00 00 00 01 00 0b 03 00 00 80
    //   tpm2_pcrextend 23:sha256=<32x 11> -> 80 02 00 00 00 41 00 00 01 82 00 00 00 17 00 00 00 09
    //                                        40 00 00 09 00 00 00 00 00 00 00 00 01 00 0b 11..11
    //   tpm2_getcap pcrs                  -> 80 01 00 00 00 16 00 00 01 7a 00 00 00 05 00 00 00 00
    //                                        00 00 00 01
    #[test]
    fn pcr_read_bytes() {
        let sel = PcrSelection::from_pcrs(0x000B, &[23]).unwrap();
        let cmd = pcr_read_command(&sel);
        let want = [
            0x80, 0x01, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x01, 0x7e, 0x00, 0x00, 0x00, 0x01,
            0x00, 0x0b, 0x03, 0x00, 0x00, 0x80,
        ];
        assert_eq!(cmd, want);
    }

    #[test]
    fn pcr_extend_bytes() {
        let cmd = pcr_extend_command(23, &[0x11; 32]);
        let mut want = vec![
            0x80, 0x02, 0x00, 0x00, 0x00, 0x41, 0x00, 0x00, 0x01, 0x82, 0x00, 0x00, 0x00, 0x17,
            0x00, 0x00, 0x00, 0x09, 0x40, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x01, 0x00, 0x0b,
        ];
        want.extend_from_slice(&[0x11; 32]);
        assert_eq!(cmd, want);
    }

    #[test]
    fn get_capability_bytes() {
        let want = [
            0x80, 0x01, 0x00, 0x00, 0x00, 0x16, 0x00, 0x00, 0x01, 0x7a, 0x00, 0x00, 0x00, 0x05,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        ];
        assert_eq!(get_capability_pcrs_command(), want);
    }

    #[test]
    fn short_response_is_error() {
        let err = parse_pcr_read(&[0, 0, 0, 1, 0, 0]).unwrap_err();
        assert!(err.to_string().contains("TPM2_PCR_Read"), "{err}");
    }
}
