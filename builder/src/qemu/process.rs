//! The VM's processes: QEMU and swtpm share one process group of their own, so one signal reaches
//! both, the terminal's Ctrl-C does not (the runner decides how to shut down), and `stop` can find and
//! end them after the runner that started them has exited.
//!
//! Liveness comes from `/proc/<pid>/stat`: a detached VM's processes are no longer our children, and
//! when the process that adopts them does not reap, a dead one lingers as a zombie that `kill(pid, 0)`
//! still finds.

use rustix::process::{kill_process, kill_process_group, Pid, Signal};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// How often waits poll the process table.
const POLL: Duration = Duration::from_millis(50);

/// The fields of `/proc/<pid>/stat` we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub state: char,
    pub pgrp: u32,
}

/// Parses `/proc/<pid>/stat` text: "pid (comm) state ppid pgrp …". `comm` may contain spaces and
/// parentheses, so the fields are taken after the *last* ')'.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(ProcStat { state, pgrp })
}

pub fn stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// True while `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    matches!(stat(pid), Some(s) if s.state != 'Z')
}

/// The command line of `pid` (NUL-separated in `/proc`), or `None` when it is gone.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// True when `pid` is alive, leads or belongs to group `pgrp`, runs `program` (file name of argv[0])
/// and mentions `marker` (the run directory) in its arguments: a check against PID reuse before
/// signalling a process recorded in a state file.
pub fn is_ours(pid: u32, pgrp: u32, program: &str, marker: &str) -> bool {
    let (Some(st), Some(args)) = (stat(pid), cmdline(pid)) else {
        return false;
    };
    let argv0_matches = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n == program);
    st.state != 'Z' && st.pgrp == pgrp && argv0_matches && args.iter().any(|a| a.contains(marker))
}

/// Puts the process `cmd` starts into group `pgrp` (0: a new group it leads). With `die_with_parent`
/// the kernel sends it SIGTERM when the runner dies (`PR_SET_PDEATHSIG`), so even a `kill -9` of a
/// foreground `cvm-image run` leaves no VM behind; detached runs must outlive the runner and do not
/// set it. PDEATHSIG follows the spawning *thread*: spawn from a thread that lives as long as the VM.
pub fn configure(cmd: &mut Command, pgrp: u32, die_with_parent: bool) {
    cmd.process_group(i32::try_from(pgrp).unwrap_or(0));
    if die_with_parent {
        // SAFETY: the closure runs between fork and exec and only makes one raw prctl system call,
        // which is async-signal-safe; it touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(Signal::TERM))
                    .map_err(std::io::Error::from)
            });
        }
    }
}

/// Sends `sig` to `pid`; a process already gone is not an error.
pub fn signal(pid: u32, sig: Signal) {
    if let Some(p) = to_pid(pid) {
        let _ = kill_process(p, sig);
    }
}

/// Sends `sig` to every process of group `pgrp`; an empty group is not an error.
pub fn signal_group(pgrp: u32, sig: Signal) {
    if let Some(p) = to_pid(pgrp) {
        let _ = kill_process_group(p, sig);
    }
}

fn to_pid(raw: u32) -> Option<Pid> {
    i32::try_from(raw).ok().and_then(Pid::from_raw)
}

/// Waits until none of `pids` is alive; true if that happened within `timeout`.
pub fn wait_gone(pids: &[u32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if pids.iter().all(|&p| !is_alive(p)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// The last `n` lines of a text file ("" when unreadable): for error messages.
pub fn tail_of(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_odd_command_names() {
        let s = parse_stat("1234 (qemu (x) y) S 1 1230 1230 0 -1 4194560 0 0").unwrap();
        assert_eq!(
            s,
            ProcStat {
                state: 'S',
                pgrp: 1230
            }
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) Z"), None);
    }

    #[test]
    fn group_signal_ends_a_process_group_and_liveness_follows() {
        let mut child = Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(is_alive(pid));
        assert_eq!(stat(pid).unwrap().pgrp, pid);
        // Between fork and exec the child still shows the test binary's command line: wait for exec.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !is_ours(pid, pid, "sleep", "30") && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(is_ours(pid, pid, "sleep", "30"));
        assert!(!is_ours(pid, pid, "sleep", "no-such-marker"));
        assert!(!is_ours(pid, pid + 1, "sleep", "30"));
        signal_group(pid, Signal::TERM);
        // Not reaped yet: a zombie counts as gone.
        assert!(wait_gone(&[pid], Duration::from_secs(5)));
        assert!(!child.wait().unwrap().success());
        assert!(!is_alive(pid));
    }
}
