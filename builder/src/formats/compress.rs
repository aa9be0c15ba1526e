//! Deflate helpers shared by the gzip (GCP) and VMDK writers.
//!
//! Incompressible data (already-compressed squashfs blocks, random keys) costs zlib's level 6 as
//! much time as text does, for no gain: such a block is emitted as stored deflate blocks (level 0,
//! memcpy speed) instead. The decision samples the block's own bytes, so it depends on content only
//! and the output stays reproducible.

use anyhow::{Context, Result};
use flate2::{Compress, Compression, FlushCompress, Status};

/// Bytes per probe, and how many probes (start, middle, end) a block gets.
const PROBE: usize = 8 * 1024;
const PROBES: usize = 3;
/// A probe that deflates (level 1) to more than 31/32 of its size is "incompressible".
const INCOMPRESSIBLE_NUM: usize = 31;
const INCOMPRESSIBLE_DEN: usize = 32;
/// zlib level 0: stored blocks.
const STORED: u32 = 0;

/// `level`, or 0 (stored) when every probe of `data` is incompressible.
pub fn level_for(data: &[u8], level: u32) -> u32 {
    if data.len() < PROBES * PROBE {
        return level;
    }
    let step = (data.len() - PROBE) / (PROBES - 1);
    let mut c = Compress::new(Compression::fast(), false);
    let mut out = Vec::with_capacity(PROBE * 2);
    let all_incompressible = (0..PROBES).all(|i| {
        let sample = &data[i * step..i * step + PROBE];
        c.reset();
        out.clear();
        match c.compress_vec(sample, &mut out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) => {
                out.len() * INCOMPRESSIBLE_DEN > sample.len() * INCOMPRESSIBLE_NUM
            }
            // Output did not fit in twice the input: certainly not compressible.
            Ok(_) => true,
            Err(_) => false,
        }
    });
    if all_incompressible {
        STORED
    } else {
        level
    }
}

/// Raw deflate (no zlib/gzip wrapper) of `data` ending with a sync flush: byte aligned, BFINAL
/// clear, so independently compressed pieces concatenate into one valid deflate stream.
pub fn raw_deflate_sync(data: &[u8], level: u32) -> Result<Vec<u8>> {
    let mut c = Compress::new(Compression::new(level_for(data, level)), false);
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    loop {
        let consumed = c.total_in() as usize;
        c.compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
            .context("deflate")?;
        // A sync flush is complete once the compressor returns with output space to spare.
        if c.total_in() as usize == data.len() && out.len() < out.capacity() {
            return Ok(out);
        }
        out.reserve(out.capacity().max(64 * 1024));
    }
}

/// zlib-wrapped (RFC 1950) deflate of `data`, as VMDK grains carry it.
pub fn zlib(data: &[u8], level: u32) -> Result<Vec<u8>> {
    let mut c = Compress::new(Compression::new(level_for(data, level)), true);
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 64);
    loop {
        let consumed = c.total_in() as usize;
        if c.compress_vec(&data[consumed..], &mut out, FlushCompress::Finish)
            .context("zlib")?
            == Status::StreamEnd
        {
            return Ok(out);
        }
        out.reserve(out.capacity());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::testutil::pseudo_random;
    use flate2::read::{DeflateDecoder, ZlibDecoder};
    use std::io::Read;

    #[test]
    fn random_data_is_stored_and_text_is_compressed() {
        assert_eq!(level_for(&pseudo_random(1, 65536), 6), 0);
        let text = "some text that repeats ".repeat(4000);
        assert_eq!(level_for(text.as_bytes(), 6), 6);
        // Mixed: random start, text end — one compressible probe keeps the real level.
        let mut mixed = pseudo_random(2, 40_000);
        mixed.extend_from_slice(&text.as_bytes()[..40_000]);
        assert_eq!(level_for(&mixed, 6), 6);
    }

    #[test]
    fn both_encodings_round_trip_through_an_independent_decoder() -> Result<()> {
        for data in [
            pseudo_random(3, 200_000),
            "abc".repeat(70_000).into_bytes(),
            Vec::new(),
        ] {
            let mut back = Vec::new();
            ZlibDecoder::new(&zlib(&data, 6)?[..]).read_to_end(&mut back)?;
            assert_eq!(back, data);
            // A sync-flushed raw stream plus an empty final block is a complete deflate stream.
            let mut raw = raw_deflate_sync(&data, 6)?;
            assert!(raw.ends_with(&[0, 0, 0xff, 0xff]));
            raw.extend_from_slice(&[0x03, 0x00]);
            back.clear();
            DeflateDecoder::new(&raw[..]).read_to_end(&mut back)?;
            assert_eq!(back, data);
        }
        Ok(())
    }
}
