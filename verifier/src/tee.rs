//! The TEE report in the collaterals: a SEV-SNP ATTESTATION_REPORT or a TDX quote whose report data
//! binds the verifier's nonce and the AK ([`crate::attest::tee_report_data`]), so that the TPM quote
//! is known to come from a vTPM inside that confidential VM.
//!
//! * SEV-SNP: the VCEK/VLEK and the ASK/ARK come from the host's certificate table (configfs-tsm
//!   `auxblob` / the extended report) or from the verifier's files (`--snp-vcek`, `--amd-chain`); the
//!   ARK must be AMD's pinned root ([`crate::attest::snp`]).
//! * TDX: DCAP verification needs Intel's collateral (`--tdx-collateral`, dcap-qvl's JSON shape, as
//!   fetched from Intel PCS or a PCCS); the Intel SGX root is pinned by dcap-qvl.
//!
//! A verified SEV-SNP report whose guest policy allows DEBUG or MIGRATE_MA fails: the host can then
//! read or export the guest's memory ([`crate::attest::snp_policy`]). The policy, VMPL and reported
//! TCB are shown in the check's detail.
//!
//! The launch measurement (SNP MEASUREMENT, TDX MRTD) is reported, not compared: the golden file does
//! not predict it yet.

use crate::attest::snp::{self, SnpReport};
use crate::attest::snp_policy::{describe_tcb, GuestPolicy};
use crate::attest::tdx::{self, TdxCollateral};
use crate::attestation::{AttestCheck, CheckKind, CheckStatus};
use crate::error::{Kind, OptionExt, Result, ResultExt, VerifyError};
use base64::Engine;
use cvm_measure::boot_config::format_uuid;
use der::Decode;
use x509_cert::Certificate;

pub use crate::wire::TeeReportJson;

/// What the verifier trusts and requires of a TEE report.
#[derive(Debug, Clone, Default)]
pub struct TeeTrust {
    /// VCEK/VLEK certificate (DER or PEM) when the VM's host provides no certificate table.
    pub snp_vcek: Option<Vec<u8>>,
    /// KDS `cert_chain` PEM (ASK/ASVK then ARK) when the host provides none.
    pub amd_chain: Option<Vec<u8>>,
    /// Intel DCAP collateral for TDX quotes.
    pub tdx_collateral: Option<TdxCollateral>,
    /// Fail when the VM presents no TEE report (it should run as a confidential VM).
    pub require: bool,
}

/// Certificate-table GUIDs (SEV-SNP extended guest request; docs/tee.md §5).
const GUID_ARK: &str = "c0b406a4-a803-4952-9743-3fb6014cd0ae";
const GUID_ASK: &str = "4ab7b379-bbac-4fe4-a02f-05aef327c782";
const GUID_VCEK: &str = "63da758d-e664-4564-adc5-f4b93be8accd";
const GUID_VLEK: &str = "a8074bc2-a25a-483e-aae6-39c045a0b8a1";
/// One table entry: GUID (16) ‖ offset u32 LE ‖ length u32 LE; an all-zero entry ends the table.
const CERT_ENTRY_LEN: usize = 24;
/// TDX statuses that still mean "the platform is patched".
const TDX_ACCEPTED: [&str; 2] = ["UpToDate", "SWHardeningNeeded"];

/// Checks the collaterals' TEE report against the report data the agent must have requested.
pub fn check_tee(
    report: Option<&TeeReportJson>,
    expected_report_data: &[u8; 64],
    trust: &TeeTrust,
    now_unix: u64,
) -> AttestCheck {
    let tee = report.map(|r| r.tee.as_str()).unwrap_or("none");
    let outcome = match (tee, report) {
        ("sev-snp", Some(r)) => check_snp(r, expected_report_data, trust, now_unix),
        ("tdx", Some(r)) => check_tdx(r, expected_report_data, trust, now_unix),
        ("none", _) => {
            return AttestCheck {
                check: CheckKind::TeeReport,
                status: if trust.require {
                    CheckStatus::Failed
                } else {
                    CheckStatus::Skipped
                },
                detail: "no TEE report: the VM has no SEV-SNP/TDX interface (not a confidential \
                         VM, or its guest driver is missing)"
                    .into(),
            }
        }
        (other, _) => Err(VerifyError::malformed(format!(
            "TEE type {other:?} is not sev-snp, tdx or none"
        ))),
    };
    AttestCheck::from_result(CheckKind::TeeReport, outcome)
}

fn report_bytes(r: &TeeReportJson) -> Result<Vec<u8>> {
    let b = r
        .report
        .as_deref()
        .or_kind(Kind::Check, "tee_report.report is missing")?;
    base64::engine::general_purpose::STANDARD
        .decode(b)
        .check_failed("tee_report.report is not base64")
}

fn check_snp(
    r: &TeeReportJson,
    expected: &[u8; 64],
    trust: &TeeTrust,
    now_unix: u64,
) -> Result<String> {
    let report = SnpReport::parse(&report_bytes(r)?)
        .map_err(VerifyError::from)
        .check_failed("the SEV-SNP report")?;
    if report.report_data != *expected {
        return Err(VerifyError::check(
            "the SEV-SNP report's REPORT_DATA does not bind this nonce and AK (a replayed report, \
             or one from another VM)",
        ));
    }
    let table = match &r.aux {
        Some(aux) => cert_table(
            &base64::engine::general_purpose::STANDARD
                .decode(aux)
                .check_failed("tee_report.aux is not base64")?,
        )?,
        None => CertTable::default(),
    };
    let vcek = match (&trust.snp_vcek, &table.vcek) {
        (Some(file), _) => der_or_pem(file).check_failed("--snp-vcek")?,
        (None, Some(der)) => der.clone(),
        (None, None) => return Err(VerifyError::check(
            "no VCEK/VLEK: the host's certificate table has none; pass --snp-vcek FILE (from AMD \
             KDS, https://kdsintf.amd.com/vcek/v1/<product>/<hwid>?…)"
                .to_string(),
        )),
    };
    let chain = match (&trust.amd_chain, &table.ask, &table.ark) {
        (Some(pem), _, _) => snp::verify_chain(pem)
            .map_err(VerifyError::from)
            .check_failed("--amd-chain")?,
        (None, Some(ask), Some(ark)) => snp::verify_chain_certs(
            Certificate::from_der(ask).check_failed("the certificate table's ASK")?,
            Certificate::from_der(ark).check_failed("the certificate table's ARK")?,
        )
        .map_err(VerifyError::from)?,
        _ => return Err(VerifyError::check(
            "no ASK/ARK: the host's certificate table has none; pass --amd-chain FILE (AMD KDS \
             https://kdsintf.amd.com/vcek/v1/<product>/cert_chain)"
                .to_string(),
        )),
    };
    let v = snp::verify_report(&report, &vcek, &chain, now_unix).map_err(VerifyError::from)?;
    // After the signature: only then is the policy the hardware's word, not the host's.
    let policy = GuestPolicy(report.policy);
    policy.require_confidential().map_err(VerifyError::from)?;
    Ok(format!(
        "SEV-SNP report signed by a {:?} of AMD {} (pinned ARK), REPORT_DATA binds the nonce and \
         the AK; guest policy {}; VMPL {}; reported TCB {}; launch measurement {}",
        v.signing_key,
        v.product.name(),
        policy.describe(),
        report.vmpl,
        describe_tcb(report.reported_tcb, v.product == snp::Product::Turin),
        hex::encode(v.measurement)
    ))
}

fn check_tdx(
    r: &TeeReportJson,
    expected: &[u8; 64],
    trust: &TeeTrust,
    now_unix: u64,
) -> Result<String> {
    let quote = report_bytes(r)?;
    let body = tdx::parse_quote(&quote).map_err(VerifyError::from)?;
    tdx::check_report_data(&body, expected)
        .map_err(VerifyError::from)
        .check_failed("the TDX quote does not bind this nonce and AK")?;
    let collateral = trust.tdx_collateral.as_ref().or_kind(
        Kind::Check,
        "a TDX quote needs Intel's DCAP collateral: pass --tdx-collateral FILE (dcap-qvl's JSON \
         shape, from Intel PCS or your PCCS)",
    )?;
    let v = tdx::verify_quote(&quote, collateral, now_unix).map_err(VerifyError::from)?;
    if !(TDX_ACCEPTED.contains(&v.tcb_status.as_str())) {
        return Err(VerifyError::check(format!(
            "TDX TCB status {} (advisories {:?}): the platform is not up to date",
            v.tcb_status, v.advisory_ids
        )));
    }
    Ok(format!(
        "TDX quote verified (DCAP, FMSPC {}, TCB {}), report_data binds the nonce and the AK; \
         MRTD {}",
        v.fmspc,
        v.tcb_status,
        hex::encode(v.body.mr_td)
    ))
}

/// The certificates of an SNP certificate table.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CertTable {
    pub ark: Option<Vec<u8>>,
    pub ask: Option<Vec<u8>>,
    /// VCEK or VLEK.
    pub vcek: Option<Vec<u8>>,
}

/// Parses the host's certificate table (GHCB spec, SNP extended guest request). Hosts differ in how
/// they store the GUID bytes, so both the RFC 4122 and the EFI (mixed-endian) order are accepted.
pub fn cert_table(bytes: &[u8]) -> Result<CertTable> {
    let mut table = CertTable::default();
    for entry in bytes.chunks(CERT_ENTRY_LEN) {
        if entry.len() != CERT_ENTRY_LEN {
            return Err(VerifyError::check(
                "the SNP certificate table is truncated".to_string(),
            ));
        }
        if entry.iter().all(|b| *b == 0) {
            return Ok(table);
        }
        let guid = guid_names(&entry[..16]);
        let offset = u32::from_le_bytes(entry[16..20].try_into().expect("4 bytes")) as usize;
        let len = u32::from_le_bytes(entry[20..24].try_into().expect("4 bytes")) as usize;
        let cert = bytes
            .get(offset..offset.saturating_add(len))
            .or_kind(
                Kind::Check,
                format!("certificate {guid:?} lies outside the certificate table"),
            )?
            .to_vec();
        if guid.contains(&GUID_ARK.to_string()) {
            table.ark = Some(cert);
        } else if guid.contains(&GUID_ASK.to_string()) {
            table.ask = Some(cert);
        } else if guid.contains(&GUID_VCEK.to_string()) || guid.contains(&GUID_VLEK.to_string()) {
            table.vcek = Some(cert);
        }
    }
    Err(VerifyError::check(
        "the SNP certificate table has no terminating zero entry",
    ))
}

/// The GUID's text under both byte orders.
fn guid_names(b: &[u8]) -> [String; 2] {
    let rfc: [u8; 16] = b.try_into().expect("16 bytes");
    let mut efi = rfc;
    efi[0..4].reverse();
    efi[4..6].reverse();
    efi[6..8].reverse();
    [format_uuid(&rfc), format_uuid(&efi)]
}

/// A certificate file as DER, whether it is DER or PEM.
fn der_or_pem(bytes: &[u8]) -> Result<Vec<u8>> {
    if bytes.starts_with(b"-----BEGIN") {
        use der::DecodePem;
        use der::Encode;
        let c = Certificate::from_pem(bytes).check_failed("not a PEM certificate")?;
        return c.to_der().check_failed("re-encoding the certificate");
    }
    Ok(bytes.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testutil::testdata;

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    /// 2024-06-01T00:00:00Z, inside the virtee VCEK's validity.
    const JUNE_2024: u64 = 1_717_200_000;
    /// SOURCES.md [decoded] report_data of milan-vcek-report-virtee.hex.
    const VIRTEE_REPORT_DATA: &str = "d447b55d197491bfe15cf298f9de9986b7a7c4be2468b4f6e2d53b71d7c645810b0f2cdfca0040433be063fc1a8293f0f3f8dae7b79fecb3d1cd82bd6a93ebfd";
    /// SOURCES.md report_data of the dcap-qvl sample quote, and its verification instant.
    const DCAP_REPORT_DATA: &str = "9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20";
    const DCAP_NOW: u64 = 1_752_919_234;

    fn rd(hex_text: &str) -> [u8; 64] {
        hex::decode(hex_text).unwrap().try_into().unwrap()
    }

    fn virtee_report() -> TeeReportJson {
        let text = String::from_utf8(testdata("sev-snp/milan-vcek-report-virtee.hex")).unwrap();
        TeeReportJson {
            tee: "sev-snp".into(),
            source: Some("configfs-tsm:sev_guest".into()),
            report_data: Some(VIRTEE_REPORT_DATA.into()),
            report: Some(b64(&hex::decode(text.trim()).unwrap())),
            aux: None,
        }
    }

    /// The virtee report checked with the verifier's files, inside the VCEK's validity.
    fn virtee_check() -> AttestCheck {
        check_tee(
            Some(&virtee_report()),
            &rd(VIRTEE_REPORT_DATA),
            &snp_files_trust(),
            JUNE_2024,
        )
    }

    fn snp_files_trust() -> TeeTrust {
        TeeTrust {
            snp_vcek: Some(testdata("sev-snp/milan-vcek-virtee.der")),
            amd_chain: Some(testdata("sev-snp/kds-cert-chain-milan-vcek.pem")),
            ..TeeTrust::default()
        }
    }

    /// A certificate table as the host hands it to the guest: entries, zero entry, then the DER
    /// certificates (GUIDs in the EFI byte order).
    fn table(certs: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let head = (certs.len() + 1) * CERT_ENTRY_LEN;
        let (mut entries, mut data) = (vec![], vec![]);
        for (guid, der) in certs {
            let mut g = hex::decode(guid.replace('-', "")).unwrap();
            g[0..4].reverse();
            g[4..6].reverse();
            g[6..8].reverse();
            entries.extend_from_slice(&g);
            entries.extend_from_slice(&((head + data.len()) as u32).to_le_bytes());
            entries.extend_from_slice(&(der.len() as u32).to_le_bytes());
            data.extend_from_slice(der);
        }
        entries.extend_from_slice(&[0; CERT_ENTRY_LEN]);
        entries.extend_from_slice(&data);
        entries
    }

    fn kds_chain_der(name: &str) -> (Vec<u8>, Vec<u8>) {
        use der::Encode;
        let certs =
            Certificate::load_pem_chain(&testdata(&format!("sev-snp/kds-cert-chain-{name}.pem")))
                .unwrap();
        (certs[0].to_der().unwrap(), certs[1].to_der().unwrap())
    }

    #[test]
    fn snp_report_with_verifier_files_is_ok() {
        let c = virtee_check();
        assert_eq!(c.status, CheckStatus::Ok, "{}", c.detail);
        // SOURCES.md [decoded] measurement.
        assert!(c.detail.contains("7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f"), "{}", c.detail);
    }

    #[test]
    fn snp_report_detail_shows_policy_vmpl_and_tcb() {
        let c = virtee_check();
        // SOURCES.md [decoded]: policy 0x30000, VMPL 0, reported_tcb bl 3, tee 0, snp 8, ucode 115.
        for want in [
            "guest policy 0x30000",
            "DEBUG off",
            "VMPL 0",
            "reported TCB bl 3, tee 0, snp 8, ucode 115",
        ] {
            assert!(c.detail.contains(want), "{want}: {}", c.detail);
        }
    }

    /// The go-sev-guest Milan report verifies (signature, chain, TCB) but was launched with the
    /// DEBUG policy bit (SOURCES.md: "debug allowed (raw 0xb0000)"): the check fails naming it.
    #[test]
    fn snp_report_of_a_debug_guest_fails_naming_debug() {
        let bytes = testdata("sev-snp/milan-vcek-report-gosevguest.bin");
        let mut report_data = [0u8; 64];
        report_data[..5].copy_from_slice(&[1, 2, 3, 4, 5]);
        let r = TeeReportJson {
            tee: "sev-snp".into(),
            source: Some("configfs-tsm:sev_guest".into()),
            report_data: Some(hex::encode(report_data)),
            report: Some(b64(&bytes)),
            aux: None,
        };
        let trust = TeeTrust {
            snp_vcek: Some(testdata("sev-snp/milan-vcek-gosevguest.der")),
            amd_chain: Some(testdata("sev-snp/kds-cert-chain-milan-vcek.pem")),
            ..TeeTrust::default()
        };
        // SOURCES.md: the VCEK is valid from 2022-09-24T00:55:28Z; checked at 01:00:00Z.
        let c = check_tee(Some(&r), &report_data, &trust, 1_663_981_200);
        assert_eq!(c.status, CheckStatus::Failed, "{}", c.detail);
        assert!(c.detail.contains("DEBUG set"), "{}", c.detail);
        assert!(c.detail.contains("0xb0000"), "{}", c.detail);
    }

    #[test]
    fn snp_report_with_host_certificate_table_is_ok() {
        let (ask, ark) = kds_chain_der("milan-vcek");
        let mut r = virtee_report();
        r.aux = Some(b64(&table(&[
            (GUID_ARK, ark),
            (GUID_ASK, ask),
            (GUID_VCEK, testdata("sev-snp/milan-vcek-virtee.der")),
        ])));
        let c = check_tee(
            Some(&r),
            &rd(VIRTEE_REPORT_DATA),
            &TeeTrust::default(),
            JUNE_2024,
        );
        assert_eq!(c.status, CheckStatus::Ok, "{}", c.detail);
    }

    #[test]
    fn snp_report_for_another_nonce_fails() {
        let mut other = rd(VIRTEE_REPORT_DATA);
        other[0] ^= 1;
        let c = check_tee(
            Some(&virtee_report()),
            &other,
            &snp_files_trust(),
            JUNE_2024,
        );
        assert_eq!(c.status, CheckStatus::Failed);
        assert!(
            c.detail.contains("does not bind this nonce"),
            "{}",
            c.detail
        );
    }

    #[test]
    fn snp_report_with_altered_body_fails_its_signature() {
        let mut r = virtee_report();
        let mut raw = report_bytes(&r).unwrap();
        raw[0x90] ^= 0x80; // MEASUREMENT
        r.report = Some(b64(&raw));
        let c = check_tee(
            Some(&r),
            &rd(VIRTEE_REPORT_DATA),
            &snp_files_trust(),
            JUNE_2024,
        );
        assert_eq!(c.status, CheckStatus::Failed);
        assert!(c.detail.contains("signature"), "{}", c.detail);
    }

    #[test]
    fn snp_chain_of_another_product_is_refused() {
        let mut trust = snp_files_trust();
        trust.amd_chain = Some(testdata("sev-snp/kds-cert-chain-genoa-vcek.pem"));
        let c = check_tee(
            Some(&virtee_report()),
            &rd(VIRTEE_REPORT_DATA),
            &trust,
            JUNE_2024,
        );
        assert_eq!(c.status, CheckStatus::Failed, "{}", c.detail);
    }

    #[test]
    fn snp_without_any_vcek_names_the_option() {
        let c = check_tee(
            Some(&virtee_report()),
            &rd(VIRTEE_REPORT_DATA),
            &TeeTrust::default(),
            JUNE_2024,
        );
        assert_eq!(c.status, CheckStatus::Failed);
        assert!(c.detail.contains("--snp-vcek"), "{}", c.detail);
    }

    /// A self-signed root named ARK-Milan is not AMD's: the pin refuses it.
    #[test]
    fn unpinned_ark_is_refused() {
        use der::DecodePem;
        let dir = crate::testutil::temp_dir("fake-ark");
        let key = dir.path().join("k.pem");
        let cert = dir.path().join("c.pem");
        let ok = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=ARK-Milan",
                "-days",
                "1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .status()
            .expect("openssl is required for this test")
            .success();
        assert!(ok);
        let (ask, _) = kds_chain_der("milan-vcek");
        let fake = Certificate::from_pem(std::fs::read(&cert).unwrap()).unwrap();
        let err = snp::verify_chain_certs(Certificate::from_der(&ask).unwrap(), fake).unwrap_err();
        assert!(
            format!("{err:#}").contains("not AMD's published ARK-Milan"),
            "{err:#}"
        );
    }

    fn dcap_report() -> TeeReportJson {
        TeeReportJson {
            tee: "tdx".into(),
            source: Some("configfs-tsm:tdx_guest".into()),
            report_data: Some(DCAP_REPORT_DATA.into()),
            report: Some(b64(&testdata("tdx/quote-v4-dcapqvl.dat"))),
            aux: None,
        }
    }

    fn dcap_trust() -> TeeTrust {
        TeeTrust {
            tdx_collateral: Some(
                TdxCollateral::from_dcap_qvl_json(&testdata(
                    "tdx/quote-v4-dcapqvl-collateral.json",
                ))
                .unwrap(),
            ),
            ..TeeTrust::default()
        }
    }

    #[test]
    fn tdx_quote_with_collateral_is_ok() {
        let c = check_tee(
            Some(&dcap_report()),
            &rd(DCAP_REPORT_DATA),
            &dcap_trust(),
            DCAP_NOW,
        );
        assert_eq!(c.status, CheckStatus::Ok, "{}", c.detail);
        assert!(
            c.detail.contains("B0C06F000000") && c.detail.contains("UpToDate"),
            "{}",
            c.detail
        );
    }

    #[test]
    fn tdx_quote_for_another_nonce_or_without_collateral_fails() {
        let mut other = rd(DCAP_REPORT_DATA);
        other[63] ^= 1;
        let c = check_tee(Some(&dcap_report()), &other, &dcap_trust(), DCAP_NOW);
        assert_eq!(c.status, CheckStatus::Failed);
        assert!(
            c.detail.contains("does not bind this nonce"),
            "{}",
            c.detail
        );
        let c = check_tee(
            Some(&dcap_report()),
            &rd(DCAP_REPORT_DATA),
            &TeeTrust::default(),
            DCAP_NOW,
        );
        assert_eq!(c.status, CheckStatus::Failed);
        assert!(c.detail.contains("--tdx-collateral"), "{}", c.detail);
    }

    #[test]
    fn no_tee_is_skipped_unless_required() {
        let none = TeeReportJson {
            tee: "none".into(),
            ..TeeReportJson::default()
        };
        let c = check_tee(Some(&none), &[0; 64], &TeeTrust::default(), 0);
        assert_eq!(c.status, CheckStatus::Skipped);
        let require = TeeTrust {
            require: true,
            ..TeeTrust::default()
        };
        assert_eq!(
            check_tee(None, &[0; 64], &require, 0).status,
            CheckStatus::Failed
        );
    }
}
