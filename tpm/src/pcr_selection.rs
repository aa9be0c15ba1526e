//! PCR selections (TPM 2.0 Library Part 2 §10.6 `TPMS_PCR_SELECTION`, §10.9 `TPML_PCR_SELECTION`):
//! a hash algorithm and a bitmap of PCR indices, as PCR_Read, Quote and PolicyPCR carry them and as
//! a quote's TPMS_QUOTE_INFO reports what it covers.

use crate::codec::{Command, Reader};
use crate::{Error, Result};

/// `PCR_SELECT_MIN` for a 24-PCR PC-client TPM: 3 bytes of select bitmap.
pub const PCR_SELECT_BYTES: usize = 3;
/// PCRs addressable with [`PCR_SELECT_BYTES`].
pub const PCR_COUNT: u32 = (PCR_SELECT_BYTES * 8) as u32;

/// One `TPMS_PCR_SELECTION`: a hash algorithm and a PCR bitmap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    /// The bank's `TPM_ALG_ID` (raw: a TPM may report a bank this crate has no name for).
    pub alg: u16,
    /// `pcrSelect`: bit `i % 8` of byte `i / 8` selects PCR `i`.
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

    /// Selected PCR indices, ascending (the order in which the TPM returns their values and
    /// concatenates them into a quote's pcrDigest).
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

    /// `TPML_PCR_SELECTION`: count u32 then the selections.
    pub(crate) fn read_list(r: &mut Reader<'_>) -> Result<Vec<Self>> {
        let count = r.u32()?;
        (0..count).map(|_| Self::read(r)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_roundtrip_order() {
        let sel = PcrSelection::from_pcrs(0x000B, &[23, 0, 9, 7]).unwrap();
        assert_eq!(sel.select, vec![0x81, 0x02, 0x80]);
        assert_eq!(sel.pcrs(), vec![0, 7, 9, 23]);
        assert!(PcrSelection::from_pcrs(0x000B, &[24]).is_err());
    }

    /// A TPM may answer with a bitmap longer than the 3 bytes this client sends.
    #[test]
    fn list_reads_any_bitmap_size() {
        let bytes = [
            0, 0, 0, 2, 0x00, 0x0B, 3, 0x01, 0, 0x80, 0x00, 0x0C, 4, 0, 0, 0, 0x01,
        ];
        let mut r = Reader::new(&bytes, "TPML_PCR_SELECTION");
        let list = PcrSelection::read_list(&mut r).unwrap();
        r.finish().unwrap();
        assert_eq!(list[0].pcrs(), vec![0, 23]);
        assert_eq!((list[1].alg, list[1].pcrs()), (0x000C, vec![24]));
    }
}
