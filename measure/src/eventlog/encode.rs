//! Writer for the binary formats: the inverse of the parser, byte for byte.

use super::parse::SPEC_ID_SIGNATURE_03;
use super::{Event, EventLog, EventLogError, EventType, HashAlg, LogFormat, SpecIdEvent};

/// Serialise `log`. A crypto-agile log needs a Spec ID header and every digest of every event
/// must belong to a declared bank with the declared size; a legacy log needs exactly one SHA-1
/// digest per event. Trailing [`Padding`](super::Padding) is written back.
pub fn encode(log: &EventLog) -> Result<Vec<u8>, EventLogError> {
    let mut out = Vec::new();
    match log.format {
        LogFormat::CryptoAgile => {
            let spec = log.spec_id.as_ref().ok_or(EventLogError::Encode {
                event: 0,
                problem: "a crypto-agile log needs a Spec ID event".into(),
            })?;
            write_spec_id(&mut out, spec)?;
            for (i, event) in log.events.iter().enumerate() {
                write_agile(&mut out, spec, i, event)?;
            }
        }
        LogFormat::Sha1Legacy => {
            for (i, event) in log.events.iter().enumerate() {
                write_legacy(&mut out, i, event)?;
            }
        }
    }
    if let Some(padding) = log.padding {
        out.resize(out.len() + padding.len, padding.byte);
    }
    Ok(out)
}

fn len_u32(len: usize, event: usize, what: &str) -> Result<u32, EventLogError> {
    u32::try_from(len).map_err(|_| EventLogError::Encode {
        event,
        problem: format!("{what} of {len} bytes does not fit a u32 length"),
    })
}

fn write_spec_id(out: &mut Vec<u8>, spec: &SpecIdEvent) -> Result<(), EventLogError> {
    let mut data = SPEC_ID_SIGNATURE_03.to_vec();
    data.extend_from_slice(&spec.platform_class.to_le_bytes());
    data.extend_from_slice(&[
        spec.spec_version_minor,
        spec.spec_version_major,
        spec.spec_errata,
        spec.uintn_size,
    ]);
    data.extend_from_slice(&len_u32(spec.algorithms.len(), 0, "algorithm list")?.to_le_bytes());
    for a in &spec.algorithms {
        data.extend_from_slice(&a.alg.0.to_le_bytes());
        data.extend_from_slice(&a.digest_size.to_le_bytes());
    }
    let vendor_len = u8::try_from(spec.vendor_info.len()).map_err(|_| EventLogError::Encode {
        event: 0,
        problem: "vendorInfo is longer than 255 bytes".into(),
    })?;
    data.push(vendor_len);
    data.extend_from_slice(&spec.vendor_info);
    out.extend_from_slice(&spec.header_index.to_le_bytes());
    out.extend_from_slice(&EventType::EV_NO_ACTION.0.to_le_bytes());
    out.extend_from_slice(&[0u8; 20]);
    out.extend_from_slice(&len_u32(data.len(), 0, "Spec ID event")?.to_le_bytes());
    out.extend_from_slice(&data);
    Ok(())
}

fn write_agile(
    out: &mut Vec<u8>,
    spec: &SpecIdEvent,
    index: usize,
    event: &Event,
) -> Result<(), EventLogError> {
    out.extend_from_slice(&event.pcr.to_le_bytes());
    out.extend_from_slice(&event.event_type.0.to_le_bytes());
    out.extend_from_slice(&len_u32(event.digests.len(), index, "digest list")?.to_le_bytes());
    for d in &event.digests {
        let declared = spec
            .algorithms
            .iter()
            .find(|a| a.alg == d.alg)
            .ok_or_else(|| EventLogError::Encode {
                event: index,
                problem: format!("digest algorithm {} is not a bank of this log", d.alg),
            })?;
        if usize::from(declared.digest_size) != d.digest.len() {
            return Err(EventLogError::Encode {
                event: index,
                problem: format!(
                    "{} digest is {} bytes, the bank's size is {}",
                    d.alg,
                    d.digest.len(),
                    declared.digest_size
                ),
            });
        }
        out.extend_from_slice(&d.alg.0.to_le_bytes());
        out.extend_from_slice(&d.digest);
    }
    out.extend_from_slice(&len_u32(event.data.len(), index, "event data")?.to_le_bytes());
    out.extend_from_slice(&event.data);
    Ok(())
}

fn write_legacy(out: &mut Vec<u8>, index: usize, event: &Event) -> Result<(), EventLogError> {
    let sha1 = match event.digests.as_slice() {
        [d] if d.alg == HashAlg::SHA1 && d.digest.len() == 20 => &d.digest,
        _ => {
            return Err(EventLogError::Encode {
                event: index,
                problem: "a legacy log event needs exactly one 20-byte SHA-1 digest".into(),
            })
        }
    };
    out.extend_from_slice(&event.pcr.to_le_bytes());
    out.extend_from_slice(&event.event_type.0.to_le_bytes());
    out.extend_from_slice(sha1);
    out.extend_from_slice(&len_u32(event.data.len(), index, "event data")?.to_le_bytes());
    out.extend_from_slice(&event.data);
    Ok(())
}
