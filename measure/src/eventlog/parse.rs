//! Binary parser for crypto-agile, CCEL and legacy SHA-1 logs. Every length is checked against
//! the bytes actually left before it is used, so hostile input yields an error, not a panic or a
//! huge allocation.

use super::{
    AlgorithmSize, Event, EventDigest, EventLog, EventLogError, EventType, HashAlg, LogFormat,
    Padding, Registers, SpecIdEvent,
};

/// `TCG_EfiSpecIDEvent.signature` of a crypto-agile log (PFP §10.4.5.1), NUL included.
pub const SPEC_ID_SIGNATURE_03: &[u8; 16] = b"Spec ID Event03\0";
/// Size of the SHA-1 digest field of a legacy `TCG_PCR_EVENT` record.
const SHA1_DIGEST_LEN: usize = 20;
/// `TCG_EfiSpecIDEvent` bytes before the algorithm array: signature[16], platformClass u32,
/// specVersionMinor, specVersionMajor, specErrata, uintnSize (u8 each), numberOfAlgorithms u32.
const SPEC_ID_FIXED_LEN: usize = 16 + 4 + 4 + 4;

/// Parse a log, recognising its format (see the module documentation).
pub fn parse(bytes: &[u8]) -> Result<EventLog, EventLogError> {
    parse_with(bytes, None)
}

/// Parse a log whose index field is known to name `registers` (e.g. a file read from the ACPI
/// CCEL area is [`Registers::CcMr`] whatever its header says).
pub fn parse_as(bytes: &[u8], registers: Registers) -> Result<EventLog, EventLogError> {
    parse_with(bytes, Some(registers))
}

fn parse_with(bytes: &[u8], forced: Option<Registers>) -> Result<EventLog, EventLogError> {
    if bytes.is_empty() {
        return Err(EventLogError::Empty);
    }
    let mut r = Reader::new(bytes);
    let header = read_legacy_record(&mut r)?;
    r.record = 1;
    if header.event_type == EventType::EV_NO_ACTION && header.data.starts_with(SPEC_ID_SIGNATURE_03)
    {
        let spec = parse_spec_id(&header)?;
        let registers = forced.unwrap_or(if spec.header_index == 0 {
            Registers::Pcr
        } else {
            Registers::CcMr
        });
        let (events, padding) = read_records(&mut r, |r| read_agile_record(r, &spec.algorithms))?;
        Ok(EventLog {
            format: LogFormat::CryptoAgile,
            registers,
            spec_id: Some(spec),
            events,
            padding,
        })
    } else {
        let mut r = Reader::new(bytes);
        let (events, padding) = read_records(&mut r, |r| {
            read_legacy_record(r).map(LegacyRecord::into_event)
        })?;
        Ok(EventLog {
            format: LogFormat::Sha1Legacy,
            registers: forced.unwrap_or(Registers::Pcr),
            spec_id: None,
            events,
            padding,
        })
    }
}

/// Read records until the end or until only fill bytes (all 0x00 or all 0xFF) remain.
fn read_records(
    r: &mut Reader<'_>,
    mut read_one: impl FnMut(&mut Reader<'_>) -> Result<Event, EventLogError>,
) -> Result<(Vec<Event>, Option<Padding>), EventLogError> {
    let mut events = Vec::new();
    loop {
        let rest = r.rest();
        if rest.is_empty() {
            return Ok((events, None));
        }
        if let Some(padding) = fill(rest) {
            return Ok((events, Some(padding)));
        }
        events.push(read_one(r)?);
        r.record += 1;
    }
}

/// `Some` when `rest` is nothing but one repeated fill byte, 0x00 or 0xFF. Neither can start a
/// record: PCR index 0xFFFFFFFF is invalid, and an all-zero tail is what Linux treats as the end
/// of a firmware log (`event_type == 0 && event_size == 0`).
fn fill(rest: &[u8]) -> Option<Padding> {
    let byte = rest[0];
    if (byte == 0x00 || byte == 0xFF) && rest.iter().all(|&b| b == byte) {
        Some(Padding {
            byte,
            len: rest.len(),
        })
    } else {
        None
    }
}

/// A `TCG_PCR_EVENT` record (legacy layout, also the header of a crypto-agile log).
struct LegacyRecord {
    pcr: u32,
    event_type: EventType,
    digest: [u8; SHA1_DIGEST_LEN],
    data: Vec<u8>,
}

impl LegacyRecord {
    fn into_event(self) -> Event {
        Event {
            pcr: self.pcr,
            event_type: self.event_type,
            digests: vec![EventDigest {
                alg: HashAlg::SHA1,
                digest: self.digest.to_vec(),
            }],
            data: self.data,
        }
    }
}

fn read_legacy_record(r: &mut Reader<'_>) -> Result<LegacyRecord, EventLogError> {
    let pcr = r.u32("PCRIndex")?;
    let event_type = EventType(r.u32("EventType")?);
    let mut digest = [0u8; SHA1_DIGEST_LEN];
    digest.copy_from_slice(r.bytes(SHA1_DIGEST_LEN as u64, "SHA-1 digest")?);
    let size = r.u32("EventSize")?;
    let data = r.bytes(u64::from(size), "event data")?.to_vec();
    Ok(LegacyRecord {
        pcr,
        event_type,
        digest,
        data,
    })
}

fn read_agile_record(
    r: &mut Reader<'_>,
    algorithms: &[AlgorithmSize],
) -> Result<Event, EventLogError> {
    let pcr = r.u32("PCRIndex")?;
    let event_type = EventType(r.u32("EventType")?);
    let count = r.u32("TPML_DIGEST_VALUES.count")?;
    // Each digest needs at least its 2-byte algorithm id: a count larger than the bytes left
    // cannot be honest, and must not size an allocation.
    let mut digests = Vec::with_capacity((count as usize).min(algorithms.len()));
    for _ in 0..count {
        let alg_offset = r.pos;
        let alg = HashAlg(r.u16("TPMT_HA.hashAlg")?);
        let size = algorithms
            .iter()
            .find(|a| a.alg == alg)
            .ok_or(EventLogError::UndeclaredAlgorithm {
                record: r.record,
                offset: alg_offset,
                alg,
            })?
            .digest_size;
        let digest = r.bytes(u64::from(size), "TPMT_HA.digest")?.to_vec();
        digests.push(EventDigest { alg, digest });
    }
    let size = r.u32("EventSize")?;
    let data = r.bytes(u64::from(size), "event data")?.to_vec();
    Ok(Event {
        pcr,
        event_type,
        digests,
        data,
    })
}

fn parse_spec_id(header: &LegacyRecord) -> Result<SpecIdEvent, EventLogError> {
    let bad = |problem: String| EventLogError::SpecId { problem };
    if header.digest != [0u8; SHA1_DIGEST_LEN] {
        return Err(bad(
            "the header record's SHA-1 digest must be 20 zero bytes".into(),
        ));
    }
    let data = &header.data;
    if data.len() < SPEC_ID_FIXED_LEN {
        return Err(bad(format!(
            "event data is {} bytes, the fixed part alone is {SPEC_ID_FIXED_LEN}",
            data.len()
        )));
    }
    let mut r = Reader::new(data);
    r.pos = SPEC_ID_SIGNATURE_03.len();
    let map = |e: EventLogError| bad(e.to_string());
    let platform_class = r.u32("platformClass").map_err(map)?;
    let spec_version_minor = r.u8("specVersionMinor").map_err(map)?;
    let spec_version_major = r.u8("specVersionMajor").map_err(map)?;
    let spec_errata = r.u8("specErrata").map_err(map)?;
    let uintn_size = r.u8("uintnSize").map_err(map)?;
    let count = r.u32("numberOfAlgorithms").map_err(map)?;
    if count == 0 {
        return Err(bad("numberOfAlgorithms is 0".into()));
    }
    let mut algorithms = Vec::new();
    for _ in 0..count {
        let alg = HashAlg(r.u16("algorithmId").map_err(map)?);
        let digest_size = r.u16("digestSize").map_err(map)?;
        check_declared_size(alg, digest_size).map_err(|p| bad(p.to_string()))?;
        if algorithms.iter().any(|a: &AlgorithmSize| a.alg == alg) {
            return Err(bad(format!("algorithm {alg} is declared twice")));
        }
        algorithms.push(AlgorithmSize { alg, digest_size });
    }
    let vendor_len = r.u8("vendorInfoSize").map_err(map)?;
    let vendor_info = r
        .bytes(u64::from(vendor_len), "vendorInfo")
        .map_err(map)?
        .to_vec();
    if !r.rest().is_empty() {
        return Err(bad(format!(
            "{} bytes follow vendorInfo inside the event",
            r.rest().len()
        )));
    }
    Ok(SpecIdEvent {
        header_index: header.pcr,
        platform_class,
        spec_version_minor,
        spec_version_major,
        spec_errata,
        uintn_size,
        algorithms,
        vendor_info,
    })
}

/// A digest size in the Spec ID event that contradicts its algorithm.
#[derive(Debug, thiserror::Error)]
enum DeclaredSizeError {
    #[error("algorithm {alg} declared with digest size {declared}, it is {len}")]
    Wrong {
        alg: HashAlg,
        declared: u16,
        len: usize,
    },
    #[error("algorithm {0} declared with digest size 0")]
    Zero(HashAlg),
}

/// A declared digest size must match the algorithm's, when we know it.
fn check_declared_size(alg: HashAlg, declared: u16) -> Result<(), DeclaredSizeError> {
    match alg.digest_len() {
        Some(len) if len != usize::from(declared) => {
            Err(DeclaredSizeError::Wrong { alg, declared, len })
        }
        _ if declared == 0 => Err(DeclaredSizeError::Zero(alg)),
        _ => Ok(()),
    }
}

/// Little-endian cursor that reports the record number and offset of a short read.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    record: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            record: 0,
        }
    }

    pub(super) fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub(super) fn bytes(
        &mut self,
        len: u64,
        what: &'static str,
    ) -> Result<&'a [u8], EventLogError> {
        let have = self.buf.len() - self.pos;
        match usize::try_from(len) {
            Ok(n) if n <= have => {
                let out = &self.buf[self.pos..self.pos + n];
                self.pos += n;
                Ok(out)
            }
            _ => Err(EventLogError::Truncated {
                record: self.record,
                offset: self.pos,
                what,
                need: len,
                have,
            }),
        }
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], EventLogError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N as u64, what)?);
        Ok(out)
    }

    pub(super) fn u8(&mut self, what: &'static str) -> Result<u8, EventLogError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(super) fn u16(&mut self, what: &'static str) -> Result<u16, EventLogError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub(super) fn u32(&mut self, what: &'static str) -> Result<u32, EventLogError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_header(index: u32, algs: &[(u16, u16)]) -> Vec<u8> {
        let mut spec = SPEC_ID_SIGNATURE_03.to_vec();
        spec.extend_from_slice(&0u32.to_le_bytes());
        spec.extend_from_slice(&[0, 2, 0, 2]);
        spec.extend_from_slice(&(algs.len() as u32).to_le_bytes());
        for (alg, size) in algs {
            spec.extend_from_slice(&alg.to_le_bytes());
            spec.extend_from_slice(&size.to_le_bytes());
        }
        spec.push(0);
        let mut out = index.to_le_bytes().to_vec();
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&[0; 20]);
        out.extend_from_slice(&(spec.len() as u32).to_le_bytes());
        out.extend_from_slice(&spec);
        out
    }

    #[test]
    fn empty_is_an_error() {
        assert_eq!(parse(&[]), Err(EventLogError::Empty));
    }

    #[test]
    fn header_only_log() {
        let log = parse(&spec_header(0, &[(0x0b, 32)])).unwrap();
        assert_eq!(log.format, LogFormat::CryptoAgile);
        assert_eq!(log.registers, Registers::Pcr);
        assert_eq!(log.banks(), vec![HashAlg::SHA256]);
        assert!(log.events.is_empty());
    }

    #[test]
    fn nonzero_header_index_means_cc_registers() {
        let log = parse(&spec_header(1, &[(0x0c, 48)])).unwrap();
        assert_eq!(log.registers, Registers::CcMr);
        let forced = parse_as(&spec_header(1, &[(0x0c, 48)]), Registers::Pcr).unwrap();
        assert_eq!(forced.registers, Registers::Pcr);
    }

    #[test]
    fn wrong_declared_size_is_rejected() {
        let err = parse(&spec_header(0, &[(0x0b, 20)])).unwrap_err();
        assert!(
            err.to_string()
                .contains("sha256 declared with digest size 20"),
            "{err}"
        );
    }

    #[test]
    fn huge_event_size_is_an_error_not_an_allocation() {
        let mut log = spec_header(0, &[(0x0b, 32)]);
        log.extend_from_slice(&4u32.to_le_bytes());
        log.extend_from_slice(&4u32.to_le_bytes());
        log.extend_from_slice(&1u32.to_le_bytes());
        log.extend_from_slice(&0x0bu16.to_le_bytes());
        log.extend_from_slice(&[0; 32]);
        log.extend_from_slice(&u32::MAX.to_le_bytes());
        let err = parse(&log).unwrap_err();
        assert!(
            matches!(
                err,
                EventLogError::Truncated {
                    record: 1,
                    what: "event data",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn undeclared_algorithm_is_rejected() {
        let mut log = spec_header(0, &[(0x0b, 32)]);
        log.extend_from_slice(&4u32.to_le_bytes());
        log.extend_from_slice(&4u32.to_le_bytes());
        log.extend_from_slice(&1u32.to_le_bytes());
        log.extend_from_slice(&0x04u16.to_le_bytes());
        let err = parse(&log).unwrap_err();
        assert!(
            matches!(
                err,
                EventLogError::UndeclaredAlgorithm {
                    alg: HashAlg::SHA1,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn fill_detection() {
        assert_eq!(fill(&[0xff; 3]), Some(Padding { byte: 0xff, len: 3 }));
        assert_eq!(fill(&[0, 0]), Some(Padding { byte: 0, len: 2 }));
        assert_eq!(fill(&[0xff, 0]), None);
        assert_eq!(fill(&[1]), None);
    }
}
