//! Text decoding shared by the event descriptions and the device-path renderer: EFI GUIDs in their
//! textual form, UTF-16LE and ASCII strings found in event data. A leaf: it imports nothing of the
//! event log.

/// Text form of a mixed-endian EFI_GUID (first three fields little-endian).
pub fn guid_to_string(g: &[u8; 16]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{}-{}",
        u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
        u16::from_le_bytes([g[4], g[5]]),
        u16::from_le_bytes([g[6], g[7]]),
        hex::encode(&g[8..10]),
        hex::encode(&g[10..16])
    )
}

/// UTF-16LE text, trailing NULs removed. `None` unless every unit decodes and no NUL or other
/// control character is inside — so binary data is not mistaken for text.
pub(crate) fn utf16_text(b: &[u8]) -> Option<String> {
    if !b.len().is_multiple_of(2) {
        return None;
    }
    let mut units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    while units.last() == Some(&0) {
        units.pop();
    }
    let text = String::from_utf16(&units).ok()?;
    (!text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')))
    .then_some(text)
}

/// Printable ASCII text, trailing NULs removed; `None` for anything else.
pub(crate) fn ascii_text(b: &[u8]) -> Option<String> {
    let end = b.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
    let body = &b[..end];
    body.iter()
        .all(|&c| (0x20..0x7F).contains(&c) || matches!(c, b'\t' | b'\n' | b'\r'))
        .then(|| String::from_utf8_lossy(body).into_owned())
}
