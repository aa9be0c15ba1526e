//! AMD SEV-SNP attestation reports: parsing (SEV-SNP ABI, ATTESTATION_REPORT, 0x4A0 bytes) and
//! verification against AMD's key hierarchy:
//!
//! ARK (AMD Root Key, self-signed, RSA-4096) → ASK (or ASVK for VLEKs) → VCEK/VLEK (ECDSA P-384) →
//! report. Certificates are signed with RSASSA-PSS/SHA-384; the report signature is ECDSA P-384 over
//! SHA-384 of bytes 0x000..0x2A0, with r and s stored little-endian in 72-byte fields.
//!
//! Beyond the signatures, the VCEK's TCB extensions must equal the report's REPORTED_TCB (the VCEK
//! is issued per TCB version: a report claiming another TCB is not what that VCEK signs) and, for a
//! VCEK, its hwID must equal the report's CHIP_ID.

use super::error::{bail, ensure, Classify, Error, Result};
use der::{Decode, DecodePem, Encode};
use rsa::{Pss, RsaPublicKey};
use sha2::{Digest, Sha384};
use x509_cert::Certificate;

/// Size of an ATTESTATION_REPORT.
pub const REPORT_LEN: usize = 0x4A0;
/// Bytes covered by the signature.
const SIGNED_LEN: usize = 0x2A0;
/// Signature: r at 0x2A0, s at 0x2E8, 72 bytes each, little-endian.
const SIG_R: usize = 0x2A0;
const SIG_S: usize = 0x2E8;
const SIG_COMPONENT_LEN: usize = 72;
const P384_SCALAR_LEN: usize = 48;
/// SIG_ALGO 1 = ECDSA P-384 with SHA-384.
const SIG_ALGO_ECDSA_P384_SHA384: u32 = 1;
/// `id-RSASSA-PSS`.
const OID_RSASSA_PSS: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
/// AMD VCEK/VLEK extensions (AMD "Versioned Chip Endorsement Key" spec, Table 8).
const OID_BL_SPL: &str = "1.3.6.1.4.1.3704.1.3.1";
const OID_TEE_SPL: &str = "1.3.6.1.4.1.3704.1.3.2";
const OID_SNP_SPL: &str = "1.3.6.1.4.1.3704.1.3.3";
const OID_UCODE_SPL: &str = "1.3.6.1.4.1.3704.1.3.8";
const OID_FMC_SPL: &str = "1.3.6.1.4.1.3704.1.3.9";
const OID_HW_ID: &str = "1.3.6.1.4.1.3704.1.4";
/// Report flags (0x48): MASK_CHIP_ID bit 1, SIGNING_KEY bits 2–4.
const FLAG_MASK_CHIP_ID: u32 = 1 << 1;
const SIGNING_KEY_SHIFT: u32 = 2;
const SIGNING_KEY_MASK: u32 = 0x7;

/// The fields a verifier uses (offsets per docs/tee.md §1.8 / SEV-SNP ABI Table 22).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpReport {
    pub raw: Vec<u8>,
    pub version: u32,
    pub guest_svn: u32,
    pub policy: u64,
    pub vmpl: u32,
    pub sig_algo: u32,
    pub current_tcb: [u8; 8],
    pub platform_info: u64,
    pub flags: u32,
    pub report_data: [u8; 64],
    pub measurement: [u8; 48],
    pub host_data: [u8; 32],
    pub id_key_digest: [u8; 48],
    pub author_key_digest: [u8; 48],
    pub report_id: [u8; 32],
    pub reported_tcb: [u8; 8],
    pub chip_id: [u8; 64],
    pub committed_tcb: [u8; 8],
    pub launch_tcb: [u8; 8],
}

/// Which key signed the report (flags.SIGNING_KEY).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningKey {
    Vcek,
    Vlek,
    None,
}

/// AMD product generation, from the ARK's common name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    Milan,
    Genoa,
    Turin,
}

impl Product {
    pub fn name(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }
}

fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(arr(b, at))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(arr(b, at))
}

impl SnpReport {
    pub fn parse(b: &[u8]) -> Result<Self> {
        ensure!(
            b.len() == REPORT_LEN,
            Malformed,
            "an SEV-SNP report has {REPORT_LEN} bytes, this one {}",
            b.len()
        );
        let r = SnpReport {
            raw: b.to_vec(),
            version: le32(b, 0x00),
            guest_svn: le32(b, 0x04),
            policy: le64(b, 0x08),
            vmpl: le32(b, 0x30),
            sig_algo: le32(b, 0x34),
            current_tcb: arr(b, 0x38),
            platform_info: le64(b, 0x40),
            flags: le32(b, 0x48),
            report_data: arr(b, 0x50),
            measurement: arr(b, 0x90),
            host_data: arr(b, 0xC0),
            id_key_digest: arr(b, 0xE0),
            author_key_digest: arr(b, 0x110),
            report_id: arr(b, 0x140),
            reported_tcb: arr(b, 0x180),
            chip_id: arr(b, 0x1A0),
            committed_tcb: arr(b, 0x1E0),
            launch_tcb: arr(b, 0x1F0),
        };
        ensure!(
            (2..=5).contains(&r.version),
            Unsupported,
            "SEV-SNP report version {} is not supported (2, 3 or 5)",
            r.version
        );
        Ok(r)
    }

    pub fn signing_key(&self) -> SigningKey {
        match (self.flags >> SIGNING_KEY_SHIFT) & SIGNING_KEY_MASK {
            0 => SigningKey::Vcek,
            1 => SigningKey::Vlek,
            _ => SigningKey::None,
        }
    }

    /// r and s as big-endian P-384 scalars.
    fn signature(&self) -> Result<p384::ecdsa::Signature> {
        let be = |at: usize| -> Result<[u8; P384_SCALAR_LEN]> {
            let le = &self.raw[at..at + SIG_COMPONENT_LEN];
            ensure!(
                le[P384_SCALAR_LEN..].iter().all(|&b| b == 0),
                Malformed,
                "report signature component is wider than P-384"
            );
            let mut out: [u8; P384_SCALAR_LEN] = arr(le, 0);
            out.reverse();
            Ok(out)
        };
        p384::ecdsa::Signature::from_scalars(be(SIG_R)?, be(SIG_S)?)
            .or_err(Error::Malformed, "report signature scalars out of range")
    }
}

/// The AMD chain for one product: ARK and ASK (or ASVK), both checked.
#[derive(Debug, Clone)]
pub struct AmdChain {
    pub product: Product,
    pub ark: Certificate,
    /// ASK (VCEK chains) or ASVK (VLEK chains).
    pub ask: Certificate,
    pub is_vlek_chain: bool,
}

fn common_name(cert: &Certificate) -> Result<String> {
    const OID_CN: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("2.5.4.3");
    for rdn in cert.tbs_certificate.subject.0.iter() {
        for atv in rdn.0.iter() {
            if atv.oid == OID_CN {
                let s = der::asn1::Utf8StringRef::try_from(&atv.value)
                    .map(|s| s.as_str().to_string())
                    .or_else(|_| {
                        der::asn1::PrintableStringRef::try_from(&atv.value)
                            .map(|s| s.as_str().to_string())
                    })
                    .or_else(|_| {
                        der::asn1::Ia5StringRef::try_from(&atv.value)
                            .map(|s| s.as_str().to_string())
                    })
                    .or_err(
                        Error::CertificateChain,
                        "certificate common name is not a string",
                    )?;
                return Ok(s);
            }
        }
    }
    bail!(CertificateChain, "certificate has no common name")
}

/// Checks `cert`'s RSASSA-PSS/SHA-384 signature with `issuer`'s RSA key.
fn verify_rsa_pss(cert: &Certificate, issuer: &Certificate, what: &str) -> Result<()> {
    ensure!(
        cert.signature_algorithm.oid == OID_RSASSA_PSS,
        CertificateChain,
        "{what}: signature algorithm {} is not RSASSA-PSS",
        cert.signature_algorithm.oid
    );
    use rsa::pkcs8::DecodePublicKey;
    let spki = issuer
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .or_err(Error::Malformed, "issuer public key")?;
    let key = RsaPublicKey::from_public_key_der(&spki)
        .or_err_with(Error::CertificateChain, || {
            format!("{what}: issuer key is not RSA")
        })?;
    let tbs = cert
        .tbs_certificate
        .to_der()
        .or_err(Error::Malformed, "re-encoding TBSCertificate")?;
    let sig = cert
        .signature
        .as_bytes()
        .or_err(Error::Malformed, "signature BIT STRING has unused bits")?;
    key.verify(Pss::new::<Sha384>(), &Sha384::digest(&tbs), sig)
        .or_err_with(Error::CertificateChain, || {
            format!("{what}: RSA-PSS signature does not verify")
        })
}

/// Certificate validity at `at_unix` (seconds).
fn check_validity(cert: &Certificate, at_unix: u64, what: &str) -> Result<()> {
    let v = &cert.tbs_certificate.validity;
    let (nb, na) = (
        v.not_before.to_unix_duration().as_secs(),
        v.not_after.to_unix_duration().as_secs(),
    );
    ensure!(
        (nb..=na).contains(&at_unix),
        CertificateChain,
        "{what} is valid from {} to {} (unix), not at {at_unix}",
        nb,
        na
    );
    Ok(())
}

/// AMD's root keys, as published by the KDS (`/vcek/v1/{product}/cert_chain`, second certificate):
/// a chain is only trusted when its ARK is one of these, byte for byte.
const PINNED_ARKS: [(Product, &str); 3] = [
    (Product::Milan, include_str!("amd/ark-milan.pem")),
    (Product::Genoa, include_str!("amd/ark-genoa.pem")),
    (Product::Turin, include_str!("amd/ark-turin.pem")),
];

/// The ARK must be AMD's for `product`, not merely self-signed with the right name.
fn check_pinned_ark(ark: &Certificate, product: Product) -> Result<()> {
    let (_, pem) = PINNED_ARKS
        .iter()
        .find(|(p, _)| *p == product)
        .or_err(Error::CertificateChain, "no pinned ARK for this product")?;
    let pinned =
        Certificate::from_pem(pem.as_bytes()).or_err(Error::Malformed, "the pinned ARK")?;
    ensure!(
        ark.to_der()
            .or_err(Error::Malformed, "re-encoding the ARK")?
            == pinned.to_der().or_err(Error::Malformed, "the pinned ARK")?,
        CertificateChain,
        "the chain's ARK-{} is not AMD's published ARK-{}",
        product.name(),
        product.name()
    );
    Ok(())
}

/// Parses and checks a KDS `cert_chain` (PEM: ASK/ASVK then ARK): see [`verify_chain_certs`].
pub fn verify_chain(pem: &[u8]) -> Result<AmdChain> {
    let certs = Certificate::load_pem_chain(pem)
        .or_err(Error::Malformed, "parsing the AMD certificate chain PEM")?;
    let [ask, ark] = <[Certificate; 2]>::try_from(certs).map_err(|c| {
        Error::Malformed(format!(
            "an AMD cert_chain has 2 certificates (ASK, ARK), this one {}",
            c.len()
        ))
    })?;
    verify_chain_certs(ask, ark)
}

/// Checks an ASK/ASVK and ARK: the ARK is AMD's pinned root of its product and self-signed,
/// ARK → ASK, names `ARK-<P>` and `SEV-<P>` / `SEV-VLEK-<P>`.
pub fn verify_chain_certs(ask: Certificate, ark: Certificate) -> Result<AmdChain> {
    let ark_cn = common_name(&ark)?;
    let product = match ark_cn.as_str() {
        "ARK-Milan" => Product::Milan,
        "ARK-Genoa" => Product::Genoa,
        "ARK-Turin" => Product::Turin,
        other => bail!(
            CertificateChain,
            "root common name {other:?} is not an AMD ARK (ARK-Milan/Genoa/Turin)"
        ),
    };
    check_pinned_ark(&ark, product)?;
    let ask_cn = common_name(&ask)?;
    let is_vlek_chain = ask_cn == format!("SEV-VLEK-{}", product.name());
    ensure!(
        is_vlek_chain || ask_cn == format!("SEV-{}", product.name()),
        CertificateChain,
        "intermediate {ask_cn:?} does not belong to {ark_cn}"
    );
    verify_rsa_pss(&ark, &ark, "ARK self-signature")?;
    verify_rsa_pss(&ask, &ark, "ARK → ASK")?;
    Ok(AmdChain {
        product,
        ark,
        ask,
        is_vlek_chain,
    })
}

/// What a verified report proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSnp {
    pub product: Product,
    pub signing_key: SigningKey,
    pub measurement: [u8; 48],
    pub report_data: [u8; 64],
}

fn extension<'a>(cert: &'a Certificate, oid: &str) -> Option<&'a [u8]> {
    let oid = der::asn1::ObjectIdentifier::new(oid).ok()?;
    cert.tbs_certificate
        .extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id == oid)
        .map(|e| e.extn_value.as_bytes())
}

fn extension_u8(cert: &Certificate, oid: &str) -> Result<u8> {
    let v = extension(cert, oid).or_err_with(Error::CertificateChain, || {
        format!("VCEK lacks extension {oid}")
    })?;
    u8::from_der(v).or_err_with(Error::Malformed, || {
        format!("VCEK extension {oid} is not a small INTEGER")
    })
}

/// The VCEK/VLEK TCB extensions must equal REPORTED_TCB.
fn check_tcb(report: &SnpReport, vcek: &Certificate, product: Product) -> Result<()> {
    let t = report.reported_tcb;
    // Milan/Genoa: [bl, tee, rsvd×4, snp, ucode]; Turin: [fmc, bl, tee, rsvd×3, snp, ucode].
    let mut want = vec![
        (OID_SNP_SPL, t[6], "SNP"),
        (OID_UCODE_SPL, t[7], "microcode"),
    ];
    match product {
        Product::Turin => want.extend([
            (OID_FMC_SPL, t[0], "FMC"),
            (OID_BL_SPL, t[1], "boot loader"),
            (OID_TEE_SPL, t[2], "TEE"),
        ]),
        _ => want.extend([
            (OID_BL_SPL, t[0], "boot loader"),
            (OID_TEE_SPL, t[1], "TEE"),
        ]),
    }
    for (oid, reported, what) in want {
        let certified = extension_u8(vcek, oid)?;
        ensure!(
            certified == reported,
            Tcb,
            "REPORTED_TCB {what} SPL {reported} differs from the VCEK's {certified}: the report \
             does not come from the TCB this VCEK certifies"
        );
    }
    Ok(())
}

/// Verifies `report` with the VCEK/VLEK `cert_der` issued under `chain`, at time `at_unix`.
pub fn verify_report(
    report: &SnpReport,
    cert_der: &[u8],
    chain: &AmdChain,
    at_unix: u64,
) -> Result<VerifiedSnp> {
    ensure!(
        report.sig_algo == SIG_ALGO_ECDSA_P384_SHA384,
        Unsupported,
        "report SIG_ALGO {} is not ECDSA P-384/SHA-384",
        report.sig_algo
    );
    let signing_key = report.signing_key();
    match (signing_key, chain.is_vlek_chain) {
        (SigningKey::Vcek, false) | (SigningKey::Vlek, true) => {}
        (SigningKey::None, _) => bail!(Signature, "the report is unsigned (SIGNING_KEY = none)"),
        (k, _) => bail!(
            CertificateChain,
            "the report is signed by a {k:?} but the chain is for the other key type"
        ),
    }
    let cert = Certificate::from_der(cert_der)
        .or_err(Error::Malformed, "parsing the VCEK/VLEK certificate")?;
    verify_rsa_pss(&cert, &chain.ask, "ASK → VCEK/VLEK")?;
    check_validity(&chain.ark, at_unix, "the ARK")?;
    check_validity(&chain.ask, at_unix, "the ASK/ASVK")?;
    check_validity(&cert, at_unix, "the VCEK/VLEK")?;
    use p384::pkcs8::DecodePublicKey;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .or_err(Error::Malformed, "VCEK public key")?;
    let key = p384::ecdsa::VerifyingKey::from_public_key_der(&spki).or_err(
        Error::CertificateChain,
        "the VCEK/VLEK key is not ECDSA P-384",
    )?;
    use p384::ecdsa::signature::Verifier;
    key.verify(&report.raw[..SIGNED_LEN], &report.signature()?)
        .or_err(
            Error::Signature,
            "the report signature does not verify with the VCEK/VLEK",
        )?;
    check_tcb(report, &cert, chain.product)?;
    if signing_key == SigningKey::Vcek && report.flags & FLAG_MASK_CHIP_ID == 0 {
        let hw_id =
            extension(&cert, OID_HW_ID).or_err(Error::CertificateChain, "VCEK lacks hwID")?;
        let hw_id = der::asn1::OctetStringRef::from_der(hw_id)
            .map(|o| o.as_bytes().to_vec())
            .unwrap_or_else(|_| hw_id.to_vec());
        ensure!(
            hw_id == report.chip_id,
            CertificateChain,
            "the report's CHIP_ID is not the VCEK's hwID: another chip's VCEK"
        );
    }
    Ok(VerifiedSnp {
        product: chain.product,
        signing_key,
        measurement: report.measurement,
        report_data: report.report_data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of the shared SEV-SNP testdata.
    fn testdata(rel: &str) -> Vec<u8> {
        crate::testutil::testdata(&format!("sev-snp/{rel}"))
    }

    /// 2024-06-01T00:00:00Z: inside every VCEK's validity except the VLEK's (2024-12-10 – 2025-12-10).
    const JUNE_2024: u64 = 1_717_200_000;
    /// 2025-06-01T00:00:00Z: inside the VLEK's validity.
    const JUNE_2025: u64 = 1_748_736_000;

    fn chain(name: &str) -> AmdChain {
        verify_chain(&testdata(&format!("kds-cert-chain-{name}.pem"))).unwrap()
    }

    fn virtee() -> (SnpReport, Vec<u8>) {
        let hex_text = String::from_utf8(testdata("milan-vcek-report-virtee.hex")).unwrap();
        let report = SnpReport::parse(&hex::decode(hex_text.trim()).unwrap()).unwrap();
        (report, testdata("milan-vcek-virtee.der"))
    }

    #[test]
    fn all_kds_chains_verify() {
        for (name, product, vlek) in [
            ("milan-vcek", Product::Milan, false),
            ("milan-vlek", Product::Milan, true),
            ("genoa-vcek", Product::Genoa, false),
            ("genoa-vlek", Product::Genoa, true),
            ("turin-vcek", Product::Turin, false),
            ("turin-vlek", Product::Turin, true),
        ] {
            let c = chain(name);
            assert_eq!((c.product, c.is_vlek_chain), (product, vlek), "{name}");
        }
    }

    #[test]
    fn virtee_milan_report() {
        let (report, vcek) = virtee();
        assert_eq!(report.version, 2);
        assert_eq!(report.policy, 0x30000);
        assert_eq!(
            hex::encode(report.measurement),
            "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f"
        );
        assert_eq!(hex::encode(report.reported_tcb), "0300000000000873");
        let v = verify_report(&report, &vcek, &chain("milan-vcek"), JUNE_2024).unwrap();
        assert_eq!(v.signing_key, SigningKey::Vcek);
        // SOURCES.md: vcek[40] ^= 0xff breaks the chain; report[21] ^= 0x80 breaks the signature.
        let mut bad_vcek = vcek.clone();
        bad_vcek[40] ^= 0xff;
        assert!(verify_report(&report, &bad_vcek, &chain("milan-vcek"), JUNE_2024).is_err());
        let mut raw = report.raw.clone();
        raw[21] ^= 0x80;
        let e = verify_report(
            &SnpReport::parse(&raw).unwrap(),
            &vcek,
            &chain("milan-vcek"),
            JUNE_2024,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("report signature"), "{e:#}");
        // The Milan VCEK does not chain to Genoa's ASK.
        assert!(verify_report(&report, &vcek, &chain("genoa-vcek"), JUNE_2024).is_err());
    }

    #[test]
    fn gosevguest_milan_report() {
        let report = SnpReport::parse(&testdata("milan-vcek-report-gosevguest.bin")).unwrap();
        let vcek = testdata("milan-vcek-gosevguest.der");
        // SOURCES.md: verified at 2022-09-24T01:00:00Z.
        let v = verify_report(&report, &vcek, &chain("milan-vcek"), 1_663_981_200).unwrap();
        assert_eq!(&v.report_data[..5], &[1, 2, 3, 4, 5]);
        assert!(v.report_data[5..].iter().all(|&b| b == 0));
        assert_eq!(
            hex::encode(v.measurement),
            "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01"
        );
        assert_eq!(report.policy, 0xb0000);
        // Before the VCEK's validity (2022-09-24T00:55:28Z).
        let e = verify_report(&report, &vcek, &chain("milan-vcek"), 1_663_980_000).unwrap_err();
        assert!(format!("{e:#}").contains("VCEK/VLEK is valid"), "{e:#}");
    }

    #[test]
    fn trustee_idblock_report() {
        let report = SnpReport::parse(&testdata("milan-vcek-report-idblock-trustee.bin")).unwrap();
        let vcek = testdata("milan-vcek-trustee.der");
        let c = chain("milan-vcek");
        verify_report(&report, &vcek, &c, JUNE_2024).unwrap();
        assert_eq!(report.guest_svn, 4);
        assert_eq!(report.policy, 0x3001f);
        assert_eq!(
            hex::encode(report.id_key_digest),
            "0356215882a825279a85b300b0b742931d113bf7e32dde2e50ffde7ec743ca491ecdd7f336dc28a6e0b2bb57af7a44a3"
        );
        let tamper = |at: usize| {
            let mut raw = report.raw.clone();
            raw[at] = raw[at].wrapping_add(1);
            verify_report(&SnpReport::parse(&raw).unwrap(), &vcek, &c, JUNE_2024).is_err()
        };
        assert!(tamper(42), "report[42] += 1 must fail the signature");
        assert!(tamper(384), "report[384] += 1 (reported_tcb) must fail");
        let mut bad_vcek = vcek.clone();
        bad_vcek[42] = bad_vcek[42].wrapping_add(1);
        assert!(verify_report(&report, &bad_vcek, &c, JUNE_2024).is_err());
        // The TCB check on its own (the signature check above would also catch byte 384).
        let cert = Certificate::from_der(&vcek).unwrap();
        check_tcb(&report, &cert, Product::Milan).unwrap();
        let mut other_tcb = report.clone();
        other_tcb.reported_tcb[6] += 1;
        let e = check_tcb(&other_tcb, &cert, Product::Milan).unwrap_err();
        assert!(e.to_string().contains("SNP SPL"), "{e}");
    }

    #[test]
    fn trustee_vlek_report() {
        let report = SnpReport::parse(&testdata("milan-vlek-report-trustee.bin")).unwrap();
        let vlek = testdata("milan-vlek-trustee.der");
        assert_eq!((report.version, report.vmpl), (3, 1));
        assert_eq!(report.signing_key(), SigningKey::Vlek);
        assert!(report.chip_id.iter().all(|&b| b == 0));
        let c = chain("milan-vlek");
        let v = verify_report(&report, &vlek, &c, JUNE_2025).unwrap();
        assert_eq!(v.signing_key, SigningKey::Vlek);
        // Outside the VLEK's one-year validity.
        assert!(verify_report(&report, &vlek, &c, JUNE_2024).is_err());
        // A VLEK-signed report with the VCEK chain is refused.
        assert!(verify_report(&report, &vlek, &chain("milan-vcek"), JUNE_2025).is_err());
        let mut raw = report.raw.clone();
        raw[42] = raw[42].wrapping_add(1);
        assert!(verify_report(&SnpReport::parse(&raw).unwrap(), &vlek, &c, JUNE_2025).is_err());
    }

    #[test]
    fn turin_vcek_chains() {
        let cert = Certificate::from_der(&testdata("turin-vcek-virtee.der")).unwrap();
        let c = chain("turin-vcek");
        verify_rsa_pss(&cert, &c.ask, "ASK → VCEK").unwrap();
        assert!(verify_rsa_pss(&cert, &chain("milan-vcek").ask, "ASK → VCEK").is_err());
    }

    #[test]
    fn malformed_inputs() {
        assert!(SnpReport::parse(&[0; 100]).is_err());
        assert!(SnpReport::parse(&[0; REPORT_LEN]).is_err(), "version 0");
        let pem = testdata("kds-cert-chain-milan-vcek.pem");
        let end = b"-----END CERTIFICATE-----";
        let first_end = pem.windows(end.len()).position(|w| w == end).unwrap() + end.len();
        assert!(verify_chain(&pem[..first_end]).is_err(), "ASK alone");
    }
}
