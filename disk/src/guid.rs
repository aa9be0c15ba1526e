//! GUID byte orders. GPT stores the first three fields of a GUID little-endian ("mixed endian");
//! the textual form (and RFC 4122 byte order, which `uuid::Uuid::from_bytes` takes) is big-endian:
//! `c12a7328-f81f-11d2-…` is `28 73 2a c1 1f f8 d2 11 …` on disk.

/// Textual (RFC 4122) byte order from the on-disk mixed-endian bytes.
pub fn from_disk(raw: [u8; 16]) -> [u8; 16] {
    swap_fields(raw)
}

/// On-disk mixed-endian bytes from the textual (RFC 4122) byte order.
pub fn to_disk(guid: [u8; 16]) -> [u8; 16] {
    swap_fields(guid)
}

/// The conversion is its own inverse: reverse the 4-, 2- and 2-byte leading fields.
fn swap_fields(mut g: [u8; 16]) -> [u8; 16] {
    g[0..4].reverse();
    g[4..6].reverse();
    g[6..8].reverse();
    g
}

/// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (any case) into textual byte order.
pub fn parse(text: &str) -> Option<[u8; 16]> {
    let bytes = text.as_bytes();
    if bytes.len() != 36 || [8, 13, 18, 23].iter().any(|&i| bytes[i] != b'-') {
        return None;
    }
    let hex: Vec<u8> = bytes.iter().copied().filter(|&b| b != b'-').collect();
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

/// The EFI System Partition type, `c12a7328-f81f-11d2-ba4b-00a0c93ec93b`, in textual byte order.
pub const ESP_TYPE: [u8; 16] = [
    0xc1, 0x2a, 0x73, 0x28, 0xf8, 0x1f, 0x11, 0xd2, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esp_type_on_disk() {
        // As sgdisk writes it and the UEFI spec prints it.
        let raw = [
            0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E,
            0xC9, 0x3B,
        ];
        assert_eq!(from_disk(raw), ESP_TYPE);
        assert_eq!(to_disk(ESP_TYPE), raw);
        assert_eq!(
            parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
            Some(ESP_TYPE)
        );
        assert_eq!(parse("not-a-guid"), None);
        assert_eq!(parse("c12a7328f81f11d2ba4b00a0c93ec93b0000"), None);
    }
}
