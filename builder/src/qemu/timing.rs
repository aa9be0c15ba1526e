//! Boot time, split into phases, read off the console.
//!
//! The kernel, the init and the agent stamp their lines with CLOCK_BOOTTIME (`[ 2.140478] …`, the
//! kernel's own format), which starts at zero when the kernel's clock starts. OVMF and systemd-stub
//! print no times, so the firmware phase comes from the host: the runner records when each console
//! line arrived ([`super::console`]); host arrival minus guest stamp is the host time at which the
//! guest clock read zero. Under TCG the guest clock follows the host's real time (no `icount`), so
//! the two clocks can be subtracted.
//!
//! Phases:
//! * firmware: QEMU start → kernel clock zero (OVMF, the UKI's systemd-stub, kernel decompression);
//! * kernel: → the init's first line (`cvm-init: …`);
//! * initramfs: → the agent's first line (module loading, waiting for the disk, dm-verity, PCR 23,
//!   switch_root); `init_modules_secs` is the module-loading part of it;
//! * agent: → `cvm-agent: healthy`.

use super::console::{self, ConsoleLine};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::Path;

const INIT_PREFIX: &str = "cvm-init: ";
const INIT_MODULES_DONE: &str = "cvm-init: loaded ";
const AGENT_PREFIX: &str = "cvm-agent: ";
const AGENT_HEALTHY: &str = "cvm-agent: healthy";

/// Boot phases in seconds (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BootTiming {
    /// QEMU start → kernel clock zero; `None` without host arrival times (a raw console log).
    pub firmware_secs: Option<f64>,
    pub kernel_secs: f64,
    pub initramfs_secs: f64,
    /// Part of `initramfs_secs`: the init's start → "loaded N modules".
    pub init_modules_secs: Option<f64>,
    pub agent_secs: f64,
    /// Guest clock when the agent reported healthy (kernel + initramfs + agent).
    pub guest_secs: f64,
    /// QEMU start → "healthy" (firmware + guest); `None` without host arrival times.
    pub total_secs: Option<f64>,
}

impl BootTiming {
    /// One line for people: "firmware 6.1 s, kernel 2.1 s, …".
    pub fn summary(&self) -> String {
        let fw = self
            .firmware_secs
            .map(|s| format!("firmware {s:.1} s, "))
            .unwrap_or_default();
        let modules = self
            .init_modules_secs
            .map(|s| format!(" (modules {s:.2} s)"))
            .unwrap_or_default();
        let total = self
            .total_secs
            .map(|s| format!("; QEMU start → healthy {s:.1} s"))
            .unwrap_or_default();
        format!(
            "{fw}kernel {:.2} s, initramfs {:.2} s{modules}, agent {:.2} s{total}",
            self.kernel_secs, self.initramfs_secs, self.agent_secs
        )
    }
}

/// The `[seconds.micros]` stamp at the start of a line and the text after it.
pub fn guest_stamp(line: &str) -> Option<(f64, &str)> {
    let rest = line.trim_start().strip_prefix('[')?;
    let (num, text) = rest.split_once(']')?;
    let secs: f64 = num.trim().parse().ok()?;
    Some((secs, text.trim_start()))
}

/// Boot timing of a console log written by `cvm-image run`: uses `console.timed.log` beside it when
/// present (with host arrival times, so the firmware phase is known), else the raw log.
pub fn boot_timing(console_log: &Path) -> Result<BootTiming> {
    let timed = console::timed_log_path(console_log);
    let lines = if timed.is_file() {
        let text = std::fs::read_to_string(&timed)
            .with_context(|| format!("cannot read {}", timed.display()))?;
        console::parse_timed_log(&text)
    } else {
        let raw = std::fs::read(console_log)
            .with_context(|| format!("cannot read {}", console_log.display()))?;
        console::parse_raw_log(&raw)
    };
    from_lines(&lines).with_context(|| format!("boot timing from {}", console_log.display()))
}

/// Boot timing from console lines (see the module docs).
pub fn from_lines(lines: &[ConsoleLine]) -> Result<BootTiming> {
    let stamped: Vec<(f64, &str, Option<f64>)> = lines
        .iter()
        .filter_map(|l| guest_stamp(&l.text).map(|(g, t)| (g, t, l.host_secs)))
        .collect();
    let first = |prefix: &str| {
        stamped
            .iter()
            .find(|(_, t, _)| t.starts_with(prefix))
            .copied()
    };
    let Some(healthy) = first(AGENT_HEALTHY) else {
        bail!("no \"{AGENT_HEALTHY}\" line: the agent never became healthy")
    };
    let Some(init) = first(INIT_PREFIX) else {
        bail!("no stamped \"{INIT_PREFIX}…\" line: the init never started")
    };
    let Some(agent) = first(AGENT_PREFIX) else {
        bail!("no stamped \"{AGENT_PREFIX}…\" line")
    };
    // Host time of guest clock zero: the earliest (arrival − stamp) up to the healthy line; arrival
    // is late by up to one poll interval, never early, so the minimum is the best estimate.
    let kernel_zero = stamped
        .iter()
        .filter(|(g, _, _)| *g <= healthy.0)
        .filter_map(|(g, _, h)| h.map(|h| h - g))
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.min(x))));
    Ok(BootTiming {
        firmware_secs: kernel_zero,
        kernel_secs: init.0,
        initramfs_secs: agent.0 - init.0,
        init_modules_secs: first(INIT_MODULES_DONE).map(|m| m.0 - init.0),
        agent_secs: healthy.0 - agent.0,
        guest_secs: healthy.0,
        total_secs: kernel_zero.map(|z| z + healthy.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(host: Option<f64>, text: &str) -> ConsoleLine {
        ConsoleLine {
            host_secs: host,
            text: text.into(),
        }
    }

    /// Lines as a real boot printed them (guest stamps from a TCG boot of the default image).
    fn boot(host: impl Fn(f64) -> Option<f64>) -> Vec<ConsoleLine> {
        let stamped = |g: f64, t: &str| line(host(g), &format!("[{g:12.6}] {t}"));
        vec![
            line(None, "BdsDxe: starting Boot0001 \"UEFI Misc Device\""),
            stamped(2.140478, "cvm-init: cvm-init 0.1.0 started"),
            stamped(2.472461, "cvm-init: loaded 9 modules (0 already present)"),
            stamped(
                2.606873,
                "cvm-init: switched root; executing /usr/bin/cvm-agent",
            ),
            stamped(2.653065, "cvm-agent: starting (version 0.1.0, pid 1: true)"),
            stamped(
                2.727615,
                "cvm-agent: healthy: API on http://0.0.0.0:8000 and http://127.0.0.1:7999",
            ),
            line(None, "[hello] hello: listening on 0.0.0.0:8080"),
        ]
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn phases_from_guest_stamps() {
        let t = from_lines(&boot(|_| None)).unwrap();
        assert!(close(t.kernel_secs, 2.140478));
        assert!(close(t.initramfs_secs, 2.653065 - 2.140478));
        assert!(close(t.init_modules_secs.unwrap(), 2.472461 - 2.140478));
        assert!(close(t.agent_secs, 2.727615 - 2.653065));
        assert!(close(t.guest_secs, 2.727615));
        assert_eq!((t.firmware_secs, t.total_secs), (None, None));
    }

    #[test]
    fn firmware_phase_is_the_earliest_host_minus_guest_offset() {
        // Kernel clock zero at host 7.0 s; arrivals late by 0.05 s except one exact.
        let t = from_lines(&boot(|g| Some(7.0 + g + if g > 2.5 { 0.0 } else { 0.05 }))).unwrap();
        assert!(close(t.firmware_secs.unwrap(), 7.0), "{t:?}");
        assert!(close(t.total_secs.unwrap(), 7.0 + 2.727615), "{t:?}");
        assert!(
            t.summary().starts_with("firmware 7.0 s, kernel 2.14 s"),
            "{}",
            t.summary()
        );
    }

    #[test]
    fn a_boot_that_never_got_healthy_has_no_timing() {
        let lines = vec![
            line(None, "[    2.1] cvm-init: cvm-init 0.1.0 started"),
            line(None, "cvm-init: FATAL: verity (at 3.3s; powering off)"),
        ];
        assert!(from_lines(&lines)
            .unwrap_err()
            .to_string()
            .contains("never became healthy"));
        assert_eq!(
            guest_stamp("[    3.324205] reboot: Power down"),
            Some((3.324205, "reboot: Power down"))
        );
        assert_eq!(guest_stamp("[hello] x"), None);
    }
}
