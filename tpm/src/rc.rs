//! TPM 2.0 response codes (TPM 2.0 Library, Part 2, §6.6 "TPM_RC").
//!
//! A response code is either "format zero" (bit 7 clear: a plain error or warning number, optionally
//! flagged as vendor- or TPM-1.2-defined) or "format one" (bit 7 set: an error number in bits 0..5 plus
//! the handle, session or parameter it refers to in bits 6..11). [`ResponseCode`] decodes both so an
//! error message names the failure (`TPM_RC_BAD_AUTH on session 1`) instead of a bare number.

use std::fmt;

/// `TPM_RC_SUCCESS`.
pub const TPM_RC_SUCCESS: u32 = 0x000;
/// `RC_VER1`: set on every format-zero TPM 2.0 code; clear means a TPM 1.2 code.
const RC_VER1: u32 = 0x100;
/// `RC_FMT1`: format-one code (error number plus handle/session/parameter index).
const RC_FMT1: u32 = 0x080;
/// `RC_WARN`: format-zero warning (bit 11), e.g. `TPM_RC_RETRY`.
const RC_WARN: u32 = 0x900;
/// Format-zero `TPM_RC_VENDOR` flag (bit 10 with bit 8).
const RC_VENDOR_FLAG: u32 = 0x400;
/// Format-one: bit 6 set = the error refers to a parameter.
const RC_P: u32 = 0x040;
/// Format-one: bit 11 set (with P clear) = the index is a session, clear = a handle.
const RC_S: u32 = 0x800;

/// `TPM_RC_YIELDED`: the TPM suspended the command; resend it.
pub const TPM_RC_YIELDED: u32 = RC_WARN + 0x008;
/// `TPM_RC_TESTING`: self-test in progress; resend it.
pub const TPM_RC_TESTING: u32 = RC_WARN + 0x00A;
/// `TPM_RC_RETRY`: the TPM was busy; resend it.
pub const TPM_RC_RETRY: u32 = RC_WARN + 0x022;

/// Format-zero names (value without flags → name).
const FMT0_NAMES: &[(u32, &str)] = &[
    (0x100, "TPM_RC_INITIALIZE (TPM2_Startup was not run)"),
    (0x101, "TPM_RC_FAILURE (TPM is in failure mode)"),
    (0x103, "TPM_RC_SEQUENCE"),
    (0x10B, "TPM_RC_PRIVATE"),
    (0x119, "TPM_RC_HMAC"),
    (0x120, "TPM_RC_DISABLED"),
    (0x121, "TPM_RC_EXCLUSIVE"),
    (0x124, "TPM_RC_AUTH_TYPE"),
    (0x125, "TPM_RC_AUTH_MISSING"),
    (0x126, "TPM_RC_POLICY"),
    (0x127, "TPM_RC_PCR"),
    (0x128, "TPM_RC_PCR_CHANGED"),
    (0x12D, "TPM_RC_UPGRADE"),
    (0x12E, "TPM_RC_TOO_MANY_CONTEXTS"),
    (0x12F, "TPM_RC_AUTH_UNAVAILABLE"),
    (0x130, "TPM_RC_REBOOT"),
    (0x131, "TPM_RC_UNBALANCED"),
    (0x142, "TPM_RC_COMMAND_SIZE"),
    (0x143, "TPM_RC_COMMAND_CODE (command not implemented)"),
    (0x144, "TPM_RC_AUTHSIZE"),
    (
        0x145,
        "TPM_RC_AUTH_CONTEXT (command does (not) take sessions)",
    ),
    (0x146, "TPM_RC_NV_RANGE"),
    (0x147, "TPM_RC_NV_SIZE"),
    (0x148, "TPM_RC_NV_LOCKED"),
    (0x149, "TPM_RC_NV_AUTHORIZATION"),
    (0x14A, "TPM_RC_NV_UNINITIALIZED"),
    (0x14B, "TPM_RC_NV_SPACE"),
    (0x14C, "TPM_RC_NV_DEFINED"),
    (0x150, "TPM_RC_BAD_CONTEXT"),
    (0x151, "TPM_RC_CPHASH"),
    (0x152, "TPM_RC_PARENT"),
    (0x153, "TPM_RC_NEEDS_TEST"),
    (0x154, "TPM_RC_NO_RESULT"),
    (0x155, "TPM_RC_SENSITIVE"),
    (0x901, "TPM_RC_CONTEXT_GAP"),
    (0x902, "TPM_RC_OBJECT_MEMORY"),
    (0x903, "TPM_RC_SESSION_MEMORY"),
    (0x904, "TPM_RC_MEMORY"),
    (0x905, "TPM_RC_SESSION_HANDLES"),
    (0x906, "TPM_RC_OBJECT_HANDLES"),
    (
        0x907,
        "TPM_RC_LOCALITY (command not allowed at this locality)",
    ),
    (0x908, "TPM_RC_YIELDED"),
    (0x909, "TPM_RC_CANCELED"),
    (0x90A, "TPM_RC_TESTING"),
    (0x920, "TPM_RC_NV_RATE"),
    (0x921, "TPM_RC_LOCKOUT"),
    (0x922, "TPM_RC_RETRY"),
    (0x923, "TPM_RC_NV_UNAVAILABLE"),
];

/// Format-one names (error number | RC_FMT1 → name).
const FMT1_NAMES: &[(u32, &str)] = &[
    (0x081, "TPM_RC_ASYMMETRIC"),
    (0x082, "TPM_RC_ATTRIBUTES"),
    (
        0x083,
        "TPM_RC_HASH (hash algorithm not supported or not allowed)",
    ),
    (0x084, "TPM_RC_VALUE (value out of range)"),
    (0x085, "TPM_RC_HIERARCHY"),
    (0x087, "TPM_RC_KEY_SIZE"),
    (0x088, "TPM_RC_MGF"),
    (0x089, "TPM_RC_MODE"),
    (0x08A, "TPM_RC_TYPE"),
    (0x08B, "TPM_RC_HANDLE"),
    (0x08C, "TPM_RC_KDF"),
    (0x08D, "TPM_RC_RANGE"),
    (0x08E, "TPM_RC_AUTH_FAIL"),
    (0x08F, "TPM_RC_NONCE"),
    (0x090, "TPM_RC_PP"),
    (0x092, "TPM_RC_SCHEME"),
    (0x095, "TPM_RC_SIZE"),
    (0x096, "TPM_RC_SYMMETRIC"),
    (0x097, "TPM_RC_TAG"),
    (0x098, "TPM_RC_SELECTOR"),
    (0x09A, "TPM_RC_INSUFFICIENT (input too short)"),
    (0x09B, "TPM_RC_SIGNATURE"),
    (0x09C, "TPM_RC_KEY"),
    (0x09D, "TPM_RC_POLICY_FAIL"),
    (0x09F, "TPM_RC_INTEGRITY"),
    (0x0A0, "TPM_RC_TICKET"),
    (0x0A1, "TPM_RC_RESERVED_BITS"),
    (0x0A2, "TPM_RC_BAD_AUTH"),
    (0x0A3, "TPM_RC_EXPIRED"),
    (0x0A4, "TPM_RC_POLICY_CC"),
    (0x0A5, "TPM_RC_BINDING"),
    (0x0A6, "TPM_RC_CURVE"),
    (0x0A7, "TPM_RC_ECC_POINT"),
];

/// A non-success TPM response code, decoded for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseCode(pub u32);

impl ResponseCode {
    /// True for the warnings after which the same command should simply be sent again.
    pub fn is_retryable(self) -> bool {
        matches!(self.0, TPM_RC_RETRY | TPM_RC_YIELDED | TPM_RC_TESTING)
    }

    /// The code's base value: format-one codes without their index bits, format-zero codes as is.
    pub fn base(self) -> u32 {
        if self.0 & RC_FMT1 != 0 {
            (self.0 & 0x3F) | RC_FMT1
        } else {
            self.0
        }
    }

    /// What a format-one code refers to: handle n, session n or parameter n (1-based), if any.
    fn subject(self) -> Option<String> {
        if self.0 & RC_FMT1 == 0 {
            return None;
        }
        let n = (self.0 >> 8) & 0xF;
        if self.0 & RC_P != 0 {
            Some(format!("parameter {n}"))
        } else if n == 0 {
            None
        } else if self.0 & RC_S != 0 {
            Some(format!("session {}", n & 0x7))
        } else {
            Some(format!("handle {n}"))
        }
    }

    fn name(self) -> Option<&'static str> {
        let table = if self.0 & RC_FMT1 != 0 {
            FMT1_NAMES
        } else {
            FMT0_NAMES
        };
        table
            .iter()
            .find(|(v, _)| *v == self.base())
            .map(|(_, n)| *n)
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rc = self.0;
        if rc & RC_FMT1 == 0 && rc & RC_VER1 == 0 && rc != TPM_RC_SUCCESS {
            return write!(
                f,
                "TPM 1.2 response code {rc:#x} (is this a TPM 2.0 device?)"
            );
        }
        if rc & RC_FMT1 == 0 && rc & RC_VENDOR_FLAG != 0 {
            return write!(f, "vendor-defined response code {rc:#x}");
        }
        match (self.name(), self.subject()) {
            (Some(name), Some(subject)) => write!(f, "{name} on {subject} (rc {rc:#x})"),
            (Some(name), None) => write!(f, "{name} (rc {rc:#x})"),
            (None, Some(subject)) => write!(f, "response code {rc:#x} on {subject}"),
            (None, None) => write!(f, "response code {rc:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Codes as tpm2_rc_decode (tpm2-tools 5.4) explains them:
    //   0x9a2 tpm:session(1):authorization failure without DA implications (= TPM_RC_BAD_AUTH)
    //   0x2c4 tpm:parameter(2):value is out of range or is not correct for the context
    //   0x18b tpm:handle(1):the handle is not correct for the use
    //   0x100 tpm:error(2.0): TPM not initialized by TPM2_Startup or already initialized
    #[test]
    fn decodes_format_one_with_index() {
        let s = ResponseCode(0x9A2).to_string();
        assert_eq!(s, "TPM_RC_BAD_AUTH on session 1 (rc 0x9a2)");
        let s = ResponseCode(0x2C4).to_string();
        assert_eq!(
            s,
            "TPM_RC_VALUE (value out of range) on parameter 2 (rc 0x2c4)"
        );
        assert_eq!(
            ResponseCode(0x18B).to_string(),
            "TPM_RC_HANDLE on handle 1 (rc 0x18b)"
        );
    }

    #[test]
    fn decodes_format_zero_and_tpm12() {
        assert_eq!(
            ResponseCode(0x100).to_string(),
            "TPM_RC_INITIALIZE (TPM2_Startup was not run) (rc 0x100)"
        );
        assert!(ResponseCode(0x922).is_retryable());
        assert!(!ResponseCode(0x101).is_retryable());
        // TPM 1.2 TPM_BADTAG = 0x1e
        assert!(ResponseCode(0x1E).to_string().starts_with("TPM 1.2"));
    }
}
