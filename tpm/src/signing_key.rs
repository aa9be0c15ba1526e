//! The boot signing key: created, certified by the AK, and used under its PCR policy.
//!
//! * [`Tpm::create_signing_key`]: TPM2_CreatePrimary of [`templates::signing_key_ecc_p256_template`]
//!   in the **null hierarchy**. A primary needs no storage parent (the AK is a signing key and
//!   cannot be one) and is derived from the seed and the template, so the agent can recreate the
//!   same key on every request without keeping a handle or a private blob; and the null seed is
//!   replaced at every TPM reset, so the key exists for this boot only and no later boot, even
//!   one that reaches the same PCR values, can recreate it.
//! * [`Tpm::certify`]: TPM2_Certify, the AK's signed statement that an object with this Name is
//!   loaded in the TPM that holds the AK.
//! * [`Tpm::sign_with_pcr_policy`]: a policy session, TPM2_PolicyPCR with an empty pcrDigest (the TPM
//!   hashes the current PCR values itself), TPM2_Sign. If the PCRs are no longer those of the key's
//!   authPolicy the session's digest differs and the TPM refuses: [`Error::PcrPolicyMismatch`].

use crate::attest::{check_tpm2b, password_sessions};
use crate::codec::{Command, Reader};
use crate::constants::{
    TPMA_SESSION_NONE, TPM_ALG_NULL, TPM_RH_NULL, TPM_ST_HASHCHECK, TPM_ST_NO_SESSIONS,
    TPM_ST_SESSIONS,
};
use crate::marshal;
use crate::pcr_selection::PcrSelection;
use crate::templates;
use crate::{Error, HashAlg, KeyObject, Result, Tpm};

const TPM_CC_CERTIFY: u32 = 0x0000_0148;
const TPM_CC_SIGN: u32 = 0x0000_015D;
const TPM_CC_POLICY_PCR: u32 = crate::policy::TPM_CC_POLICY_PCR;
/// `TPM_RC_POLICY_FAIL` (format one): the policy session's digest is not the object's authPolicy.
const TPM_RC_POLICY_FAIL: u32 = 0x09D;
/// `TPM_RC_PCR_CHANGED`: a PCR changed between TPM2_PolicyPCR and the command it authorizes.
const TPM_RC_PCR_CHANGED: u32 = 0x128;
/// How often the policy session is rebuilt after TPM_RC_PCR_CHANGED. The TPM's PCR update
/// counter moves on extends of PCRs outside the policy too, so one race is not a mismatch.
const PCR_CHANGED_RETRIES: usize = 3;
/// The digest TPM2_Sign accepts here: SHA-256, the key's scheme hash.
pub const SIGN_DIGEST_LEN: usize = 32;

/// An attestation by the AK: `TPMS_ATTEST` and the `TPMT_SIGNATURE` over SHA-256 of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certification {
    /// `TPMS_ATTEST` (contents of the TPM2B_ATTEST), type TPM_ST_ATTEST_CERTIFY.
    pub attest: Vec<u8>,
    /// `TPMT_SIGNATURE` by the signing key of the certify (the AK).
    pub signature: Vec<u8>,
}

impl Tpm {
    /// Creates (or recreates: same seed and policy, same key) the boot signing key in the null
    /// hierarchy, with `auth_policy` as its only authorization (normally
    /// [`crate::pcr_policy_digest`] of the current PCRs). The caller flushes the handle.
    pub fn create_signing_key(&mut self, auth_policy: &[u8; 32]) -> Result<KeyObject> {
        self.create_primary(
            TPM_RH_NULL,
            &templates::signing_key_ecc_p256_template(auth_policy),
        )
    }

    /// TPM2_Certify of the loaded `object` by `signer` (the AK; its own scheme), with
    /// `qualifying_data` (a verifier's nonce) as extraData. Both handles are authorized by their
    /// empty authValue (the signing key's ADMIN role: see [`templates::SIGNING_KEY_ATTRIBUTES`]).
    pub fn certify(
        &mut self,
        object: u32,
        signer: u32,
        qualifying_data: &[u8],
    ) -> Result<Certification> {
        check_tpm2b("certify qualifying data", qualifying_data)?;
        let mut c = Command::new(TPM_ST_SESSIONS, TPM_CC_CERTIFY);
        c.u32(object).u32(signer);
        password_sessions(&mut c, 2);
        c.tpm2b(qualifying_data);
        c.u16(TPM_ALG_NULL); // inScheme: the signer's scheme
        let resp = self.execute("TPM2_Certify", &c.finish())?;
        let params = marshal::session_response_params(&resp)?;
        let mut p = Reader::new(params, "TPM2_Certify parameters");
        let attest = p.tpm2b()?.to_vec();
        let signature = p.take(p.remaining())?.to_vec();
        if signature.is_empty() {
            return Err(Error::Malformed("TPM2_Certify: no signature".into()));
        }
        Ok(Certification { attest, signature })
    }

    /// Signs the SHA-256 `digest` with `key`, authorized by a policy session that has run
    /// TPM2_PolicyPCR over `pcrs` of `bank` (the selection the key's authPolicy was computed for).
    /// Returns the `TPMT_SIGNATURE` (the key's scheme: ECDSA/SHA-256).
    ///
    /// The session is unbound and unsalted: it carries no secret (no PolicyAuthValue/PolicyPassword,
    /// empty HMAC), and parameter encryption would protect nothing the caller does not already
    /// see — the digest and the signature are both public. An attacker on the TPM bus could replay
    /// nothing useful either: the TPM checks the PCRs itself when PolicyPCR runs.
    ///
    /// [`Error::PcrPolicyMismatch`] when the PCRs no longer hold the values of the key's authPolicy.
    pub fn sign_with_pcr_policy(
        &mut self,
        key: u32,
        bank: HashAlg,
        pcrs: &[u32],
        digest: &[u8; SIGN_DIGEST_LEN],
    ) -> Result<Vec<u8>> {
        let sel = PcrSelection::from_pcrs(bank.alg_id(), pcrs)?;
        let mut attempt = 0;
        loop {
            match self.sign_in_policy_session(key, &sel, digest) {
                Err(Error::Tpm { rc, .. })
                    if rc.base() == TPM_RC_PCR_CHANGED && attempt < PCR_CHANGED_RETRIES =>
                {
                    attempt += 1;
                }
                Err(Error::Tpm { command, rc })
                    if rc.base() == TPM_RC_POLICY_FAIL || rc.base() == TPM_RC_PCR_CHANGED =>
                {
                    return Err(Error::PcrPolicyMismatch { command, rc });
                }
                other => return other,
            }
        }
    }

    /// One policy session: start, PolicyPCR, Sign (which consumes it); flushed on failure.
    fn sign_in_policy_session(
        &mut self,
        key: u32,
        sel: &PcrSelection,
        digest: &[u8; SIGN_DIGEST_LEN],
    ) -> Result<Vec<u8>> {
        let session = self.start_policy_session()?;
        let result = self
            .policy_pcr(session, sel)
            .and_then(|()| self.sign_with_session(key, session, digest));
        if result.is_err() {
            // A failed command leaves the session loaded; a successful Sign consumed it.
            let _ = self.flush_context(session);
        }
        result
    }

    /// TPM2_PolicyPCR(session, pcrDigest = empty, pcrs): the TPM extends the session's digest with
    /// the hash of the PCRs' current values.
    fn policy_pcr(&mut self, session: u32, sel: &PcrSelection) -> Result<()> {
        let mut c = Command::new(TPM_ST_NO_SESSIONS, TPM_CC_POLICY_PCR);
        c.u32(session);
        c.u16(0); // pcrDigest: empty, the TPM uses the current values
        c.u32(1);
        sel.write(&mut c);
        self.execute("TPM2_PolicyPCR", &c.finish())?;
        Ok(())
    }

    /// TPM2_Sign(key, digest, inScheme NULL, validation = NULL ticket), authorized by `session`.
    /// A NULL ticket (TPM_ST_HASHCHECK, TPM_RH_NULL, empty digest) is accepted by unrestricted
    /// keys only: this key signs what it is given, which is its purpose.
    fn sign_with_session(
        &mut self,
        key: u32,
        session: u32,
        digest: &[u8; SIGN_DIGEST_LEN],
    ) -> Result<Vec<u8>> {
        let mut c = Command::new(TPM_ST_SESSIONS, TPM_CC_SIGN);
        c.u32(key);
        // Authorization: the policy session, nonceCaller empty, no continueSession, empty hmac.
        const SESSION_LEN: u32 = 4 + 2 + 1 + 2;
        c.u32(SESSION_LEN);
        c.u32(session).u16(0).u8(TPMA_SESSION_NONE).u16(0);
        c.tpm2b(digest);
        c.u16(TPM_ALG_NULL); // inScheme: the key's scheme
        c.u16(TPM_ST_HASHCHECK).u32(TPM_RH_NULL).u16(0); // validation ticket
        let resp = self.execute("TPM2_Sign", &c.finish())?;
        let params = marshal::session_response_params(&resp)?;
        let signature = params.to_vec();
        if signature.is_empty() {
            return Err(Error::Malformed("TPM2_Sign: no signature".into()));
        }
        Ok(signature)
    }
}
