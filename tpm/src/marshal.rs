//! Hand-written marshalling of the three commands this crate sends (TPM 2.0 Library, Part 3).
//!
//! Why not `tpm2-protocol`: the crate pins MSRV to the newest compiler, has had >100 releases with
//! API churn, and we need four structures (TPML_PCR_SELECTION, TPML_DIGEST, TPML_DIGEST_VALUES and a
//! password authorization). Each is a few big-endian fields; writing them here keeps PID 1 small and the
//! byte layout visible next to the spec's field names. Every builder is checked in the unit tests against
//! the bytes `tpm2-tools` 5.4 sends (captured with `tpm2_pcrread -v`/swtpm logging, see tests).

use crate::{Error, HashAlg, Result};

/// `TPM_ST_NO_SESSIONS`: command/response without an authorization area.
pub const TPM_ST_NO_SESSIONS: u16 = 0x8001;
/// `TPM_ST_SESSIONS`: command/response with an authorization area.
pub const TPM_ST_SESSIONS: u16 = 0x8002;
/// `TPM_CC_GetCapability`.
pub const TPM_CC_GET_CAPABILITY: u32 = 0x0000_017A;
/// `TPM_CC_PCR_Read`.
pub const TPM_CC_PCR_READ: u32 = 0x0000_017E;
/// `TPM_CC_PCR_Extend`.
pub const TPM_CC_PCR_EXTEND: u32 = 0x0000_0182;
/// `TPM_RS_PW`: the password authorization session handle.
pub const TPM_RS_PW: u32 = 0x4000_0009;
/// `TPM_CAP_PCRS`: GetCapability returns the allocated PCR banks (TPML_PCR_SELECTION).
pub const TPM_CAP_PCRS: u32 = 0x0000_0005;
/// `TPMA_SESSION` for the password session: no attributes (continueSession is meaningless for
/// TPM_RS_PW; tpm2-tools 5.4 sends 0 too).
const TPMA_SESSION_NONE: u8 = 0x00;
/// Command/response header: tag u16, size u32, code u32.
pub const HEADER_LEN: usize = 10;
/// `PCR_SELECT_MIN` for a 24-PCR PC-client TPM: 3 bytes of select bitmap.
pub const PCR_SELECT_BYTES: usize = 3;
/// PCRs addressable with [`PCR_SELECT_BYTES`].
pub const PCR_COUNT: u32 = (PCR_SELECT_BYTES * 8) as u32;

/// A command body being written: header placeholder first, size patched in `finish`.
pub struct Command(Vec<u8>);

impl Command {
    pub fn new(tag: u16, code: u32) -> Self {
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(&tag.to_be_bytes());
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(&code.to_be_bytes());
        Command(b)
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }
    /// A bare byte builder for structures (templates, blobs) that are not whole commands.
    pub fn body() -> Self {
        Command(Vec::with_capacity(64))
    }
    /// The bytes written so far, for a [`Command::body`].
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
    /// A `TPM2B_*`: u16 size then the bytes.
    pub fn tpm2b(&mut self, v: &[u8]) -> &mut Self {
        self.u16(v.len() as u16).bytes(v)
    }
    pub fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[2..6].copy_from_slice(&len.to_be_bytes());
        self.0
    }
}

/// Reads a TPM structure (a response body, or a structure a verifier received) front to back,
/// big-endian; every short read is a [`Error::Malformed`] naming the structure.
pub struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::Malformed(format!(
                "{}: truncated ({} bytes needed, {} left)",
                self.what,
                n,
                self.buf.len()
            )));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }
    /// A `TPM2B_*`: u16 size then that many bytes.
    pub fn tpm2b(&mut self) -> Result<&'a [u8]> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    /// The structure must end here: a signed structure with junk after it is not what the TPM
    /// produced.
    pub fn finish(&self) -> Result<()> {
        if !self.buf.is_empty() {
            return Err(Error::Malformed(format!(
                "{}: {} unexpected trailing bytes",
                self.what,
                self.buf.len()
            )));
        }
        Ok(())
    }
}

/// One `TPMS_PCR_SELECTION`: a hash algorithm and a PCR bitmap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    pub alg: u16,
    pub select: Vec<u8>,
}

impl PcrSelection {
    pub fn from_pcrs(alg: u16, pcrs: &[u32]) -> Result<Self> {
        let mut select = vec![0u8; PCR_SELECT_BYTES];
        for &p in pcrs {
            if p >= PCR_COUNT {
                return Err(Error::InvalidArgument(format!(
                    "PCR {p} out of range (this client addresses PCRs 0..{PCR_COUNT})"
                )));
            }
            select[(p / 8) as usize] |= 1 << (p % 8);
        }
        Ok(PcrSelection { alg, select })
    }

    /// Selected PCR indices, ascending (the order in which the TPM returns their values).
    pub fn pcrs(&self) -> Vec<u32> {
        let mut out = Vec::new();
        for (byte, bits) in self.select.iter().enumerate() {
            for bit in 0..8 {
                if bits & (1 << bit) != 0 {
                    out.push(byte as u32 * 8 + bit);
                }
            }
        }
        out
    }

    pub(crate) fn write(&self, c: &mut Command) {
        c.u16(self.alg)
            .u8(self.select.len() as u8)
            .bytes(&self.select);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let alg = r.u16()?;
        let n = r.u8()? as usize;
        let select = r.take(n)?.to_vec();
        Ok(PcrSelection { alg, select })
    }
}

/// `TPML_PCR_SELECTION`: count u32 then the selections.
fn read_pcr_selection_list(r: &mut Reader<'_>) -> Result<Vec<PcrSelection>> {
    let count = r.u32()?;
    (0..count).map(|_| PcrSelection::read(r)).collect()
}

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
    let selection = read_pcr_selection_list(&mut r)?;
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
    read_pcr_selection_list(&mut r)
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
    fn selection_roundtrip_order() {
        let sel = PcrSelection::from_pcrs(0x000B, &[23, 0, 9, 7]).unwrap();
        assert_eq!(sel.select, vec![0x81, 0x02, 0x80]);
        assert_eq!(sel.pcrs(), vec![0, 7, 9, 23]);
        assert!(PcrSelection::from_pcrs(0x000B, &[24]).is_err());
    }

    #[test]
    fn short_response_is_error() {
        let err = parse_pcr_read(&[0, 0, 0, 1, 0, 0]).unwrap_err();
        assert!(err.to_string().contains("TPM2_PCR_Read"), "{err}");
    }
}
