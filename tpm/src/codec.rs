//! Writing and reading TPM structures: every integer big-endian, every variable-length field a
//! `TPM2B_*` (u16 size, then the bytes; TPM 2.0 Library Part 2 §10.4 "Sized Buffers").
//!
//! The writer builds commands and templates; the reader takes apart responses and the structures a
//! verifier receives. Both sides use this one implementation, so a length the client writes is the
//! length the verifier reads.

use crate::{Error, Result};

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

/// `u16 size ‖ bytes`.
pub fn tpm2b(v: &[u8]) -> Vec<u8> {
    let mut c = Command::body();
    c.tpm2b(v);
    c.into_bytes()
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

/// The contents of a whole `TPM2B_*` (`what`): its size must cover the rest exactly.
pub fn unwrap_tpm2b<'a>(bytes: &'a [u8], what: &'static str) -> Result<&'a [u8]> {
    let mut r = Reader::new(bytes, what);
    let inner = r.tpm2b()?;
    r.finish()?;
    Ok(inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tpm2b_prefixes_size() {
        assert_eq!(tpm2b(&[7, 8, 9]), vec![0, 3, 7, 8, 9]);
        assert_eq!(tpm2b(&[]), vec![0, 0]);
    }

    #[test]
    fn unwrap_tpm2b_needs_the_exact_size() {
        assert_eq!(unwrap_tpm2b(&[0, 2, 7, 8], "T").unwrap(), &[7, 8]);
        let short = unwrap_tpm2b(&[0, 3, 7, 8], "T").unwrap_err().to_string();
        assert!(short.contains("T: truncated"), "{short}");
        let long = unwrap_tpm2b(&[0, 1, 7, 8], "T").unwrap_err().to_string();
        assert!(long.contains("T: 1 unexpected trailing bytes"), "{long}");
    }
}
