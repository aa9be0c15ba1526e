//! The golden measurement a VM's agent serves (`GET /golden-measurement`): the copy the build
//! embedded in the image's ESP, with its detached signature.
//!
//! The ESP is not measured, so the VM (or whoever can write its disk) could serve any file there:
//! the served copy is trusted only when it is signed by the key the verifier was given
//! ([`check_served`]), over the exact bytes (`golden_b64`). An unsigned copy is refused, whatever
//! it says.

use base64::Engine;
use serde::Deserialize;
use std::time::Duration;

use crate::error::{Result, ResultExt};
use crate::golden_sign::{PublicKey, Refusal, SignatureFile};
use crate::http::{body, http_agent, transport};

/// The agent's endpoint.
pub const PATH_GOLDEN: &str = "/golden-measurement";

/// `GET /golden-measurement` as the agent answers it.
#[derive(Debug, Clone, Deserialize)]
pub struct ServedGolden {
    /// The embedded JSON (parsed; informative — the bytes below are what is checked).
    pub golden: serde_json::Value,
    /// The embedded file's exact bytes, base64.
    pub golden_b64: String,
    /// The embedded signature file, or null.
    pub signature: Option<serde_json::Value>,
    /// Where the agent read it, e.g. `esp:/cvm/golden-measurement.json`.
    pub source: String,
}

/// `GET base/golden-measurement`, parsed (an HTTP error, e.g. 404 for an image without one, is an
/// input error naming the agent's reason).
pub fn fetch_served(base: &str, timeout: Duration) -> Result<ServedGolden> {
    let url = format!("{base}{PATH_GOLDEN}");
    let resp = http_agent(timeout)
        .get(&url)
        .call()
        .map_err(|e| transport(format!("cannot reach the agent at {url}"), e))?;
    let bytes = body(resp, &format!("GET {url}"))?;
    serde_json::from_slice(&bytes).malformed(format!(
        "GET {url}: not the agent's golden-measurement answer"
    ))
}

/// The served golden file's bytes when its signature verifies with `key`; otherwise why not.
pub fn check_served(served: &ServedGolden, key: &PublicKey) -> Result<Vec<u8>, Refusal> {
    let what = format!("the agent's golden measurement ({})", served.source);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&served.golden_b64)
        .map_err(|e| Refusal(format!("{what}: golden_b64 is not base64: {e}")))?;
    let Some(signature) = &served.signature else {
        return Err(Refusal(format!(
            "{what} is not signed, so nothing vouches for it (the VM's disk is not measured there): \
             build the image with `cvm-image build --golden-key KEY.pem`, or verify against a \
             golden file you trust with --golden"
        )));
    };
    let sig: SignatureFile = serde_json::from_value(signature.clone()).map_err(|e| {
        Refusal(format!(
            "{what}: its signature is not a golden signature: {e}"
        ))
    })?;
    key.check(&bytes, &sig)
        .map_err(|r| Refusal(format!("{what}: {r}")))?;
    // Signed bytes decide; a `golden` field that says something else is a tampered answer.
    let parsed: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Refusal(format!("{what}: the signed bytes are not JSON: {e}")))?;
    if parsed != served.golden {
        return Err(Refusal(format!(
            "{what}: the `golden` object differs from the signed `golden_b64` bytes"
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden_sign::SigningKey;

    fn key(byte: u8) -> SigningKey {
        SigningKey::EcdsaP256(p256::ecdsa::SigningKey::from_slice(&[byte; 32]).unwrap())
    }

    fn served(golden: &[u8], sig: Option<&SignatureFile>) -> ServedGolden {
        ServedGolden {
            golden: serde_json::from_slice(golden).unwrap(),
            golden_b64: base64::engine::general_purpose::STANDARD.encode(golden),
            signature: sig.map(|s| serde_json::to_value(s).unwrap()),
            source: "esp:/cvm/golden-measurement.json".into(),
        }
    }

    #[test]
    fn signed_copy_is_accepted_with_its_key_only() {
        let golden = b"{\n  \"format\": 1\n}\n";
        let sig = key(0x11).sign(golden).unwrap();
        let s = served(golden, Some(&sig));
        assert_eq!(check_served(&s, &key(0x11).public_key()).unwrap(), golden);
        let other = check_served(&s, &key(0x22).public_key()).unwrap_err();
        assert!(other.0.contains("signed by another key"), "{other}");
    }

    #[test]
    fn unsigned_altered_or_inconsistent_copies_are_refused() {
        let golden = b"{\"format\": 1}";
        let k = key(0x11);
        let unsigned = check_served(&served(golden, None), &k.public_key()).unwrap_err();
        assert!(unsigned.0.contains("is not signed"), "{unsigned}");

        let sig = k.sign(golden).unwrap();
        let mut altered = served(b"{\"format\": 2}", Some(&sig));
        let r = check_served(&altered, &k.public_key()).unwrap_err();
        assert!(r.0.contains("does not match the file's bytes"), "{r}");

        altered = served(golden, Some(&sig));
        altered.golden = serde_json::json!({"format": 2});
        let r = check_served(&altered, &k.public_key()).unwrap_err();
        assert!(r.0.contains("differs from the signed"), "{r}");

        let mut junk = served(golden, None);
        junk.signature = Some(serde_json::json!({"nope": true}));
        let r = check_served(&junk, &k.public_key()).unwrap_err();
        assert!(r.0.contains("not a golden signature"), "{r}");
    }
}
