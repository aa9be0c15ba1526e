//! Console output: progress lines with the time since boot, and the one fatal line.
//!
//! Lines go to stderr, which [`attach`] points at `/dev/console` (the serial port with
//! `console=ttyS0`). The timestamp is CLOCK_BOOTTIME in the kernel's `[seconds.micros]` style, so
//! init lines interleave with kernel messages and boot time can be read off the log.

use std::io::Write;
use std::os::fd::AsFd;

use rustix::fs::{Mode, OFlags};
use rustix::time::{clock_gettime, ClockId};

/// Prefix of every line; the fatal line adds "FATAL: " after it.
pub const PREFIX: &str = "cvm-init";
/// The kernel console device (character 5:1), present once devtmpfs is mounted.
const CONSOLE: &str = "/dev/console";

/// Seconds since boot, microsecond resolution.
pub fn uptime() -> (i64, i64) {
    let t = clock_gettime(ClockId::Boottime);
    (t.tv_sec, t.tv_nsec / 1000)
}

/// Makes fds 0, 1 and 2 the console. The kernel does this for init only when the initramfs has a
/// `/dev/console` node; with devtmpfs mounted by us, we do it ourselves. The agent inherits them.
pub fn attach() -> rustix::io::Result<()> {
    let fd = rustix::fs::open(
        CONSOLE,
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    rustix::stdio::dup2_stdin(fd.as_fd())?;
    rustix::stdio::dup2_stdout(fd.as_fd())?;
    rustix::stdio::dup2_stderr(fd.as_fd())?;
    Ok(())
}

/// A progress line (without newline): kernel-style timestamp first.
pub fn format_line(secs: i64, micros: i64, msg: &str) -> String {
    format!("[{secs:5}.{micros:06}] {PREFIX}: {msg}")
}

/// The fatal line starts with "cvm-init: FATAL: " (what tests and operators grep for); the time
/// goes last. `msg` must be one line (anyhow's `{:#}` joins the context chain with ": ").
pub fn format_fatal(secs: i64, micros: i64, msg: &str) -> String {
    let msg = msg.replace('\n', " ");
    format!("{PREFIX}: FATAL: {msg} (at {secs}.{micros:06}s; powering off)")
}

/// Writes one progress line. Console errors are ignored: there is nowhere else to report them.
pub fn info(msg: &str) {
    let (s, us) = uptime();
    let _ = writeln!(std::io::stderr().lock(), "{}", format_line(s, us, msg));
}

/// Writes the fatal line.
pub fn fatal(msg: &str) {
    let (s, us) = uptime();
    // A newline first: the fatal line must not be glued to a half-written kernel message.
    let _ = writeln!(std::io::stderr().lock(), "\n{}", format_fatal(s, us, msg));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format() {
        assert_eq!(format_line(1, 2345, "x"), "[    1.002345] cvm-init: x");
        assert_eq!(
            format_fatal(12, 0, "no root\nat all"),
            "cvm-init: FATAL: no root at all (at 12.000000s; powering off)"
        );
    }
}
