//! The verifier's error type: what went wrong, by kind, so that a caller can choose its answer
//! (the host CLI's exit status, the agent's peer `POST /verify` its HTTP status) by matching a
//! variant instead of reading the message.
//!
//! Every variant keeps a message that says what and where, and the lower-level error it came from
//! as its [`std::error::Error::source`]; [`chain`] renders both the way `anyhow`'s `{:#}` does, so
//! a message reads the same whichever edge prints it.

use std::fmt::Display;

/// Any lower-level error kept as a source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why the verifier could not run, or why one attestation check failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The caller's input: an unreadable file, a key, a CA bundle or an option that is not usable.
    #[error("{message}")]
    Input {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The golden file: not one, another format version, a profile or bank it does not have.
    #[error("{message}")]
    Golden {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The agent could not be reached, its answer not read, or it answered with an HTTP error.
    #[error("{message}")]
    Transport {
        message: String,
        /// The HTTP status when the agent answered one (not 2xx).
        status: Option<u16>,
        #[source]
        source: Option<BoxError>,
    },
    /// The evidence does not parse: collaterals that are not the documented JSON, fields that are
    /// not base64, event logs that are not TCG or runtime logs, PCR files that are not `/pcrs`.
    #[error("{message}")]
    Malformed {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// A piece of evidence that [`crate::attest`] refused: its variant says why (a signature, a
    /// stale nonce, a certificate chain, a TCB). Of kind [`Kind::Check`].
    #[error(transparent)]
    Attest(#[from] crate::attest::Error),
    /// An attestation check that ran and does not hold (recorded in the verdict's attestation).
    #[error("{message}")]
    Check {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
}

/// Which [`VerifyError`] variant a [`ResultExt`] conversion makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Input,
    Golden,
    Transport,
    Malformed,
    Check,
}

impl VerifyError {
    /// An error of `kind` saying `message`, caused by `source`.
    pub fn new(kind: Kind, message: impl Display, source: Option<BoxError>) -> Self {
        let message = message.to_string();
        match kind {
            Kind::Input => VerifyError::Input { message, source },
            Kind::Golden => VerifyError::Golden { message, source },
            Kind::Transport => VerifyError::Transport {
                message,
                status: None,
                source,
            },
            Kind::Malformed => VerifyError::Malformed { message, source },
            Kind::Check => VerifyError::Check { message, source },
        }
    }

    pub fn input(message: impl Display) -> Self {
        Self::new(Kind::Input, message, None)
    }

    pub fn golden(message: impl Display) -> Self {
        Self::new(Kind::Golden, message, None)
    }

    pub fn malformed(message: impl Display) -> Self {
        Self::new(Kind::Malformed, message, None)
    }

    pub fn check(message: impl Display) -> Self {
        Self::new(Kind::Check, message, None)
    }

    /// The kind of this error.
    pub fn kind(&self) -> Kind {
        match self {
            VerifyError::Input { .. } => Kind::Input,
            VerifyError::Golden { .. } => Kind::Golden,
            VerifyError::Transport { .. } => Kind::Transport,
            VerifyError::Malformed { .. } => Kind::Malformed,
            VerifyError::Check { .. } | VerifyError::Attest(_) => Kind::Check,
        }
    }

    /// The message and every source, `": "`-separated (what `anyhow` prints for `{:#}`).
    pub fn chain(&self) -> String {
        chain(self)
    }
}

/// `e` and its sources, `": "`-separated.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

pub type Result<T, E = VerifyError> = std::result::Result<T, E>;

/// `anyhow`-like context for any error: wraps it, as the source, in a [`VerifyError`] of a kind.
pub trait ResultExt<T> {
    /// On error: a [`VerifyError`] of `kind` saying `message`, the error as its source.
    fn or_kind(self, kind: Kind, message: impl Display) -> Result<T>;

    /// [`ResultExt::or_kind`] with the message built only on error.
    fn or_kind_with<M: Display>(self, kind: Kind, message: impl FnOnce() -> M) -> Result<T>;

    fn malformed(self, message: impl Display) -> Result<T>
    where
        Self: Sized,
    {
        self.or_kind(Kind::Malformed, message)
    }

    fn input(self, message: impl Display) -> Result<T>
    where
        Self: Sized,
    {
        self.or_kind(Kind::Input, message)
    }

    fn check_failed(self, message: impl Display) -> Result<T>
    where
        Self: Sized,
    {
        self.or_kind(Kind::Check, message)
    }
}

impl<T, E: Into<BoxError>> ResultExt<T> for std::result::Result<T, E> {
    fn or_kind(self, kind: Kind, message: impl Display) -> Result<T> {
        self.map_err(|e| VerifyError::new(kind, message, Some(e.into())))
    }

    fn or_kind_with<M: Display>(self, kind: Kind, message: impl FnOnce() -> M) -> Result<T> {
        self.map_err(|e| VerifyError::new(kind, message(), Some(e.into())))
    }
}

/// `None` as a [`VerifyError`] of a kind.
pub trait OptionExt<T> {
    fn or_kind(self, kind: Kind, message: impl Display) -> Result<T>;
}

impl<T> OptionExt<T> for Option<T> {
    fn or_kind(self, kind: Kind, message: impl Display) -> Result<T> {
        self.ok_or_else(|| VerifyError::new(kind, message, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_reads_like_anyhow() {
        let inner: std::result::Result<(), _> = Err(VerifyError::malformed("inner"));
        let e = inner.check_failed("outer").unwrap_err();
        assert_eq!(e.chain(), "outer: inner");
        assert_eq!(e.kind(), Kind::Check);
        assert_eq!(
            format!("{:#}", anyhow::Error::new(e)),
            "outer: inner",
            "the CLI edge prints the same"
        );
    }
}
