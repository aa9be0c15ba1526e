//! `cvm-image verify`: does a VM's evidence match the golden measurement predicted at build time?
//!
//! With `--agent URL` the verifier draws a fresh random nonce, fetches the agent's collaterals and
//! checks the TPM quote, the AK↔EK binding by credential activation and the EK certificate chain
//! against `--ek-ca` ([`collaterals`], [`ekcert`]); the quoted PCR values are then the evidence.
//! Offline (`--eventlog`/`--pcrs` files) the values are only reported (`evidence.quoted: false`).
//! [`check::verify`] replays the logs against the values and compares them with one profile of
//! `golden-measurement.json`, returning a [`check::Verdict`], printed as a per-PCR table with the
//! first differing event of each failed PCR ([`report`]) or as JSON (`--json`).
//!
//! With `--golden-from-agent` the golden file is the copy the build embedded in the image's ESP, as
//! the agent serves it (`GET /golden-measurement`, [`agent_golden`]); the ESP is not measured, so it
//! is used only when signed by `--golden-pubkey`.
//!
//! No rollback ([`cvm_verify::pin`]): `--expect-image`, `--min-version`, `--expect-uki` and
//! `--min-security-version` say which image the golden file must be for; one for another image
//! or an older version is refused (exit 1) before any evidence is looked at, signed or not.
//!
//! Exit status: 0 when everything enforced holds, 1 when verification failed, 2 on usage or input
//! errors (unreadable files, malformed logs or collaterals, unreachable agent, unknown profile).

pub use cvm_verify::golden::{load_golden, parse_golden};
pub use cvm_verify::{check, collaterals, ekcert, evidence, report};

use anyhow::{bail, Context, Result};
use check::verify;
use collaterals::EkTrust;
use cvm_verify::attest::tdx::TdxCollateral;
use cvm_verify::golden::read_golden;
use cvm_verify::pin::{ImagePin, Sha256Hex, Version};
use cvm_verify::tee::TeeTrust;
use cvm_verify::{agent_golden, golden_sign};
use evidence::Evidence;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Exit status of a verification that ran and failed (usage/input errors exit 2 via `main`).
const EXIT_FAILED: u8 = 1;
/// Seconds each agent request may take unless `--timeout` says otherwise.
const DEFAULT_TIMEOUT_SECS: u64 = 30;

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
    /// Fetch quoted collaterals from this agent with a fresh nonce (e.g. http://127.0.0.1:8000).
    #[arg(long)]
    pub agent: Option<String>,
    // The options below up to --timeout act on the agent's collaterals only: without --agent
    // they are refused ([`VerifyArgs::refuse_agent_options_offline`]). Not with clap's `requires`:
    // clap waives a requirement on an argument that conflicts with one given (--agent with
    // --eventlog), so it would let them pass silently.
    /// PEM bundle of the CA certificates the VM's EK certificate must chain to (`cvm-image run`
    /// writes OUT/ek-ca.pem). Required with --agent unless --insecure-no-ek; needs --agent.
    #[arg(long, conflicts_with = "insecure_no_ek")]
    pub ek_ca: Option<PathBuf>,
    /// Do not check the EK certificate: the quote may then come from any TPM, even a software one.
    /// Needs --agent.
    #[arg(long)]
    pub insecure_no_ek: bool,
    /// SEV-SNP: the VCEK/VLEK certificate (DER or PEM, from AMD KDS) when the VM's host provides no
    /// certificate table with its reports. Needs --agent.
    #[arg(long)]
    pub snp_vcek: Option<PathBuf>,
    /// SEV-SNP: AMD's cert_chain PEM (ASK/ASVK then ARK, from AMD KDS) when the host provides none.
    /// The ARK must be AMD's (pinned in cvm-image). Needs --agent.
    #[arg(long)]
    pub amd_chain: Option<PathBuf>,
    /// TDX: Intel's DCAP collateral for the quote (dcap-qvl's JSON shape: TCB info, QE identity,
    /// CRLs and their issuer chains, from Intel PCS or your PCCS). Needs --agent.
    #[arg(long)]
    pub tdx_collateral: Option<PathBuf>,
    /// Fail unless the VM presents a verified SEV-SNP or TDX report (a confidential VM). Needs
    /// --agent: offline evidence carries no TEE report.
    #[arg(long)]
    pub require_tee: bool,
    /// Seconds to wait for each agent request [default: 30]. Needs --agent.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Print the verdict as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Public key PEM (ECDSA P-256 or RSA, SPKI) the golden file must be signed with: an unsigned
    /// or wrongly signed golden file is refused (exit 1) before any evidence is looked at.
    #[arg(long)]
    pub golden_pubkey: Option<PathBuf>,
    /// The golden file's detached signature [default: GOLDEN.sig].
    #[arg(long, requires = "golden_pubkey")]
    pub golden_signature: Option<PathBuf>,
    /// Take the golden measurement from the agent (GET /golden-measurement: the copy the build
    /// embedded in the image's ESP) instead of --golden. The ESP is not measured, so the copy is
    /// trusted only through its signature: needs --golden-pubkey, and an unsigned or wrongly
    /// signed copy is refused (exit 1).
    #[arg(
        long,
        requires_all = ["agent", "golden_pubkey"],
        conflicts_with_all = ["golden", "golden_signature"]
    )]
    pub golden_from_agent: bool,
    /// No rollback: refuse (exit 1) a golden file for another image than NAME (its image.name, the
    /// spec's [image] name), however well signed (No rollback: see `cvm-image verify --help`).
    #[arg(long, value_name = "NAME")]
    pub expect_image: Option<String>,
    /// No rollback: refuse (exit 1) a golden file whose image.version (the spec's [image]
    /// version) is older than V. Versions compare as dotted numbers, component by component,
    /// missing ones 0 (1.10 > 1.9, 1.2 = 1.2.0), a leading `v` allowed; a `-pre-release` is below
    /// its release (1.0.0-rc.1 < 1.0.0, semver's rules), `+build` is ignored. A golden file whose
    /// version is not of this form is refused too.
    #[arg(long, value_name = "V")]
    pub min_version: Option<Version>,
    /// No rollback: refuse (exit 1) a golden file for another UKI than the one with this SHA256
    /// (64 hex digits: `sha256sum out/uki.efi`, or the manifest's uki.sha256).
    #[arg(long, value_name = "SHA256")]
    pub expect_uki: Option<Sha256Hex>,
    /// No rollback: refuse (exit 1) a golden file whose image.security_version (the spec's
    /// [image] security_version, raised by the owner when older images must stop being accepted)
    /// is below N, or that has none.
    #[arg(long, value_name = "N")]
    pub min_security_version: Option<u64>,
}

impl VerifyArgs {
    /// Run the verification; `Ok(1)` when it failed, `Err` on input errors.
    pub fn run(&self) -> Result<ExitCode> {
        self.refuse_agent_options_offline()?;
        // The signature gate comes first: an untrusted golden file must not even be parsed, and a
        // refusal needs no evidence (nor a reachable agent, for a file).
        let (bytes, origin) = match self.trusted_golden()? {
            Ok(found) => found,
            Err(refusal) => {
                eprintln!("cvm-image: verify: REFUSED: {refusal}");
                return Ok(ExitCode::from(EXIT_FAILED));
            }
        };
        let golden = parse_golden(&bytes, &origin)?;
        // Then the pins: a golden file of another image or an older version is refused, however
        // well signed, before any evidence.
        let violations = self.pin().violations(&golden.image);
        if !violations.is_empty() {
            for v in &violations {
                eprintln!("cvm-image: verify: REFUSED: {}: {v}", origin.display());
            }
            return Ok(ExitCode::from(EXIT_FAILED));
        }
        let evidence = self.evidence()?;
        let verdict = verify(&golden, &self.profile, &evidence)
            .with_context(|| format!("verifying against {}", origin.display()))?;
        if self.json {
            let json = serde_json::to_string_pretty(&verdict).context("serialising the verdict")?;
            println!("{json}");
        } else {
            print!(
                "{}",
                report::render_text(&verdict, &origin.display().to_string())
            );
        }
        Ok(if verdict.ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_FAILED)
        })
    }

    /// What the golden file's `image` must say (`--expect-image`, `--min-version`, …).
    fn pin(&self) -> ImagePin {
        ImagePin {
            name: self.expect_image.clone(),
            min_version: self.min_version.clone(),
            uki_sha256: self.expect_uki.clone(),
            min_security_version: self.min_security_version,
        }
    }

    /// The options given that act on an agent's collaterals, by their command-line names.
    fn agent_only_options(&self) -> Vec<&'static str> {
        [
            ("--ek-ca", self.ek_ca.is_some()),
            ("--insecure-no-ek", self.insecure_no_ek),
            ("--snp-vcek", self.snp_vcek.is_some()),
            ("--amd-chain", self.amd_chain.is_some()),
            ("--tdx-collateral", self.tdx_collateral.is_some()),
            ("--require-tee", self.require_tee),
            ("--timeout", self.timeout.is_some()),
            ("--golden-from-agent", self.golden_from_agent),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect()
    }

    /// Offline evidence (--eventlog/--pcrs) has no quote, EK certificate or TEE report: an option
    /// about those would be silently ignored, so it is a usage error (exit 2) naming it.
    fn refuse_agent_options_offline(&self) -> Result<()> {
        if self.agent.is_some() {
            return Ok(());
        }
        let given = self.agent_only_options();
        if given.is_empty() {
            return Ok(());
        }
        let (needs, they, leave) = match given.len() {
            1 => ("needs", "it acts", format!("leave out {}", given[0])),
            _ => ("need", "they act", "leave them out".to_string()),
        };
        bail!(
            "{} {needs} --agent URL: {they} on a running VM's collaterals (quote, EK certificate, \
             TEE report, served golden file), which offline evidence (--eventlog/--pcrs) does not \
             have; give --agent URL instead of --eventlog/--pcrs, or {leave}",
            given.join(", ")
        );
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS))
    }

    /// The golden file's bytes and where they came from (a path, or the agent's URL), once its
    /// signature is checked when a key is given; the refusal otherwise.
    fn trusted_golden(&self) -> Result<Result<(Vec<u8>, PathBuf), golden_sign::Refusal>> {
        if self.golden_from_agent {
            let (Some(url), Some(pubkey)) = (&self.agent, &self.golden_pubkey) else {
                bail!("--golden-from-agent needs --agent URL and --golden-pubkey PEM");
            };
            return self.golden_from_agent(url, pubkey);
        }
        let bytes = read_golden(&self.golden)?;
        if let Some(pubkey) = &self.golden_pubkey {
            if let Err(refusal) = self.check_golden_signature(&bytes, pubkey)? {
                return Ok(Err(refusal));
            }
        }
        Ok(Ok((bytes, self.golden.clone())))
    }

    /// `GET /golden-measurement` of the agent, accepted only when signed with the key at `pubkey`.
    fn golden_from_agent(
        &self,
        url: &str,
        pubkey: &Path,
    ) -> Result<Result<(Vec<u8>, PathBuf), golden_sign::Refusal>> {
        let key = golden_sign::load_public_key(pubkey)?;
        let base = url.trim_end_matches('/');
        let served = agent_golden::fetch_served(base, self.timeout())?;
        let origin = PathBuf::from(format!("{base}{}", agent_golden::PATH_GOLDEN));
        Ok(agent_golden::check_served(&served, &key).map(|bytes| {
            eprintln!(
                "cvm-image: verify: {} ({}): good signature ({}, key {})",
                origin.display(),
                served.source,
                key.algorithm(),
                key.key_id().unwrap_or_default()
            );
            (bytes, origin)
        }))
    }

    /// Check the detached signature of the golden file's `bytes` with the key at `pubkey`.
    fn check_golden_signature(
        &self,
        bytes: &[u8],
        pubkey: &Path,
    ) -> Result<Result<(), golden_sign::Refusal>> {
        let key = golden_sign::load_public_key(pubkey)?;
        let sig_path = self
            .golden_signature
            .clone()
            .unwrap_or_else(|| golden_sign::default_sig_path(&self.golden));
        let checked = golden_sign::check_detached(&self.golden, bytes, &sig_path, &key)?;
        if checked.is_ok() {
            eprintln!(
                "cvm-image: verify: {}: good signature ({}, key {})",
                self.golden.display(),
                key.algorithm(),
                key.key_id()?
            );
        }
        Ok(checked)
    }

    fn evidence(&self) -> Result<Evidence> {
        match (&self.agent, &self.eventlog, &self.pcrs) {
            (Some(url), None, None) => self.agent_evidence(url),
            (None, Some(log), Some(pcrs)) => Ok(Evidence::from_files(
                log,
                pcrs,
                self.runtime_log.as_deref(),
            )?),
            _ => bail!("give either --agent URL, or --eventlog FILE and --pcrs FILE"),
        }
    }
}

impl VerifyArgs {
    /// Fresh nonce → collaterals → attestation checks (the activation goes back to the same agent).
    fn agent_evidence(&self, url: &str) -> Result<Evidence> {
        let trust = match (&self.ek_ca, self.insecure_no_ek) {
            (Some(path), false) => EkTrust::Ca(ekcert::load_bundle(path)?),
            (None, true) => {
                eprintln!(
                    "cvm-image: WARNING: --insecure-no-ek: the EK certificate is not checked, so \
                     the quote is not known to come from a genuine TPM"
                );
                EkTrust::Insecure
            }
            _ => bail!(
                "--agent needs --ek-ca FILE (the EK CA bundle; `cvm-image run` writes \
                 OUT/ek-ca.pem), or --insecure-no-ek to skip the EK certificate check"
            ),
        };
        Ok(collaterals::attest_agent(
            url,
            &trust,
            &self.tee_trust()?,
            self.timeout(),
            unix_now()?,
        )?)
    }
}

impl VerifyArgs {
    /// The TEE trust anchors and policy from the command line.
    fn tee_trust(&self) -> Result<TeeTrust> {
        let read = |p: &Option<PathBuf>, what: &str| -> Result<Option<Vec<u8>>> {
            p.as_ref()
                .map(|p| {
                    std::fs::read(p)
                        .with_context(|| format!("cannot read the {what} {}", p.display()))
                })
                .transpose()
        };
        let tdx_collateral = match read(&self.tdx_collateral, "TDX collateral")? {
            Some(bytes) => Some(TdxCollateral::from_dcap_qvl_json(&bytes).with_context(|| {
                format!(
                    "{}: not DCAP collateral in dcap-qvl's JSON shape",
                    self.tdx_collateral
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                )
            })?),
            None => None,
        };
        Ok(TeeTrust {
            snp_vcek: read(&self.snp_vcek, "VCEK certificate")?,
            amd_chain: read(&self.amd_chain, "AMD certificate chain")?,
            tdx_collateral,
            require: self.require_tee,
        })
    }
}

/// Seconds since the epoch: when the EK certificates must be valid.
fn unix_now() -> Result<u64> {
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs())
}
