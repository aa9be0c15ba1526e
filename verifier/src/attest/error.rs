//! The one error type of [`crate::attest`]: a leaf module every check imports, so callers (the CLI's
//! `verify`, the agent's peer `/verify`) can tell by variant why evidence was refused — a forged or
//! corrupted signature, a stale nonce, a structure that does not parse, an untrusted certificate
//! chain, an out-of-date TCB or collateral — instead of matching message text.
//!
//! Each variant carries the full message (what and where, with the context prepended by
//! [`Error::context`]); `Display` prints it unchanged, so messages read as they did with anyhow's
//! `{:#}`.

/// Why a piece of evidence was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A structure does not parse: truncated, trailing bytes, bad magic or type, not base64/hex/JSON.
    #[error("{0}")]
    Malformed(String),
    /// The evidence uses an algorithm, curve or format this verifier does not implement.
    #[error("{0}")]
    Unsupported(String),
    /// A signature does not verify with the key that should have made it.
    #[error("{0}")]
    Signature(String),
    /// The evidence is not bound to this request: nonce, extraData or report data differ (stale or
    /// replayed evidence).
    #[error("{0}")]
    Nonce(String),
    /// The evidence is signed but contradicts itself: reported values that do not hash to the signed
    /// digest, PCRs or registers missing, a replayed log that does not match the signed registers.
    #[error("{0}")]
    Mismatch(String),
    /// A key is not fit for its role: an AK that is not a restricted signing key, an EK that is not
    /// a storage key, a signing key whose attributes or policy are not the agent's.
    #[error("{0}")]
    Key(String),
    /// A certificate chain does not lead to a pinned root: wrong issuer, bad certificate signature,
    /// expired or not yet valid, unexpected names or extensions.
    #[error("{0}")]
    CertificateChain(String),
    /// The TEE's TCB or the verification collateral is not acceptable: TCB below the certified
    /// level, collateral expired or inconsistent, an out-of-date platform status.
    #[error("{0}")]
    Tcb(String),
    /// The TEE ran the guest under a configuration the verifier refuses: a SEV-SNP guest policy
    /// with DEBUG or MIGRATE_MA, under which the host can read or export the guest's memory.
    #[error("{0}")]
    Policy(String),
    /// Intel DCAP verification of a TDX quote failed (QE or PCK signature, PCK chain, collateral
    /// signatures or dates, TD attributes): dcap-qvl reports these as one error.
    #[error("{0}")]
    Dcap(String),
    /// Building the verifier's own challenge failed (a key the crypto library rejects, an RNG
    /// error): not a statement about the evidence.
    #[error("{0}")]
    Crypto(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A variant constructor (`Error::Malformed`, …), used to classify foreign errors.
pub type Kind = fn(String) -> Error;

impl Error {
    /// The message, without the variant.
    pub fn message(&self) -> &str {
        match self {
            Error::Malformed(m)
            | Error::Unsupported(m)
            | Error::Signature(m)
            | Error::Nonce(m)
            | Error::Mismatch(m)
            | Error::Key(m)
            | Error::CertificateChain(m)
            | Error::Tcb(m)
            | Error::Policy(m)
            | Error::Dcap(m)
            | Error::Crypto(m) => m,
        }
    }

    /// The same error with `what: ` prepended (where it happened), keeping the variant.
    pub fn context(self, what: impl std::fmt::Display) -> Self {
        let prefix = |m: String| format!("{what}: {m}");
        match self {
            Error::Malformed(m) => Error::Malformed(prefix(m)),
            Error::Unsupported(m) => Error::Unsupported(prefix(m)),
            Error::Signature(m) => Error::Signature(prefix(m)),
            Error::Nonce(m) => Error::Nonce(prefix(m)),
            Error::Mismatch(m) => Error::Mismatch(prefix(m)),
            Error::Key(m) => Error::Key(prefix(m)),
            Error::CertificateChain(m) => Error::CertificateChain(prefix(m)),
            Error::Tcb(m) => Error::Tcb(prefix(m)),
            Error::Policy(m) => Error::Policy(prefix(m)),
            Error::Dcap(m) => Error::Dcap(prefix(m)),
            Error::Crypto(m) => Error::Crypto(prefix(m)),
        }
    }
}

/// The TPM structure parsers (`cvm_tpm`) say whether a structure is broken or only of a kind not
/// implemented; their message is kept as is, the variant tells the rest. Other client errors (an
/// invalid argument to a pure computation such as the PolicyPCR digest) keep their full text.
impl From<cvm_tpm::Error> for Error {
    fn from(e: cvm_tpm::Error) -> Self {
        match e {
            cvm_tpm::Error::Malformed(m) => Error::Malformed(m),
            cvm_tpm::Error::Unsupported(m) => Error::Unsupported(m),
            other => Error::Malformed(other.to_string()),
        }
    }
}

/// Context for results that already carry an [`Error`] (or one that converts into it, such as the
/// TPM client's): prepends where, keeps the variant.
pub trait Context<T> {
    fn context(self, what: impl std::fmt::Display) -> Result<T>;
    fn with_context<D: std::fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl std::fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(what))
    }
    fn with_context<D: std::fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| e.into().context(what()))
    }
}

/// Classifies a foreign error (crypto, DER, JSON, base64) or a missing value as one of ours:
/// `what: source` (or `what` for an `Option`).
pub trait Classify<T> {
    fn or_err(self, kind: Kind, what: impl std::fmt::Display) -> Result<T>;
    fn or_err_with<D: std::fmt::Display>(self, kind: Kind, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: std::fmt::Display> Classify<T> for std::result::Result<T, E> {
    fn or_err(self, kind: Kind, what: impl std::fmt::Display) -> Result<T> {
        self.map_err(|e| kind(format!("{what}: {e:#}")))
    }
    fn or_err_with<D: std::fmt::Display>(self, kind: Kind, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| kind(format!("{}: {e:#}", what())))
    }
}

impl<T> Classify<T> for Option<T> {
    fn or_err(self, kind: Kind, what: impl std::fmt::Display) -> Result<T> {
        self.ok_or_else(|| kind(what.to_string()))
    }
    fn or_err_with<D: std::fmt::Display>(self, kind: Kind, what: impl FnOnce() -> D) -> Result<T> {
        self.ok_or_else(|| kind(what().to_string()))
    }
}

/// `bail!(Kind, "format", args…)`: returns `Err(Error::Kind(format!(…)))`.
macro_rules! bail {
    ($kind:ident, $($fmt:tt)+) => {
        return Err($crate::attest::error::Error::$kind(format!($($fmt)+)))
    };
}

/// `ensure!(condition, Kind, "format", args…)`: [`bail!`] unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $kind:ident, $($fmt:tt)+) => {
        if !$cond {
            $crate::attest::error::bail!($kind, $($fmt)+);
        }
    };
}

pub(crate) use {bail, ensure};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_the_variant() {
        let e: Result<()> = Err(Error::Nonce("nonce 01 is not 02".into()));
        let e = e.context("the quote").unwrap_err();
        assert_eq!(e, Error::Nonce("the quote: nonce 01 is not 02".into()));
        let f: Result<(), &str> = Err("bad point");
        assert_eq!(
            f.or_err(Error::Signature, "AK key").unwrap_err(),
            Error::Signature("AK key: bad point".into())
        );
    }
}
