//! What the agent remembers of this boot's TPM keys (the AK, the EK, the boot signing key), and the
//! lock that serialises the API's TPM use: the evidence state of the API's `AppState`.

use std::sync::Mutex;

use cvm_tpm::EkType;

use crate::tee::TeeSource;

/// The key material remembered for the boot.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub(crate) ak_public: Vec<u8>,
    pub(crate) ak_name: Vec<u8>,
    pub(crate) ek_type: EkType,
    pub(crate) ek_public: Vec<u8>,
    pub(crate) ek_cert: Option<Vec<u8>>,
}

/// The boot signing key as first created: its policy (hence its template) and public area.
#[derive(Debug, Clone)]
pub(crate) struct SigningKeyInfo {
    /// PolicyPCR digest of [`QUOTED_PCRS`] at creation: the key's authPolicy.
    pub(crate) auth_policy: [u8; 32],
    /// TPMT_PUBLIC.
    pub(crate) public: Vec<u8>,
}

/// What the agent remembers of this boot's keys.
#[derive(Debug, Default)]
pub(crate) struct BootKeys {
    pub(crate) keys: Option<Keys>,
    pub(crate) signing_key: Option<SigningKeyInfo>,
}

/// Evidence state: where the TEE is, and the keys (also the lock serialising TPM use by this API).
pub struct Evidence {
    pub(crate) tee: TeeSource,
    pub(crate) boot: Mutex<BootKeys>,
}

impl Evidence {
    pub fn new(tee: TeeSource) -> Self {
        Evidence {
            tee,
            boot: Mutex::new(BootKeys::default()),
        }
    }
}

impl Default for Evidence {
    fn default() -> Self {
        Evidence::new(TeeSource::default())
    }
}
