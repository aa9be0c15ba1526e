//! A minimal QMP client: enough to press the virtual power button (`system_powerdown`).
//!
//! QMP is line-delimited JSON on a unix socket: a greeting, then `qmp_capabilities` to leave
//! negotiation mode, then commands; asynchronous events may arrive between a command and its reply
//! and are skipped.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to QEMU's QMP socket and asks the guest to power down (ACPI power button).
pub fn system_powerdown(socket: &Path) -> Result<()> {
    let stream = UnixStream::connect(socket)
        .with_context(|| format!("cannot connect to QMP at {}", socket.display()))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut session = Session {
        reader: BufReader::new(stream.try_clone()?),
        writer: stream,
    };
    let greeting = session.read_message()?;
    if greeting.get("QMP").is_none() {
        bail!("{}: not a QMP greeting: {greeting}", socket.display());
    }
    session.execute("qmp_capabilities")?;
    session.execute("system_powerdown")?;
    Ok(())
}

struct Session {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Session {
    fn read_message(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .context("reading from QMP")?;
        if n == 0 {
            bail!("QMP closed the connection");
        }
        serde_json::from_str(&line).with_context(|| format!("QMP sent invalid JSON: {line:?}"))
    }

    /// Sends a command and waits for its `return` (or `error`), skipping events.
    fn execute(&mut self, command: &str) -> Result<Value> {
        let mut msg = json!({ "execute": command }).to_string();
        msg.push('\n');
        self.writer
            .write_all(msg.as_bytes())
            .with_context(|| format!("sending QMP {command}"))?;
        loop {
            let reply = self.read_message()?;
            if let Some(r) = reply.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = reply.get("error") {
                bail!("QMP {command} failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A fake QEMU speaking the QMP transcript of a real 7.2 session (greeting, capabilities,
    /// system_powerdown preceded by the POWERDOWN event).
    #[test]
    fn negotiates_then_powers_down_skipping_events() {
        let dir = std::env::temp_dir().join(format!("cvm-qmp-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("qmp.sock");
        let _ = std::fs::remove_file(&sock);
        let listener = UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            writeln!(w, r#"{{"QMP": {{"version": {{"qemu": {{"micro": 22, "minor": 2, "major": 7}}}}, "capabilities": ["oob"]}}}}"#).unwrap();
            let mut got = vec![];
            for reply in [
                r#"{"return": {}}"#.to_string(),
                r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "POWERDOWN"}"#
                    .to_string()
                    + "\n"
                    + r#"{"return": {}}"#,
            ] {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                got.push(serde_json::from_str::<Value>(&line).unwrap()["execute"].clone());
                writeln!(w, "{reply}").unwrap();
            }
            got
        });
        system_powerdown(&sock).unwrap();
        assert_eq!(
            server.join().unwrap(),
            ["qmp_capabilities", "system_powerdown"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
