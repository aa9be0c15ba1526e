//! What only PID 1 does: take over Ctrl-Alt-Del, and power the machine off at the end.
//!
//! Reaping orphans is the [`crate::supervisor::Reaper`] in `reap_all` mode; everything here is
//! called only when the agent really is PID 1 (`main` checks), so tests never reach it.

use std::time::Duration;

use rustix::system::{reboot, RebootCommand};

use crate::log;

/// Time between SIGTERM and SIGKILL for processes that are not services (orphans, helpers).
const ORPHAN_GRACE: Duration = Duration::from_secs(2);

pub fn is_pid1() -> bool {
    rustix::process::getpid().is_init()
}

/// Makes Ctrl-Alt-Del send SIGINT to PID 1 (handled as a clean shutdown) instead of an immediate
/// hard reboot, which is the kernel's default.
pub fn take_over_ctrl_alt_del() {
    if let Err(e) = reboot(RebootCommand::CadOff) {
        log!("cannot disable the Ctrl-Alt-Del hard reboot: {e}");
    }
}

/// Reaps children until none is left (true) or `timeout` passes (false). Every process descends
/// from PID 1, so "no children" means no process is left to lose data.
fn reap_all_children(timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match rustix::process::wait(rustix::process::WaitOptions::NOHANG) {
            Err(rustix::io::Errno::CHILD) => return true,
            Ok(Some(_)) => continue,
            _ if std::time::Instant::now() >= deadline => return false,
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Ends the system: every remaining process gets SIGTERM, then SIGKILL; file systems are synced and
/// the machine powered off. Services must have been stopped before (with their own grace period).
/// Never returns: PID 1 exiting would panic the kernel.
pub fn power_off() -> ! {
    // kill(-1, …) from PID 1 signals every process except itself.
    // SAFETY: kill(2) with a plain signal number; no memory is passed.
    unsafe { libc::kill(-1, libc::SIGTERM) };
    if !reap_all_children(ORPHAN_GRACE) {
        // SAFETY: as above.
        unsafe { libc::kill(-1, libc::SIGKILL) };
        reap_all_children(ORPHAN_GRACE);
    }
    rustix::fs::sync();
    log!("powering off");
    if let Err(e) = reboot(RebootCommand::PowerOff) {
        log!("power off failed: {e}; halting here");
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
