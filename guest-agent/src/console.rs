//! Console output with a boot-relative timestamp.
//!
//! As PID 1 the agent's stdout is `/dev/console` (the kernel opens it for init). Agent messages are
//! formatted like the kernel's own (`[    3.141592] cvm-agent: …`) using `CLOCK_BOOTTIME`, which starts
//! at kernel boot, so a serial log shows directly how long the boot took until a given line.
//! Service output is forwarded line by line with a `[service] ` prefix (see the `supervisor` module).

use std::io::Write;
use std::sync::Arc;

use rustix::time::{clock_gettime, ClockId};

/// Seconds and microseconds since kernel start, formatted like `dmesg`.
pub fn boot_timestamp() -> String {
    let ts = clock_gettime(ClockId::Boottime);
    format!("[{:5}.{:06}]", ts.tv_sec, ts.tv_nsec / 1_000)
}

/// Writes one agent message line to stdout. Errors writing the console are ignored on purpose:
/// there is nowhere else to report them, and PID 1 must not die because the console is gone.
pub fn log_line(msg: &str) {
    let line = format!("{} cvm-agent: {msg}\n", boot_timestamp());
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

/// `log!("…", args)`: an agent message on the console, with boot-relative timestamp.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => { $crate::console::log_line(&format!($($arg)*)) };
}

/// Where forwarded service output goes: one call per complete line, already prefixed.
/// The production sink writes to stdout; tests collect the lines.
pub type LineSink = Arc<dyn Fn(&str) + Send + Sync>;

/// The production sink: each line goes to stdout in one `write` so that lines of concurrent
/// services do not interleave within a line.
pub fn stdout_sink() -> LineSink {
    Arc::new(|line: &str| {
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&buf);
        let _ = out.flush();
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_has_dmesg_shape() {
        let ts = boot_timestamp();
        assert!(ts.starts_with('[') && ts.ends_with(']'), "{ts}");
        let inner = ts.trim_matches(|c| c == '[' || c == ']').trim();
        let (secs, micros) = inner.split_once('.').expect("seconds.micros");
        assert!(secs.parse::<u64>().is_ok(), "{ts}");
        assert_eq!(micros.len(), 6, "{ts}");
    }
}
