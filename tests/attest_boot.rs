//! Remote attestation against ONE real boot of the default image (`cvm-image run --detach`: QEMU
//! TCG + OVMF + swtpm manufactured by swtpm_setup with the run's private local CA).
//!
//! While the VM runs:
//! * `cvm-image verify --agent URL --ek-ca OUT/ek-ca.pem` exits 0, the JSON verdict says
//!   `quoted: true` and every attestation check is ok;
//! * `tpm2_checkquote` (tpm2-tools, independent) accepts the served quote, signature, AK public,
//!   PCR values and our nonce;
//! * the check function on collaterals fetched once (the agent stays up for credential activation):
//!   as served they verify; each alteration is rejected with its reason — a stale nonce (replay),
//!   a flipped signature byte, an altered PCR value, one event of the log changed, a different EK
//!   for the credential;
//! * `verify --ek-ca` with a fresh CA of the same names fails on the EK certificate chain;
//! * the agent stays up under abuse of port 8000 ([`agent_stays_up_under_abuse`]), and attests
//!   afterwards.

#[path = "../guest-agent/tests/abuse/mod.rs"]
mod abuse;
mod common;
use common::*;

use base64::Engine;
use cvm_image::verify::check::{verify, Verdict};
use cvm_image::verify::collaterals::{
    activate_credential, check_collaterals, fetch_collaterals, fresh_nonce, CheckKind, CheckStatus,
    Collaterals, EkTrust,
};
use cvm_image::verify::evidence::Origin;
use cvm_image::verify::{ekcert, load_golden};
use cvm_verify::tee::TeeTrust;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Per-request timeout towards the agent (quotes on swtpm under TCG are slow).
const AGENT_TIMEOUT: Duration = Duration::from_secs(60);
/// PCRs the agent quotes and their TPMS_PCR_SELECTION bitmap (0–15, 23).
const QUOTED_PCRS: [u32; 17] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 23];
const QUOTED_SELECT: [u8; 3] = [0xFF, 0xFF, 0x80];
/// Bytes of an RSA 2048 modulus: the last field (`unique`) of the EK's TPMT_PUBLIC.
const RSA2048_MODULUS_LEN: usize = 256;

/// Stops the VM when the test ends, whatever happened.
struct RunningVm {
    out: PathBuf,
}

impl Drop for RunningVm {
    fn drop(&mut self) {
        let _ = Command::new(cvm_image())
            .args(["stop", "--grace", "20", "--out"])
            .arg(&self.out)
            .output();
    }
}

fn b64() -> &'static base64::engine::GeneralPurpose {
    &base64::engine::general_purpose::STANDARD
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `cvm-image verify --agent … --json` with `extra`; exit code and verdict.
fn verify_cli(golden: &Path, agent: &str, extra: &[&std::ffi::OsStr]) -> (i32, Value) {
    let o = run(Command::new(cvm_image())
        .arg("verify")
        .arg("--golden")
        .arg(golden)
        .args(["--agent", agent, "--json"])
        .args(extra));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON verdict ({e}): {}",
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (o.status.code().unwrap_or(-1), v)
}

/// The PCR file format tpm2-tools 5.4 reads with `tpm2_checkquote -f` (see tpm/tests/attest.rs):
/// TPML_PCR_SELECTION as in-memory C structs, then the TPML_DIGEST lists of 8 values each.
fn tpm2_tools_serialized_pcrs(select: [u8; 3], values: &[Vec<u8>]) -> Vec<u8> {
    const SELECTIONS: usize = 16;
    const DIGESTS_PER_LIST: usize = 8;
    const DIGEST_BUFFER: usize = 64;
    let mut out = Vec::new();
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&0x000Bu16.to_le_bytes());
    out.push(3);
    out.extend_from_slice(&select);
    out.extend_from_slice(&[0, 0]);
    out.resize(4 + SELECTIONS * 8, 0);
    let lists: Vec<&[Vec<u8>]> = values.chunks(DIGESTS_PER_LIST).collect();
    out.extend_from_slice(&(lists.len() as u32).to_le_bytes());
    for list in lists {
        out.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for i in 0..DIGESTS_PER_LIST {
            let v: &[u8] = list.get(i).map(Vec::as_slice).unwrap_or(&[]);
            out.extend_from_slice(&(v.len() as u16).to_le_bytes());
            out.extend_from_slice(v);
            out.resize(out.len() + DIGEST_BUFFER - v.len(), 0);
        }
    }
    out
}

/// tpm2_checkquote on the served quote with `nonce`.
fn tpm2_checkquote(dir: &Path, c: &Collaterals, nonce: &[u8]) -> std::process::Output {
    let values: Vec<Vec<u8>> = QUOTED_PCRS
        .iter()
        .map(|p| hex::decode(&c.pcrs["sha256"][&p.to_string()]).unwrap())
        .collect();
    std::fs::write(dir.join("ak.pub"), b64().decode(&c.ak_public).unwrap()).unwrap();
    std::fs::write(dir.join("quote"), b64().decode(&c.quote).unwrap()).unwrap();
    std::fs::write(dir.join("sig"), b64().decode(&c.signature).unwrap()).unwrap();
    std::fs::write(
        dir.join("pcrs"),
        tpm2_tools_serialized_pcrs(QUOTED_SELECT, &values),
    )
    .unwrap();
    run(Command::new("tpm2_checkquote")
        .current_dir(dir)
        .args(["-u", "ak.pub", "-m", "quote", "-s", "sig", "-g", "sha256"])
        .args(["-f", "pcrs", "-q", &hex::encode(nonce)]))
}

fn status_of(v: &Verdict, kind: CheckKind) -> (CheckStatus, String) {
    let c = v
        .attestation
        .iter()
        .find(|c| c.check == kind)
        .unwrap_or_else(|| panic!("no {kind:?} check"));
    (c.status, c.detail.clone())
}

/// A TCG log with one byte of one PCR 4 event's SHA-256 digest flipped (a digest found once).
fn log_with_one_event_changed(log: &[u8]) -> Vec<u8> {
    let parsed = cvm_measure::eventlog::parse(log).unwrap();
    let digest = parsed
        .events
        .iter()
        .filter(|e| e.pcr == 4 && e.is_extended())
        .flat_map(|e| e.digests.iter())
        .find(|d| d.alg == cvm_measure::eventlog::HashAlg::SHA256)
        .expect("a PCR 4 event with a SHA-256 digest")
        .digest
        .clone();
    let at: Vec<usize> = log
        .windows(digest.len())
        .enumerate()
        .filter(|(_, w)| *w == digest.as_slice())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "the digest occurs once in the log");
    let mut changed = log.to_vec();
    changed[at[0] + 5] ^= 0x01;
    changed
}

/// The default image built with `--golden-key` (an openssl-made P-256 key) into its own output
/// directory; returns it and the key directory (golden.pub, and other.pub of another key). Its
/// PCRs are the unsigned build's: signing only adds unmeasured files to the ESP.
fn signed_golden_image() -> (PathBuf, PathBuf) {
    let keys = scratch("attest-golden-keys");
    for name in ["golden", "other"] {
        let key = keys.join(format!("{name}.key"));
        ok(Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
            ])
            .arg(&key));
        ok(Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(keys.join(format!("{name}.pub"))));
    }
    let out = scratch("attest-signed-image");
    let key = keys.join("golden.key");
    let o = build(
        &repo().join("image.toml"),
        &out,
        &["--golden-key", key.to_str().unwrap()],
        None,
    );
    assert!(
        o.status.success(),
        "build --golden-key failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    (out, keys)
}

/// `GET /golden-measurement` serves the copy embedded on the ESP, byte-identical to out/ (file
/// and signature); `verify --golden-from-agent --golden-pubkey` accepts it with the build's key
/// and refuses it (exit 1) with another.
fn golden_from_agent(agent: &str, out: &Path, keys: &Path, ek_ca: &Path) {
    let served: Value = serde_json::from_str(&ok(Command::new("curl")
        .args(["-fsS", "--max-time", "60"])
        .arg(format!("{agent}/golden-measurement"))))
    .unwrap();
    let golden = std::fs::read(out.join("golden-measurement.json")).unwrap();
    let sig: Value =
        serde_json::from_slice(&std::fs::read(out.join("golden-measurement.json.sig")).unwrap())
            .unwrap();
    assert!(
        b64()
            .decode(served["golden_b64"].as_str().unwrap())
            .unwrap()
            == golden,
        "the agent's golden file differs from out/golden-measurement.json"
    );
    assert_eq!(served["signature"], sig);
    assert_eq!(served["source"], "esp:/cvm/golden-measurement.json");

    let from_agent = |pubkey: &str| {
        run(Command::new(cvm_image())
            .args(["verify", "--agent", agent, "--golden-from-agent", "--json"])
            .arg("--golden-pubkey")
            .arg(keys.join(pubkey))
            .arg("--ek-ca")
            .arg(ek_ca))
    };
    let o = from_agent("golden.pub");
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("good signature"), "{stderr}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v:#}");
    let o = from_agent("other.pub");
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("REFUSED") && stderr.contains("signed by another key"),
        "{stderr}"
    );
}

#[test]
fn quoted_attestation_of_one_boot() {
    let (out, golden_keys) = signed_golden_image();
    let golden_path = out.join("golden-measurement.json");
    let (state, stdout) = run_detached(&out);
    let _vm = RunningVm { out: out.clone() };
    let agent = state["agent_url"].as_str().unwrap().to_string();
    let ek_ca = PathBuf::from(state["ek_ca"].as_str().expect("run.json names ek_ca"));
    assert_eq!(ek_ca, out.join("ek-ca.pem"));
    assert!(
        stdout.contains(&format!("ek-ca    {}", ek_ca.display())),
        "{stdout}"
    );

    // The command line, end to end.
    let (code, v) = verify_cli(
        &golden_path,
        &agent,
        &["--ek-ca".as_ref(), ek_ca.as_os_str()],
    );
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["evidence"]["quoted"], true, "{v:#}");
    let kinds: Vec<(&str, &str)> = v["attestation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["check"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("quote", "ok"),
            ("ak-ek-binding", "ok"),
            ("ek-certificate", "ok"),
            ("signing-key", "ok"),
            ("tee-report", "skipped")
        ]
    );
    // A confidential VM is required on demand: this one has no SEV-SNP/TDX.
    let (code, v) = verify_cli(
        &golden_path,
        &agent,
        &[
            "--ek-ca".as_ref(),
            ek_ca.as_os_str(),
            "--require-tee".as_ref(),
        ],
    );
    assert_eq!(code, 1, "{v:#}");
    assert!(v["failures"].to_string().contains("TEE report"), "{v:#}");

    // Peer attestation: another VM's agent (the same binary as in the image, run on the host)
    // attests this VM through its loopback POST /verify, and checks a greeting the VM's workload
    // had signed with the boot key.
    peer_verification(&agent, &state, &golden_path, &ek_ca);

    golden_from_agent(&agent, &out, &golden_keys, &ek_ca);

    // tpm2-tools accepts the served quote with our nonce, and not with another.
    let nonce = fresh_nonce();
    let c = fetch_collaterals(&agent, &nonce, AGENT_TIMEOUT).unwrap();
    assert_eq!(c.nonce, hex::encode(nonce));
    let dir = scratch("attest-checkquote");
    let q = tpm2_checkquote(&dir, &c, &nonce);
    assert!(
        q.status.success(),
        "tpm2_checkquote rejected the quote: {}",
        String::from_utf8_lossy(&q.stderr)
    );
    let q = tpm2_checkquote(&dir, &c, &fresh_nonce());
    assert!(
        !q.status.success(),
        "tpm2_checkquote accepted another nonce"
    );

    // The check function on these collaterals, with the live agent for credential activation.
    let golden = load_golden(&golden_path).unwrap();
    let bundle = ekcert::load_bundle(&ek_ca).unwrap();
    let trust = EkTrust::Ca(bundle);
    let activate = |m: &_| activate_credential(&agent, m, AGENT_TIMEOUT);
    let check = |c: &Collaterals, nonce: &[u8], trust: &EkTrust| -> Verdict {
        let origin = Origin::Agent { url: agent.clone() };
        let e = check_collaterals(
            c,
            nonce,
            trust,
            &TeeTrust::default(),
            &activate,
            unix_now(),
            origin,
        )
        .unwrap();
        verify(&golden, "qemu", &e).unwrap()
    };
    let good = check(&c, &nonce, &trust);
    assert!(good.ok, "{:#?}", good.failures);
    assert!(good.evidence.quoted);

    // (a) Stale nonce: the collaterals answer another verifier's (or an earlier) nonce.
    let v = check(&c, &fresh_nonce(), &trust);
    assert!(!v.ok && !v.evidence.quoted);
    let (s, why) = status_of(&v, CheckKind::Quote);
    assert_eq!(s, CheckStatus::Failed);
    assert!(why.contains("stale or replayed"), "{why}");
    assert!(v.failures[0].starts_with("TPM quote:"), "{:?}", v.failures);

    // (b) One signature byte flipped.
    let mut bad = c.clone();
    let mut sig = b64().decode(&c.signature).unwrap();
    *sig.last_mut().unwrap() ^= 0x01;
    bad.signature = b64().encode(&sig);
    let v = check(&bad, &nonce, &trust);
    let (s, why) = status_of(&v, CheckKind::Quote);
    assert!(!v.ok && s == CheckStatus::Failed);
    assert!(
        why.contains("signature does not verify with the AK"),
        "{why}"
    );

    // (c) One quoted PCR value altered.
    let mut bad = c.clone();
    let pcr7 = bad.pcrs.get_mut("sha256").unwrap().get_mut("7").unwrap();
    *pcr7 = format!(
        "{}{}",
        if pcr7.starts_with('0') { "1" } else { "0" },
        &pcr7[1..]
    );
    let v = check(&bad, &nonce, &trust);
    let (s, why) = status_of(&v, CheckKind::Quote);
    assert!(!v.ok && s == CheckStatus::Failed);
    assert!(why.contains("pcrDigest"), "{why}");

    // (d) One event of the firmware log changed: the quote holds, the log no longer replays.
    let mut bad = c.clone();
    let log = b64().decode(c.eventlog.as_ref().unwrap()).unwrap();
    bad.eventlog = Some(b64().encode(log_with_one_event_changed(&log)));
    let v = check(&bad, &nonce, &trust);
    assert!(!v.ok && v.evidence.quoted);
    assert!(
        v.failures
            .iter()
            .any(|f| f.starts_with("PCR 4 (sha256): the firmware event log replays to")),
        "{:?}",
        v.failures
    );

    // (e) Credential activation against a different EK (a genuine RSA 2048 key of another "TPM"):
    // the VM's TPM cannot recover the secret. Without the certificate check, to isolate it.
    assert_eq!(c.ek_type, "rsa2048");
    let mut bad = c.clone();
    let mut ek = b64().decode(&c.ek_public).unwrap();
    let other = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
    let n = rsa::traits::PublicKeyParts::n(&other).to_bytes_be();
    let at = ek.len() - RSA2048_MODULUS_LEN;
    ek[at..].copy_from_slice(&n);
    bad.ek_public = b64().encode(&ek);
    let v = check(&bad, &nonce, &EkTrust::Insecure);
    let (s, why) = status_of(&v, CheckKind::AkEkBinding);
    assert!(!v.ok && s == CheckStatus::Failed, "{why}");
    assert!(why.contains("could not activate the credential"), "{why}");
    assert_eq!(
        status_of(&v, CheckKind::EkCertificate).0,
        CheckStatus::Skipped
    );
    // With the CA, the certificate (of the real EK) does not certify that key either.
    let v = check(&bad, &nonce, &trust);
    let (s, why) = status_of(&v, CheckKind::EkCertificate);
    assert!(
        s == CheckStatus::Failed && why.contains("another key"),
        "{why}"
    );

    // (f) Another CA with the same names (a fresh swtpm_localca): the EK chain fails.
    let fresh = scratch("attest-fresh-ca");
    let paths = cvm_image::qemu::swtpm::SwtpmPaths::in_dir(&fresh);
    cvm_image::qemu::swtpm::provision(Path::new("swtpm"), &paths).unwrap();
    let fresh_ca = fresh.join("fresh-ca.pem");
    std::fs::write(&fresh_ca, paths.ca_bundle().unwrap()).unwrap();
    let (code, v) = verify_cli(
        &golden_path,
        &agent,
        &["--ek-ca".as_ref(), fresh_ca.as_os_str()],
    );
    assert_eq!(code, 1, "{v:#}");
    let failures = v["failures"].to_string();
    assert!(
        failures.contains("EK certificate chain") && failures.contains("does not verify"),
        "{failures}"
    );

    agent_stays_up_under_abuse(&agent, &state, &out.join("console.log"));

    // --ek-ca is required unless --insecure-no-ek (usage error, exit 2); the latter warns — and the
    // agent, just flooded, still attests.
    let o = run(Command::new(cvm_image())
        .arg("verify")
        .arg("--golden")
        .arg(&golden_path)
        .args(["--agent", &agent]));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--ek-ca"));
    let o = run(Command::new(cvm_image())
        .arg("verify")
        .arg("--golden")
        .arg(&golden_path)
        .args(["--agent", &agent, "--insecure-no-ek"]));
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("WARNING: --insecure-no-ek"));
}

/// `http://HOST:PORT` → its socket address.
fn socket_addr(url: &str) -> std::net::SocketAddr {
    url.strip_prefix("http://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{url} is not http://IP:PORT"))
}

/// Port 8000, through the host forward, under everything at once: 2,000 idle connections, 100
/// slowloris senders, 20 heads of 64 KiB and a burst of 10,000 `GET /health` over 32 connections.
/// Throughout, `/health` on a fresh connection every 100 ms is answered within 1 s of its connect
/// (QEMU's forward may delay a connect by a SYN retransmission: see the abuse module), and the
/// workload's `GET /signed` keeps being answered: it asks the agent's loopback port (7999, which the
/// host cannot reach otherwise) for `/sign-message`. The agent reports no failed accept.
fn agent_stays_up_under_abuse(agent: &str, state: &Value, console: &Path) {
    use abuse::{flood, Flood, Probe};
    let (agent, workload) = (
        socket_addr(agent),
        socket_addr(state["workload_url"].as_str().unwrap()),
    );
    let health = Probe::start(
        agent,
        "/health",
        Duration::from_millis(100),
        Duration::from_secs(1),
    );
    let signed = Probe::start(
        workload,
        "/signed",
        Duration::from_millis(500),
        Duration::from_secs(20),
    );
    let abuse = Flood {
        idle: 2000,
        // QEMU's forward accepts a connection within ~2 ms; faster, SYNs are dropped.
        connect_every: Duration::from_millis(3),
        slowloris: 100,
        slowloris_for: Duration::from_secs(5),
        huge_heads: 20,
        burst: 10_000,
        burst_connections: 32,
    };
    let report = flood(agent, &abuse);
    let (health, signed) = (health.finish(), signed.finish());
    eprintln!(
        "abuse of 8000 for {:.1} s: {} idle connections, {} slowloris closed, burst {:?}; {health:?}; \
         {signed:?}",
        report.took.as_secs_f64(),
        report.idle.len(),
        report.slowloris_closed,
        report.burst
    );
    health.assert_answered();
    signed.assert_answered();
    report.assert_served(&abuse);
    let log = std::fs::read_to_string(console).unwrap();
    assert!(!log.contains("cvm-agent: accepting on"), "{log}");
}

/// The guest agent binary the image was built with (builder/src/guest.rs's target dir).
fn guest_agent_binary() -> PathBuf {
    let dir = std::env::var_os("CVM_IMAGE_GUEST_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/guest"));
    let bin = dir.join("x86_64-unknown-linux-gnu/guest/cvm-agent");
    assert!(
        bin.exists(),
        "{} missing: the image build makes it",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// POST `body` as JSON to `url`; (status, JSON answer).
fn post_json(url: &str, body: &Value) -> (u16, Value) {
    let config = ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .timeout_global(Some(AGENT_TIMEOUT * 2))
        .build();
    let mut resp = ureq::Agent::new_with_config(config)
        .post(url)
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
    )
}

fn get_json(url: &str) -> Value {
    let mut resp = ureq::get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap()
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn peer_verification(agent: &str, state: &Value, golden_path: &Path, ek_ca: &Path) {
    let dir = scratch("attest-peer");
    std::fs::write(dir.join("workload.toml"), "name = \"peer-verifier\"\n").unwrap();
    let (public, local) = (free_port(), free_port());
    let _verifier = KillOnDrop(
        Command::new(guest_agent_binary())
            .env("CVM_WORKLOAD_DIR", &dir)
            .env("CVM_LISTEN", format!("127.0.0.1:{public}"))
            .env("CVM_LISTEN_LOCAL", format!("127.0.0.1:{local}"))
            .env("CVM_TPM", "tcp:127.0.0.1:1")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let local_url = format!("http://127.0.0.1:{local}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while ureq::get(&format!("{local_url}/health")).call().is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the verifying agent did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The VM's workload signs its greeting with the boot key (its loopback /sign-message).
    let workload = state["workload_url"].as_str().unwrap();
    let signed = get_json(&format!("{workload}/signed"));
    let greeting = signed["greeting"].as_str().unwrap().to_string();
    let mut signed_message = signed["signed"].clone();
    signed_message["message"] = Value::from(b64().encode(greeting.as_bytes()));

    let golden: Value = serde_json::from_slice(&std::fs::read(golden_path).unwrap()).unwrap();
    let request = serde_json::json!({
        "agent": agent,
        "golden": golden,
        "profile": "qemu",
        "ek_ca_pem": std::fs::read_to_string(ek_ca).unwrap(),
        "signed_message": signed_message,
    });
    let (status, v) = post_json(&format!("{local_url}/verify"), &request);
    assert_eq!(status, 200, "{v:#}");
    assert_eq!(v["ok"], true, "{v:#}");
    assert_eq!(v["verdict"]["evidence"]["quoted"], true, "{v:#}");
    assert_eq!(v["message"]["ok"], true, "{v:#}");
    assert_eq!(v["signing_key"], signed["signed"]["key_hash"], "{v:#}");

    // Another message under the same signature: the check fails, the attestation still holds.
    let mut forged = request.clone();
    forged["signed_message"]["message"] = Value::from(b64().encode(b"pay 1000 to mallory"));
    let (status, v) = post_json(&format!("{local_url}/verify"), &forged);
    assert_eq!(status, 200, "{v:#}");
    assert_eq!(
        (v["ok"].clone(), v["message"]["ok"].clone()),
        (false.into(), false.into()),
        "{v:#}"
    );

    // A golden measurement for another workload: PCR 23 differs, the peer is refused.
    let mut other = request.clone();
    other["golden"]["profiles"]["qemu"]["pcrs"]["sha256"]["23"]["value"] =
        Value::from("00".repeat(32));
    let (status, v) = post_json(&format!("{local_url}/verify"), &other);
    assert_eq!(status, 200, "{v:#}");
    assert_eq!(v["ok"], false, "{v:#}");
    assert!(
        v["verdict"]["failures"].to_string().contains("PCR 23"),
        "{v:#}"
    );

    // Malformed requests: JSON errors with 4xx, and the endpoint is not on the public port.
    let (status, v) = post_json(
        &format!("{local_url}/verify"),
        &serde_json::json!({"agent": "ftp://x"}),
    );
    assert!((400..500).contains(&status), "{status} {v:#}");
    assert!(v["error"].is_string(), "{v:#}");
    let mut no_ek = request.clone();
    no_ek.as_object_mut().unwrap().remove("ek_ca_pem");
    let (status, v) = post_json(&format!("{local_url}/verify"), &no_ek);
    assert_eq!(status, 400, "{v:#}");
    // On the public port the whole request is refused (over its 16 KiB body bound) before routing;
    // a small one finds no such endpoint.
    let public_verify = format!("http://127.0.0.1:{public}/verify");
    assert_eq!(post_json(&public_verify, &request).0, 413);
    let small = serde_json::json!({ "agent": agent });
    assert_eq!(post_json(&public_verify, &small).0, 404);
}
