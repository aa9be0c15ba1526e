//! The last two steps of every plan, the same on all clouds: wait until the VM's agent answers on
//! its static public IP, then verify the VM against the image's golden file — so a deployment ends
//! in a verdict, not in a running VM nobody checked.

use anyhow::Result;

use super::command::PlannedCommand;
use super::options::{Cloud, DeployOptions, AGENT_PORT, GOLDEN_FILE};

/// Seconds between /health polls, and how many: 60 × 10 s covers a confidential VM's first boot
/// (the slowest seen is Azure's, a few minutes after `vm create` returns).
const POLL_DELAY_S: u32 = 10;
const POLL_TRIES: u32 = 60;

/// The agent's base URL on the captured IP variable.
fn agent_url(ip_var: &str) -> String {
    format!("http://${{{ip_var}}}:{AGENT_PORT}")
}

/// The two final steps. `ip_var` names the captured static public IP.
pub fn steps(cloud: Cloud, opts: &DeployOptions, ip_var: &str) -> Result<Vec<PlannedCommand>> {
    let golden = opts.built_file(GOLDEN_FILE, &cloud.to_string())?;
    let wait = PlannedCommand::new(
        "curl",
        format!(
            "Wait for the agent on the VM's static IP (GET /health, up to {} minutes)",
            POLL_DELAY_S * POLL_TRIES / 60
        ),
    )
    .args([
        "--silent",
        "--show-error",
        "--fail",
        "--output",
        "/dev/null",
    ])
    .opt("--connect-timeout", "5")
    .opt("--retry", POLL_TRIES.to_string())
    .opt("--retry-delay", POLL_DELAY_S.to_string())
    // Connection refused and 5xx while the VM boots are retried too (curl ≥ 7.71).
    .arg("--retry-all-errors")
    .arg(format!("{}/health", agent_url(ip_var)));
    let ek = match &opts.ek_ca {
        Some(_) => "its EK certificate checked against --ek-ca",
        None => "EK certificate NOT checked (pass --ek-ca with the cloud's vTPM EK CA bundle)",
    };
    let mut verify = PlannedCommand::new(
        &opts.cvm_image().to_string_lossy(),
        format!(
            "Verify the VM against {} (profile {cloud}): fresh-nonce quote, AK/EK binding, {ek}",
            golden.display()
        ),
    )
    .arg("verify")
    .opt("--agent", agent_url(ip_var))
    .opt("--profile", cloud.to_string())
    .opt("--golden", golden.to_string_lossy());
    verify = match &opts.ek_ca {
        Some(ca) => verify.opt("--ek-ca", ca.to_string_lossy()),
        None => verify.arg("--insecure-no-ek"),
    };
    Ok(vec![wait, verify])
}
