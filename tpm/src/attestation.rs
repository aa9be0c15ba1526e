//! Parsing of what the TPM signs when it attests (TPM 2.0 Library Part 2 §10.12 "Attestation
//! Structures", `TPMS_ATTEST`): a quote (`TPMS_QUOTE_INFO`, TPM2_Quote's output) and a certification
//! (`TPMS_CERTIFY_INFO`, TPM2_Certify's output).
//!
//! Each parser requires the magic `TPM_GENERATED_VALUE` and its own structure tag, so a quote
//! cannot be passed off as a certification or the other way round; trailing bytes are an error (a
//! signed structure with junk after it is not what the TPM produced). Whether the signature over
//! the bytes verifies is the verifier's business.

use crate::codec::Reader;
use crate::constants::{TPM_GENERATED_VALUE, TPM_ST_ATTEST_CERTIFY, TPM_ST_ATTEST_QUOTE};
use crate::pcr_selection::PcrSelection;
use crate::{Error, Result};

/// `TPMS_CLOCK_INFO`: the TPM's clock when it signed. A verifier can tell from the counters whether
/// the TPM was reset or restarted between two attestations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockInfo {
    /// Milliseconds the TPM has been powered since it was manufactured (or cleared).
    pub clock: u64,
    /// TPM resets (reboots) so far.
    pub reset_count: u32,
    /// TPM2_Shutdown(STATE)/Startup(STATE) cycles (hibernation) since the last reset.
    pub restart_count: u32,
    /// Whether `clock` is known never to have been reported lower.
    pub safe: bool,
}

/// The fields every `TPMS_ATTEST` starts with, before its type-specific `attested` union (the
/// magic and the type are checked by the parsers, not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestHeader {
    /// Qualified Name of the signing key.
    pub qualified_signer: Vec<u8>,
    /// extraData: the verifier's nonce.
    pub extra_data: Vec<u8>,
    pub clock_info: ClockInfo,
    pub firmware_version: u64,
}

/// A parsed quote (`TPMS_ATTEST` with `TPMS_QUOTE_INFO`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteInfo {
    pub header: AttestHeader,
    /// The quoted PCRs, bank by bank.
    pub pcr_select: Vec<PcrSelection>,
    /// Hash of the selected PCR values (Part 3 §18.4), with the signing scheme's hash.
    pub pcr_digest: Vec<u8>,
}

/// A parsed certification (`TPMS_ATTEST` with `TPMS_CERTIFY_INFO`, TPM2_Certify's output): the
/// signer vouches that an object with this Name is loaded in the same TPM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertifyInfo {
    pub header: AttestHeader,
    /// Name of the certified object.
    pub name: Vec<u8>,
    /// Its qualified Name (hierarchy ‖ parents ‖ Name, hashed).
    pub qualified_name: Vec<u8>,
}

impl AttestHeader {
    /// Reads magic, type (which must be `want_type`, named `type_name` in the error), signer,
    /// extraData, clockInfo and firmwareVersion.
    fn read(r: &mut Reader<'_>, want_type: u16, type_name: &str) -> Result<Self> {
        let magic = r.u32()?;
        if magic != TPM_GENERATED_VALUE {
            return Err(Error::Malformed(format!(
                "TPMS_ATTEST magic {magic:#010x} is not TPM_GENERATED_VALUE ({TPM_GENERATED_VALUE:#010x})"
            )));
        }
        let type_ = r.u16()?;
        if type_ != want_type {
            return Err(Error::Malformed(format!(
                "TPMS_ATTEST type {type_:#06x} is not {type_name} ({want_type:#06x})"
            )));
        }
        Ok(AttestHeader {
            qualified_signer: r.tpm2b()?.to_vec(),
            extra_data: r.tpm2b()?.to_vec(),
            clock_info: ClockInfo {
                clock: r.u64()?,
                reset_count: r.u32()?,
                restart_count: r.u32()?,
                safe: r.u8()? != 0,
            },
            firmware_version: r.u64()?,
        })
    }
}

impl QuoteInfo {
    /// Parses a TPMS_ATTEST and requires it to be a TPM-generated quote.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "TPMS_ATTEST");
        let header = AttestHeader::read(&mut r, TPM_ST_ATTEST_QUOTE, "TPM_ST_ATTEST_QUOTE")?;
        let pcr_select = PcrSelection::read_list(&mut r)?;
        let pcr_digest = r.tpm2b()?.to_vec();
        r.finish()?;
        Ok(QuoteInfo {
            header,
            pcr_select,
            pcr_digest,
        })
    }
}

impl CertifyInfo {
    /// Parses a TPMS_ATTEST and requires it to be a TPM-generated certification.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "TPMS_ATTEST (certify)");
        let header = AttestHeader::read(&mut r, TPM_ST_ATTEST_CERTIFY, "TPM_ST_ATTEST_CERTIFY")?;
        let name = r.tpm2b()?.to_vec();
        let qualified_name = r.tpm2b()?.to_vec();
        r.finish()?;
        Ok(CertifyInfo {
            header,
            name,
            qualified_name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Command;

    /// A TPMS_ATTEST header of `type_` with signer 0x00 0x0b ‖ 32×0xAA and extraData `nonce`.
    fn header(type_: u16, nonce: &[u8]) -> Command {
        let mut c = Command::body();
        c.u32(TPM_GENERATED_VALUE).u16(type_);
        c.tpm2b(&[[0x00, 0x0B].as_slice(), &[0xAA; 32]].concat());
        c.tpm2b(nonce);
        c.bytes(&7u64.to_be_bytes()).u32(1).u32(2).u8(1); // clockInfo
        c.bytes(&9u64.to_be_bytes()); // firmwareVersion
        c
    }

    #[test]
    fn quote_fields_in_order() {
        let mut c = header(TPM_ST_ATTEST_QUOTE, &[0x90, 0x09]);
        c.u32(1).u16(0x000B).u8(3).bytes(&[0x01, 0x00, 0x80]); // PCRs 0 and 23
        c.tpm2b(&[0x5A; 32]);
        let bytes = c.into_bytes();
        let q = QuoteInfo::parse(&bytes).unwrap();
        assert_eq!(q.header.qualified_signer[..2], [0x00, 0x0B]);
        assert_eq!(q.header.extra_data, [0x90, 0x09]);
        let clock = &q.header.clock_info;
        assert_eq!(
            (clock.clock, clock.reset_count, clock.restart_count),
            (7, 1, 2)
        );
        assert!(clock.safe);
        assert_eq!(q.header.firmware_version, 9);
        assert_eq!(q.pcr_select[0].pcrs(), vec![0, 23]);
        assert_eq!(q.pcr_digest, [0x5A; 32]);
        let junk = [bytes.as_slice(), &[0]].concat();
        assert!(QuoteInfo::parse(&junk).is_err());
        // A quote is not a certification.
        let e = CertifyInfo::parse(&bytes).unwrap_err().to_string();
        assert!(e.contains("is not TPM_ST_ATTEST_CERTIFY (0x8017)"), "{e}");
    }

    #[test]
    fn certify_needs_the_magic() {
        let mut c = header(TPM_ST_ATTEST_CERTIFY, b"nonce");
        c.tpm2b(b"name").tpm2b(b"qualified");
        let mut bytes = c.into_bytes();
        let info = CertifyInfo::parse(&bytes).unwrap();
        assert_eq!(info.header.extra_data, b"nonce");
        assert_eq!(
            (info.name, info.qualified_name),
            (b"name".to_vec(), b"qualified".to_vec())
        );
        bytes[0] ^= 1;
        let e = CertifyInfo::parse(&bytes).unwrap_err().to_string();
        assert!(e.contains("is not TPM_GENERATED_VALUE (0xff544347)"), "{e}");
    }
}
