//! Byte transports: a TPM command goes out whole, a response comes back whole.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::marshal::{parse_header, HEADER_LEN};
use crate::{Error, Result};

/// Largest response we accept. The Linux driver's buffer is 4096 bytes (`TPM_BUFSIZE`), and no
/// command this crate sends gets a response near it.
pub const MAX_RESPONSE: usize = 4096;

/// Socket timeout for swtpm: long enough for a loaded CI host, short enough to fail a test visibly.
const TCP_TIMEOUT: Duration = Duration::from_secs(30);

/// Something that exchanges one TPM command for one response.
pub trait Transport: Send {
    /// Sends `cmd` and returns the complete response (header included).
    fn transact(&mut self, cmd: &[u8]) -> Result<Vec<u8>>;
}

/// A kernel TPM character device. `/dev/tpmrm0` (the in-kernel resource manager) is preferred:
/// it lets several processes share the TPM. The kernel's contract is one `write` of the whole command,
/// then one `read` of the whole response.
pub struct DeviceTransport {
    file: File,
    path: String,
}

impl DeviceTransport {
    pub fn open(path: &str) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| Error::Io {
                what: format!("opening TPM device {path}"),
                source,
            })?;
        Ok(DeviceTransport {
            file,
            path: path.to_string(),
        })
    }
}

impl Transport for DeviceTransport {
    fn transact(&mut self, cmd: &[u8]) -> Result<Vec<u8>> {
        let io = |what: &str| {
            let what = format!("{what} {}", self.path);
            move |source| Error::Io { what, source }
        };
        self.file.write_all(cmd).map_err(io("writing command to"))?;
        let mut buf = vec![0u8; MAX_RESPONSE];
        let n = self
            .file
            .read(&mut buf)
            .map_err(io("reading response from"))?;
        buf.truncate(n);
        check_length(&buf)?;
        Ok(buf)
    }
}

/// swtpm's TPM command socket (`swtpm socket --server type=tcp,port=P`): raw TPM 2.0 commands and
/// responses on a byte stream, framed by the header's size field (the same protocol tpm2-tss's
/// "swtpm" TCTI speaks). The control channel is not needed: start swtpm with
/// `--flags not-need-init,startup-clear` so that TPM2_Startup has been done.
pub struct TcpTransport {
    stream: TcpStream,
    peer: String,
}

impl TcpTransport {
    pub fn connect(addr: impl ToSocketAddrs + std::fmt::Debug) -> Result<Self> {
        let peer = format!("{addr:?}");
        let io = |what: &str| {
            let what = format!("{what} swtpm at {peer}");
            move |source| Error::Io { what, source }
        };
        let stream = TcpStream::connect(&addr).map_err(io("connecting to"))?;
        stream
            .set_read_timeout(Some(TCP_TIMEOUT))
            .map_err(io("setting timeout on"))?;
        stream.set_nodelay(true).map_err(io("configuring"))?;
        Ok(TcpTransport { stream, peer })
    }
}

impl Transport for TcpTransport {
    fn transact(&mut self, cmd: &[u8]) -> Result<Vec<u8>> {
        let io = |what: &str| {
            let what = format!("{what} swtpm at {}", self.peer);
            move |source| Error::Io { what, source }
        };
        self.stream
            .write_all(cmd)
            .map_err(io("sending command to"))?;
        let mut buf = vec![0u8; HEADER_LEN];
        self.stream
            .read_exact(&mut buf)
            .map_err(io("reading response header from"))?;
        let size = parse_header(&buf)?.size as usize;
        if !(HEADER_LEN..=MAX_RESPONSE).contains(&size) {
            return Err(Error::Malformed(format!(
                "swtpm at {} announced a {size}-byte response",
                self.peer
            )));
        }
        buf.resize(size, 0);
        self.stream
            .read_exact(&mut buf[HEADER_LEN..])
            .map_err(io("reading response body from"))?;
        Ok(buf)
    }
}

/// The header's size field must equal what was received.
fn check_length(buf: &[u8]) -> Result<()> {
    let hdr = parse_header(buf)?;
    if hdr.size as usize != buf.len() {
        return Err(Error::Malformed(format!(
            "response header says {} bytes, received {}",
            hdr.size,
            buf.len()
        )));
    }
    Ok(())
}
