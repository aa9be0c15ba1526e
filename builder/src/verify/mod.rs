//! `cvm-image verify`: does a VM's evidence match the golden measurement predicted at build time?
//!
//! The evidence (reported PCRs, firmware TCG log, runtime PCR 23 log) comes from files or from the
//! guest agent ([`evidence`]); [`check::verify`] compares it with one profile of
//! `golden-measurement.json` and returns a [`check::Verdict`], printed as a per-PCR table with the
//! first differing event of each failed PCR ([`report`]) or as JSON (`--json`).
//!
//! Exit status: 0 when everything enforced holds, 1 when verification failed, 2 on usage or input
//! errors (unreadable files, malformed logs, unreachable agent, unknown profile).
//!
//! Not yet (issue 5): a fresh nonce, the TPM quote and its AK/EK chain. Until then the PCR values
//! are what the VM *reports*, and the verdict says so (`evidence.quoted: false`).

pub mod check;
pub mod evidence;
pub mod report;

use crate::golden::{self, Golden};
use anyhow::{bail, Context, Result};
use check::verify;
use evidence::Evidence;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Exit status of a verification that ran and failed (usage/input errors exit 2 via `main`).
const EXIT_FAILED: u8 = 1;

/// `cvm-image verify` arguments.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["agent", "eventlog"])))]
pub struct VerifyArgs {
    /// The golden measurement file written by `cvm-image build`.
    #[arg(long, default_value = "out/golden-measurement.json")]
    pub golden: PathBuf,
    /// The profile of the golden file to verify against (qemu, gcp, aws, azure).
    #[arg(long, default_value = "qemu")]
    pub profile: String,
    /// The firmware's binary TCG event log (as GET /eventlog serves it).
    #[arg(long, requires = "pcrs", conflicts_with = "agent")]
    pub eventlog: Option<PathBuf>,
    /// The PCR values as JSON {"sha256": {"0": "<hex>", …}} (as GET /pcrs serves it).
    #[arg(long, requires = "eventlog", conflicts_with = "agent")]
    pub pcrs: Option<PathBuf>,
    /// The init's runtime event log (JSON lines, as GET /eventlog/runtime serves it).
    #[arg(long, requires = "eventlog", conflicts_with = "agent")]
    pub runtime_log: Option<PathBuf>,
    /// Fetch /pcrs, /eventlog and /eventlog/runtime from this agent (e.g. http://127.0.0.1:8000).
    #[arg(long)]
    pub agent: Option<String>,
    /// Seconds to wait for each agent request.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// Print the verdict as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

impl VerifyArgs {
    /// Run the verification; `Ok(1)` when it failed, `Err` on input errors.
    pub fn run(&self) -> Result<ExitCode> {
        let golden = load_golden(&self.golden)?;
        let evidence = self.evidence()?;
        let verdict = verify(&golden, &self.profile, &evidence)
            .with_context(|| format!("verifying against {}", self.golden.display()))?;
        if self.json {
            let json = serde_json::to_string_pretty(&verdict).context("serialising the verdict")?;
            println!("{json}");
        } else {
            print!(
                "{}",
                report::render_text(&verdict, &self.golden.display().to_string())
            );
        }
        Ok(if verdict.ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_FAILED)
        })
    }

    fn evidence(&self) -> Result<Evidence> {
        match (&self.agent, &self.eventlog, &self.pcrs) {
            (Some(url), None, None) => Evidence::from_agent(url, Duration::from_secs(self.timeout)),
            (None, Some(log), Some(pcrs)) => {
                Evidence::from_files(log, pcrs, self.runtime_log.as_deref())
            }
            _ => bail!("give either --agent URL, or --eventlog FILE and --pcrs FILE"),
        }
    }
}

/// Read and check a golden file (any supported format version).
pub fn load_golden(path: &Path) -> Result<Golden> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the golden file {}", path.display()))?;
    let g: Golden = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{} is not a golden-measurement.json (docs/golden-measurement.md)",
            path.display()
        )
    })?;
    if g.format != golden::FORMAT {
        bail!(
            "{}: golden file format {}, this cvm-image reads format {} (rebuild the image)",
            path.display(),
            g.format,
            golden::FORMAT
        );
    }
    Ok(g)
}
