//! A stand-in agent for the boot test (initrd/tests/boot.sh): proves that the init handed over
//! (PID 1, verified root, workload mounted, event log and PCR 23 in place), then powers off.
//! Every line starts with "test-agent:" so the test can grep the console.

use cvm_measure::eventlog::HashAlg as Bank;
use cvm_measure::workload::{parse_log, replay, RUNTIME_EVENT_LOG_PATH, WORKLOAD_PCR};
use cvm_tpm::{HashAlg, Tpm};

fn say(msg: &str) {
    eprintln!("test-agent: {msg}");
}

fn report() -> Result<(), String> {
    say(&format!("agent started as PID {}", std::process::id()));
    let mounts = std::fs::read_to_string("/proc/self/mounts").map_err(|e| e.to_string())?;
    for m in mounts
        .lines()
        .filter(|l| l.contains(" / ") || l.contains("/workload") || l.contains(" /run "))
    {
        say(&format!("mount: {m}"));
    }
    match std::fs::read_dir("/workload") {
        Ok(entries) => {
            let mut names: Vec<String> = entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            say(&format!("workload files: {}", names.join(" ")));
        }
        Err(e) => say(&format!("no /workload: {e}")),
    }
    let log = std::fs::read_to_string(RUNTIME_EVENT_LOG_PATH).unwrap_or_default();
    for line in log.lines() {
        say(&format!("eventlog: {line}"));
    }
    let events = parse_log(&log).map_err(|e| e.to_string())?;
    let replayed = replay(&events, Bank::SHA256)?
        .get(&WORKLOAD_PCR)
        .map(hex::encode)
        .unwrap_or_else(|| "none".into());
    say(&format!("replayed PCR{WORKLOAD_PCR} {replayed}"));
    let mut tpm = Tpm::open_device().map_err(|e| e.to_string())?;
    let pcr = tpm
        .pcr_read(HashAlg::Sha256, &[WORKLOAD_PCR])
        .map_err(|e| e.to_string())?;
    say(&format!("tpm PCR{WORKLOAD_PCR} {}", hex::encode(&pcr[0].1)));
    Ok(())
}

fn main() {
    if let Err(e) = report() {
        say(&format!("error: {e}"));
    }
    say("powering off");
    rustix::fs::sync();
    let _ = rustix::system::reboot(rustix::system::RebootCommand::PowerOff);
}
