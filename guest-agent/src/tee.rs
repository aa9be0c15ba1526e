//! TEE attestation reports: SEV-SNP and TDX through the kernel's configfs-tsm interface, SEV-SNP
//! through `/dev/sev-guest` on kernels without it (configfs-tsm serves SNP from Linux 6.7, TDX from 6.7).
//!
//! configfs-tsm (Documentation/ABI/testing/configfs-tsm): `mkdir /sys/kernel/config/tsm/report/X`,
//! write the 64-byte report data to `X/inblob`, read the report from `X/outblob`, the provider name
//! (`sev_guest`, `tdx_guest`) from `X/provider`, optional certificates from `X/auxblob`, then
//! `rmdir X`. `X/generation` counts writes to the entry: read before and after to detect another
//! writer racing us on the same entry (we create a private one, so it is a consistency check only).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};

/// Where configfs-tsm report entries are created.
pub const CONFIGFS_TSM_REPORT: &str = "/sys/kernel/config/tsm/report";
/// The SEV-SNP guest device (Linux ≥ 5.19).
pub const SEV_GUEST_DEVICE: &str = "/dev/sev-guest";
/// Size of the report data both TEEs sign (SNP REPORT_DATA, TDX REPORTDATA).
pub const REPORT_DATA_LEN: usize = 64;
/// An SNP ATTESTATION_REPORT (SEV-SNP ABI Table 22).
pub const SNP_REPORT_LEN: usize = 0x4A0;

/// Which TEE produced a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TeeType {
    None,
    SevSnp,
    Tdx,
}

impl TeeType {
    /// The name the collaterals' `tee_report.type` carries (as serialised).
    pub fn name(self) -> &'static str {
        match self {
            TeeType::None => "none",
            TeeType::SevSnp => "sev-snp",
            TeeType::Tdx => "tdx",
        }
    }
}

/// A report with the data it binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeeReport {
    pub tee: TeeType,
    /// Interface that produced it: "configfs-tsm:<provider>" or "sev-guest".
    pub source: String,
    /// SNP: ATTESTATION_REPORT (1184 bytes); TDX: the TD quote.
    pub report: Vec<u8>,
    /// configfs-tsm `auxblob` (SNP: the host-provided certificate table), if any.
    pub aux: Option<Vec<u8>>,
}

/// Where to look for a TEE; tests point the paths elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeeSource {
    pub configfs_tsm: PathBuf,
    pub sev_guest: PathBuf,
}

impl Default for TeeSource {
    fn default() -> Self {
        TeeSource {
            configfs_tsm: PathBuf::from(CONFIGFS_TSM_REPORT),
            sev_guest: PathBuf::from(SEV_GUEST_DEVICE),
        }
    }
}

impl TeeSource {
    /// A report binding `report_data`, or `Ok(None)` when this VM has no TEE interface.
    pub fn report(&self, report_data: &[u8; REPORT_DATA_LEN]) -> Result<Option<TeeReport>> {
        if self.configfs_tsm.is_dir() {
            return configfs_tsm_report(&self.configfs_tsm, report_data).map(Some);
        }
        if self.sev_guest.exists() {
            return sev_guest_report(&self.sev_guest, report_data).map(Some);
        }
        Ok(None)
    }
}

/// Maps configfs-tsm's provider name to a TEE.
pub fn tee_of_provider(provider: &str) -> TeeType {
    match provider.trim() {
        "sev_guest" => TeeType::SevSnp,
        "tdx_guest" => TeeType::Tdx,
        _ => TeeType::None,
    }
}

/// Distinguishes this process's configfs-tsm entries from each other.
static ENTRY_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Removes the configfs entry when the report has been read (or reading failed).
struct Entry(PathBuf);

impl Drop for Entry {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn read_generation(entry: &Path) -> Result<String> {
    let p = entry.join("generation");
    Ok(std::fs::read_to_string(&p)
        .with_context(|| format!("reading {}", p.display()))?
        .trim()
        .to_string())
}

/// One configfs-tsm report request in a private entry.
pub fn configfs_tsm_report(root: &Path, report_data: &[u8; REPORT_DATA_LEN]) -> Result<TeeReport> {
    let name = format!(
        "cvm-agent-{}-{}",
        std::process::id(),
        ENTRY_COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let entry = Entry(root.join(name));
    std::fs::create_dir(&entry.0)
        .with_context(|| format!("creating configfs-tsm entry {}", entry.0.display()))?;
    let inblob = entry.0.join("inblob");
    std::fs::write(&inblob, report_data)
        .with_context(|| format!("writing report data to {}", inblob.display()))?;
    let generation = read_generation(&entry.0)?;
    let outblob = entry.0.join("outblob");
    let report = std::fs::read(&outblob).with_context(|| {
        format!(
            "reading {} (does the TEE firmware answer report requests?)",
            outblob.display()
        )
    })?;
    let provider_path = entry.0.join("provider");
    let provider = std::fs::read_to_string(&provider_path)
        .with_context(|| format!("reading {}", provider_path.display()))?;
    // auxblob exists only for providers with certificates, and may be empty.
    let aux = std::fs::read(entry.0.join("auxblob"))
        .ok()
        .filter(|a| !a.is_empty());
    if read_generation(&entry.0)? != generation {
        bail!(
            "configfs-tsm entry {} was written concurrently; retry",
            entry.0.display()
        );
    }
    let tee = tee_of_provider(&provider);
    if tee == TeeType::None {
        bail!(
            "configfs-tsm provider {:?} is not SEV-SNP or TDX",
            provider.trim()
        );
    }
    Ok(TeeReport {
        tee,
        source: format!("configfs-tsm:{}", provider.trim()),
        report,
        aux,
    })
}

/// `struct snp_report_req` (include/uapi/linux/sev-guest.h): user_data[64], vmpl u32, rsvd[28].
const SNP_REPORT_REQ_LEN: usize = 96;
/// `struct snp_report_resp`: data[4000], holding MSG_REPORT_RSP.
const SNP_REPORT_RESP_LEN: usize = 4000;
/// MSG_REPORT_RSP (SEV-SNP ABI Table 25): status u32, report_size u32, reserved[24], report.
const MSG_REPORT_RSP_HEADER: usize = 32;
/// `SNP_GET_REPORT` = _IOWR('S', 0x0, struct snp_guest_request_ioctl) with a 32-byte argument.
const SNP_GET_REPORT: libc::c_ulong = 0xC020_5300;
/// Guest message version the ioctl expects.
const SNP_MSG_VERSION: u8 = 1;

/// `struct snp_guest_request_ioctl`.
#[repr(C)]
struct SnpGuestRequestIoctl {
    msg_version: u8,
    req_data: u64,
    resp_data: u64,
    exitinfo2: u64,
}

/// SNP_GET_REPORT on `/dev/sev-guest` (VMPL 0).
pub fn sev_guest_report(device: &Path, report_data: &[u8; REPORT_DATA_LEN]) -> Result<TeeReport> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .with_context(|| format!("opening {}", device.display()))?;
    let mut req = [0u8; SNP_REPORT_REQ_LEN];
    req[..REPORT_DATA_LEN].copy_from_slice(report_data);
    let mut resp = vec![0u8; SNP_REPORT_RESP_LEN];
    let mut arg = SnpGuestRequestIoctl {
        msg_version: SNP_MSG_VERSION,
        req_data: req.as_ptr() as u64,
        resp_data: resp.as_mut_ptr() as u64,
        exitinfo2: 0,
    };
    // SAFETY: the request and response buffers outlive the call and have the sizes the kernel's
    // sev-guest driver copies (sizeof snp_report_req / snp_report_resp); `arg` matches the uapi struct.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), SNP_GET_REPORT, &mut arg) };
    if rc != 0 {
        bail!(
            "SNP_GET_REPORT on {}: {} (firmware error {:#x})",
            device.display(),
            std::io::Error::last_os_error(),
            arg.exitinfo2
        );
    }
    let report = parse_msg_report_rsp(&resp)?;
    Ok(TeeReport {
        tee: TeeType::SevSnp,
        source: "sev-guest".into(),
        report,
        aux: None,
    })
}

/// The report inside a MSG_REPORT_RSP, after checking its status and size.
pub fn parse_msg_report_rsp(resp: &[u8]) -> Result<Vec<u8>> {
    if resp.len() < MSG_REPORT_RSP_HEADER + SNP_REPORT_LEN {
        bail!("MSG_REPORT_RSP: {} bytes is too short", resp.len());
    }
    let status = u32::from_le_bytes([resp[0], resp[1], resp[2], resp[3]]);
    let size = u32::from_le_bytes([resp[4], resp[5], resp[6], resp[7]]) as usize;
    if status != 0 {
        bail!("MSG_REPORT_RSP: firmware status {status:#x}");
    }
    if size != SNP_REPORT_LEN {
        bail!("MSG_REPORT_RSP: report_size {size}, expected {SNP_REPORT_LEN}");
    }
    Ok(resp[MSG_REPORT_RSP_HEADER..MSG_REPORT_RSP_HEADER + size].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers() {
        assert_eq!(tee_of_provider("sev_guest\n"), TeeType::SevSnp);
        assert_eq!(tee_of_provider("tdx_guest"), TeeType::Tdx);
        assert_eq!(tee_of_provider("arm_cca_guest"), TeeType::None);
    }

    #[test]
    fn absent_interfaces_mean_no_tee() {
        let src = TeeSource {
            configfs_tsm: "/nonexistent/tsm/report".into(),
            sev_guest: "/nonexistent/sev-guest".into(),
        };
        assert_eq!(src.report(&[0; 64]).unwrap(), None);
    }

    #[test]
    fn ioctl_argument_matches_uapi_size() {
        // _IOC_SIZE(SNP_GET_REPORT) is bits 16..29.
        assert_eq!(
            ((SNP_GET_REPORT >> 16) & 0x3FFF) as usize,
            std::mem::size_of::<SnpGuestRequestIoctl>()
        );
    }

    #[test]
    fn msg_report_rsp() {
        let mut resp = vec![0u8; SNP_REPORT_RESP_LEN];
        resp[4..8].copy_from_slice(&(SNP_REPORT_LEN as u32).to_le_bytes());
        resp[MSG_REPORT_RSP_HEADER] = 2; // report VERSION
        let r = parse_msg_report_rsp(&resp).unwrap();
        assert_eq!((r.len(), r[0]), (SNP_REPORT_LEN, 2));
        resp[0] = 0x16; // INVALID_PARAM
        assert!(parse_msg_report_rsp(&resp).is_err());
    }

    /// A directory that is not configfs: mkdir works but there are no kernel attributes, so the
    /// request fails with an error naming the missing one.
    #[test]
    fn configfs_without_kernel_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let e = configfs_tsm_report(dir.path(), &[1; 64]).unwrap_err();
        assert!(format!("{e:#}").contains("generation"), "{e:#}");
    }
}
