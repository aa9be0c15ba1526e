//! Device-mapper control ioctls (`include/uapi/linux/dm-ioctl.h`), just enough to create a
//! read-only single-target device: DM_DEV_CREATE → DM_TABLE_LOAD → DM_DEV_SUSPEND (resume).
//!
//! `dm-mod.create=` cannot be used (Debian builds DM as a module, DM_INIT is unset) and libdevmapper
//! is a C library with udev assumptions, so the init speaks the ioctl protocol directly. Buffers are
//! built byte by byte at the offsets of `struct dm_ioctl` so the layout is visible and testable.

use std::ffi::c_void;
use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use rustix::fs::{FileType, Mode};
use rustix::ioctl::{Ioctl, IoctlOutput, Opcode};

/// The control node (misc major 10, minor 236 = MAPPER_CTRL_MINOR).
pub const CONTROL_PATH: &str = "/dev/mapper/control";
const MISC_MAJOR: u32 = 10;
const MAPPER_CTRL_MINOR: u32 = 236;

/// `DM_IOCTL` type byte.
const DM_IOCTL_TYPE: u32 = 0xfd;
/// `DM_DEV_CREATE_CMD`.
const DM_DEV_CREATE_CMD: u32 = 3;
/// `DM_DEV_SUSPEND_CMD` (without DM_SUSPEND_FLAG: resume).
const DM_DEV_SUSPEND_CMD: u32 = 6;
/// `DM_TABLE_LOAD_CMD`.
const DM_TABLE_LOAD_CMD: u32 = 9;
/// `sizeof(struct dm_ioctl)`.
const DM_IOCTL_SIZE: usize = 312;
/// `sizeof(struct dm_target_spec)`.
const DM_TARGET_SPEC_SIZE: usize = 40;
/// Interface version we speak (`DM_VERSION_MAJOR` 4; minor 0 = oldest we need).
const DM_VERSION: [u32; 3] = [4, 0, 0];
/// `DM_READONLY_FLAG`.
pub const DM_READONLY_FLAG: u32 = 1 << 0;
/// `DM_NAME_LEN` (including NUL).
const DM_NAME_LEN: usize = 128;
/// `DM_MAX_TYPE_NAME` (target type field).
const DM_MAX_TYPE_NAME: usize = 16;
/// Buffer for every command: room for the header and a verity table line, and for the kernel's
/// reply (it writes the header back; DEV_CREATE/RESUME may append a name list for events).
const DM_BUFFER_SIZE: usize = 16 * 1024;

// Offsets in struct dm_ioctl.
const OFF_VERSION: usize = 0;
const OFF_DATA_SIZE: usize = 12;
const OFF_DATA_START: usize = 16;
const OFF_TARGET_COUNT: usize = 20;
const OFF_FLAGS: usize = 28;
const OFF_DEV: usize = 40;
const OFF_NAME: usize = 48;

/// `_IOWR(0xfd, cmd, struct dm_ioctl)`.
pub const fn dm_opcode(cmd: u32) -> Opcode {
    rustix::ioctl::opcode::read_write::<[u8; DM_IOCTL_SIZE]>(DM_IOCTL_TYPE as u8, cmd as u8)
}

/// A `struct dm_ioctl` (+ payload) request buffer.
pub struct DmRequest {
    cmd: u32,
    buf: Vec<u8>,
}

impl DmRequest {
    /// Header for `cmd` on device `name` with `flags`; no payload.
    pub fn new(cmd: u32, name: &str, flags: u32) -> Result<Self> {
        ensure!(
            !name.is_empty() && name.len() < DM_NAME_LEN && !name.contains(['/', '\0']),
            "invalid device-mapper name {name:?}"
        );
        let mut buf = vec![0u8; DM_BUFFER_SIZE];
        for (i, v) in DM_VERSION.iter().enumerate() {
            put32(&mut buf, OFF_VERSION + 4 * i, *v);
        }
        put32(&mut buf, OFF_DATA_SIZE, DM_BUFFER_SIZE as u32);
        put32(&mut buf, OFF_DATA_START, DM_IOCTL_SIZE as u32);
        put32(&mut buf, OFF_FLAGS, flags);
        buf[OFF_NAME..OFF_NAME + name.len()].copy_from_slice(name.as_bytes());
        Ok(DmRequest { cmd, buf })
    }

    /// Adds the single target `[0, sectors)` of `target_type` with `params` (TABLE_LOAD payload:
    /// one `struct dm_target_spec` followed by the NUL-terminated parameter string).
    pub fn with_target(mut self, sectors: u64, target_type: &str, params: &str) -> Result<Self> {
        ensure!(target_type.len() < DM_MAX_TYPE_NAME, "target type too long");
        let spec = DM_IOCTL_SIZE;
        let params_at = spec + DM_TARGET_SPEC_SIZE;
        let end = params_at + params.len() + 1;
        ensure!(end <= self.buf.len(), "device-mapper table line too long");
        put64(&mut self.buf, spec, 0); // sector_start
        put64(&mut self.buf, spec + 8, sectors); // length
        put32(&mut self.buf, spec + 16, 0); // status
        let next = (end - spec).next_multiple_of(8);
        put32(&mut self.buf, spec + 20, next as u32); // next: offset of a following spec
        self.buf[spec + 24..spec + 24 + target_type.len()].copy_from_slice(target_type.as_bytes());
        self.buf[params_at..params_at + params.len()].copy_from_slice(params.as_bytes());
        put32(&mut self.buf, OFF_TARGET_COUNT, 1);
        Ok(self)
    }

    /// The request bytes (for tests).
    #[cfg(test)]
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Issues the ioctl on the control fd; returns the (kernel-updated) buffer.
    fn issue(mut self, control: &File, what: &str) -> Result<Vec<u8>> {
        let op = DmIoctl {
            opcode: dm_opcode(self.cmd),
            buf: &mut self.buf,
        };
        // SAFETY: the opcode is a DM command taking a `struct dm_ioctl` buffer whose data_size
        // (DM_BUFFER_SIZE) is exactly the length of `buf`, which outlives the call.
        unsafe { rustix::ioctl::ioctl(control.as_fd(), op) }
            .with_context(|| format!("device-mapper {what} ioctl"))?;
        Ok(self.buf)
    }
}

/// The rustix [`Ioctl`] for a DM request buffer.
struct DmIoctl<'a> {
    opcode: Opcode,
    buf: &'a mut [u8],
}

// SAFETY: `as_ptr` points at a buffer of `data_size` bytes laid out as `struct dm_ioctl`; the
// kernel reads and writes only within data_size.
unsafe impl Ioctl for DmIoctl<'_> {
    type Output = ();
    const IS_MUTATING: bool = true;
    fn opcode(&self) -> Opcode {
        self.opcode
    }
    fn as_ptr(&mut self) -> *mut c_void {
        self.buf.as_mut_ptr().cast()
    }
    unsafe fn output_from_ptr(_: IoctlOutput, _: *mut c_void) -> rustix::io::Result<()> {
        Ok(())
    }
}

fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}
fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

/// Opens `/dev/mapper/control`, creating the node if devtmpfs did not (it normally does when dm-mod
/// registers its misc device as "mapper/control").
pub fn open_control() -> Result<File> {
    if !Path::new(CONTROL_PATH).exists() {
        std::fs::create_dir_all("/dev/mapper").context("creating /dev/mapper")?;
        rustix::fs::mknodat(
            rustix::fs::CWD,
            CONTROL_PATH,
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o600),
            rustix::fs::makedev(MISC_MAJOR, MAPPER_CTRL_MINOR),
        )
        .context("creating /dev/mapper/control (misc 10:236)")?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(CONTROL_PATH)
        .with_context(|| format!("opening {CONTROL_PATH} (is dm-mod loaded?)"))
}

/// Device number of the device a DM reply describes, as (major, minor).
fn reply_dev(buf: &[u8]) -> (u32, u32) {
    let mut a = [0u8; 8];
    a.copy_from_slice(&buf[OFF_DEV..OFF_DEV + 8]);
    let dev = u64::from_ne_bytes(a);
    (rustix::fs::major(dev), rustix::fs::minor(dev))
}

/// Creates the read-only device `name` with one `target_type` target of `sectors` sectors and makes
/// it live. Returns its device number (major, minor).
pub fn create_readonly(
    name: &str,
    sectors: u64,
    target_type: &str,
    params: &str,
) -> Result<(u32, u32)> {
    let control = open_control()?;
    let reply = DmRequest::new(DM_DEV_CREATE_CMD, name, 0)?
        .issue(&control, &format!("DM_DEV_CREATE {name}"))?;
    let dev = reply_dev(&reply);
    DmRequest::new(DM_TABLE_LOAD_CMD, name, DM_READONLY_FLAG)?
        .with_target(sectors, target_type, params)?
        .issue(
            &control,
            &format!("DM_TABLE_LOAD {name} ({target_type} {params})"),
        )?;
    DmRequest::new(DM_DEV_SUSPEND_CMD, name, 0)?
        .issue(&control, &format!("DM_DEV_SUSPEND (resume) {name}"))?;
    if dev == (0, 0) {
        bail!("device-mapper did not report a device number for {name}");
    }
    Ok(dev)
}

/// Makes a block device node `/dev/mapper/<name>` for `dev`, as libdevmapper does without udev
/// (devtmpfs names the device only `dm-N`).
pub fn make_node(name: &str, dev: (u32, u32)) -> Result<String> {
    let path = format!("/dev/mapper/{name}");
    match rustix::fs::mknodat(
        rustix::fs::CWD,
        path.as_str(),
        FileType::BlockDevice,
        Mode::from_raw_mode(0o600),
        rustix::fs::makedev(dev.0, dev.1),
    ) {
        Ok(()) => Ok(path),
        Err(e) => Err(e).with_context(|| format!("creating {path} ({}:{})", dev.0, dev.1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes_match_formats_md() {
        // docs/formats.md §2: every request is 0xC138FD00 | cmd.
        assert_eq!(dm_opcode(DM_DEV_CREATE_CMD) as u64, 0xC138_FD03);
        assert_eq!(dm_opcode(DM_TABLE_LOAD_CMD) as u64, 0xC138_FD09);
        assert_eq!(dm_opcode(DM_DEV_SUSPEND_CMD) as u64, 0xC138_FD06);
    }

    #[test]
    fn table_load_layout() {
        let r = DmRequest::new(DM_TABLE_LOAD_CMD, "root", DM_READONLY_FLAG)
            .unwrap()
            .with_target(592, "verity", "1 2 3")
            .unwrap();
        let b = r.bytes();
        assert_eq!(&b[0..12], &[4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(u32::from_ne_bytes(b[12..16].try_into().unwrap()), 16384);
        assert_eq!(u32::from_ne_bytes(b[16..20].try_into().unwrap()), 312);
        assert_eq!(u32::from_ne_bytes(b[20..24].try_into().unwrap()), 1);
        assert_eq!(u32::from_ne_bytes(b[28..32].try_into().unwrap()), 1);
        assert_eq!(&b[48..53], b"root\0");
        // dm_target_spec at 312
        assert_eq!(u64::from_ne_bytes(b[312..320].try_into().unwrap()), 0);
        assert_eq!(u64::from_ne_bytes(b[320..328].try_into().unwrap()), 592);
        // next = 40 + len("1 2 3\0") = 46 → 48
        assert_eq!(u32::from_ne_bytes(b[332..336].try_into().unwrap()), 48);
        assert_eq!(&b[336..343], b"verity\0");
        assert_eq!(&b[352..358], b"1 2 3\0");
    }

    #[test]
    fn rejects_bad_names() {
        assert!(DmRequest::new(DM_DEV_CREATE_CMD, "a/b", 0).is_err());
        assert!(DmRequest::new(DM_DEV_CREATE_CMD, &"x".repeat(128), 0).is_err());
    }
}
