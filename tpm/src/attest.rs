//! The commands remote attestation needs (TPM 2.0 Library Part 3): keys (CreatePrimary, ReadPublic,
//! FlushContext), evidence (Quote), the EK certificate (NV_ReadPublic, NV_Read) and the AK↔EK proof
//! (ActivateCredential, authorized for the EK by a PolicySecret(TPM_RH_ENDORSEMENT) policy session).
//!
//! Every hierarchy and object here has the empty password, as on a vTPM nobody has taken ownership
//! of; the password session (`TPM_RS_PW`) carries it.

use crate::codec::{tpm2b, Command, Reader};
use crate::constants::{
    TPMA_SESSION_NONE, TPM_ALG_NULL, TPM_RH_ENDORSEMENT, TPM_RH_NULL, TPM_RS_PW,
    TPM_ST_NO_SESSIONS, TPM_ST_SESSIONS,
};
use crate::marshal;
use crate::pcr_selection::PcrSelection;
use crate::templates::{self, EkType};
use crate::{Error, HashAlg, Result, Tpm};

const TPM_CC_NV_READ: u32 = 0x0000_014E;
const TPM_CC_ACTIVATE_CREDENTIAL: u32 = 0x0000_0147;
const TPM_CC_CREATE_PRIMARY: u32 = 0x0000_0131;
const TPM_CC_POLICY_SECRET: u32 = 0x0000_0151;
const TPM_CC_QUOTE: u32 = 0x0000_0158;
const TPM_CC_FLUSH_CONTEXT: u32 = 0x0000_0165;
const TPM_CC_NV_READ_PUBLIC: u32 = 0x0000_0169;
const TPM_CC_READ_PUBLIC: u32 = 0x0000_0173;
const TPM_CC_START_AUTH_SESSION: u32 = 0x0000_0176;
const TPM_CC_GET_CAPABILITY: u32 = marshal::TPM_CC_GET_CAPABILITY;

/// `TPM_CAP_TPM_PROPERTIES`.
const TPM_CAP_TPM_PROPERTIES: u32 = 0x0000_0006;
/// `TPM_PT_NV_BUFFER_MAX` (PT_FIXED + 44): the largest NV_Read this TPM answers.
const TPM_PT_NV_BUFFER_MAX: u32 = 0x0000_012C;
/// `TPM_SE_POLICY`.
const TPM_SE_POLICY: u8 = 0x01;
/// nonceCaller for StartAuthSession: at least 16 bytes (Part 3 §11.1). The session is unbound and
/// unsalted and only carries a PolicySecret, so its freshness comes from nonceTPM; a fixed caller nonce
/// costs nothing and keeps the client free of a random number source.
const POLICY_NONCE_CALLER: [u8; 32] = [0x5A; 32];
/// Fallback NV_Read chunk when the TPM does not report TPM_PT_NV_BUFFER_MAX (the PC Client minimum).
const NV_CHUNK_FALLBACK: u16 = 512;
/// `TPM_RC_HANDLE` (format one): the NV index (or object) does not exist.
const TPM_RC_HANDLE: u32 = 0x08B;

/// A loaded key: its transient handle, public area (`TPMT_PUBLIC`, the contents of the TPM2B_PUBLIC)
/// and Name (nameAlg ‖ H(TPMT_PUBLIC)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyObject {
    pub handle: u32,
    pub public: Vec<u8>,
    pub name: Vec<u8>,
}

impl KeyObject {
    /// The public area as a `TPM2B_PUBLIC` (size-prefixed), the form tpm2-tools reads with `-u`.
    pub fn tpm2b_public(&self) -> Vec<u8> {
        tpm2b(&self.public)
    }
}

/// A quote as the TPM returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// `TPMS_ATTEST` (contents of the TPM2B_ATTEST): the signed bytes.
    pub attest: Vec<u8>,
    /// `TPMT_SIGNATURE` over SHA-256(attest).
    pub signature: Vec<u8>,
}

/// `TPMS_NV_PUBLIC` of an NV index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvPublic {
    pub index: u32,
    pub name_alg: u16,
    pub attributes: u32,
    pub data_size: u16,
}

/// Writes the authorization area for password sessions with the empty password, one per handle
/// needing authorization, and returns the command positioned at the parameters.
pub(crate) fn password_sessions(c: &mut Command, count: usize) {
    const PW_SESSION_LEN: u32 = 4 + 2 + 1 + 2;
    c.u32(PW_SESSION_LEN * count as u32);
    for _ in 0..count {
        c.u32(TPM_RS_PW).u16(0).u8(TPMA_SESSION_NONE).u16(0);
    }
}

/// Checks a TPM2B argument fits its u16 size field.
pub(crate) fn check_tpm2b(what: &str, v: &[u8]) -> Result<()> {
    if v.len() > u16::MAX as usize {
        return Err(Error::InvalidArgument(format!(
            "{what}: {} bytes do not fit a TPM2B",
            v.len()
        )));
    }
    Ok(())
}

impl Tpm {
    /// TPM2_CreatePrimary under `hierarchy` with `template` (a TPMT_PUBLIC), empty auth and no
    /// creation PCRs. The caller owns the returned transient handle (see [`Tpm::flush_context`]).
    pub fn create_primary(&mut self, hierarchy: u32, template: &[u8]) -> Result<KeyObject> {
        check_tpm2b("CreatePrimary template", template)?;
        let mut c = Command::new(TPM_ST_SESSIONS, TPM_CC_CREATE_PRIMARY);
        c.u32(hierarchy);
        password_sessions(&mut c, 1);
        // inSensitive: TPM2B_SENSITIVE_CREATE { userAuth empty, data empty }.
        c.u16(4).u16(0).u16(0);
        c.tpm2b(template);
        c.u16(0); // outsideInfo
        c.u32(0); // creationPCR: empty TPML_PCR_SELECTION
        let resp = self.execute("TPM2_CreatePrimary", &c.finish())?;
        let mut r = Reader::new(&resp, "TPM2_CreatePrimary");
        let handle = r.u32()?;
        let params = marshal::session_response_params(r.take(r.remaining())?)?;
        let mut p = Reader::new(params, "TPM2_CreatePrimary parameters");
        let public = p.tpm2b()?.to_vec();
        let _creation_data = p.tpm2b()?;
        let _creation_hash = p.tpm2b()?;
        let (_tag, _hierarchy, _digest) = (p.u16()?, p.u32()?, p.tpm2b()?);
        let name = p.tpm2b()?.to_vec();
        Ok(KeyObject {
            handle,
            public,
            name,
        })
    }

    /// Creates the attestation key (ECC P-256 restricted signing, [`templates::ak_ecc_p256_template`])
    /// under the endorsement hierarchy. The same TPM gives the same key every time.
    pub fn create_ak(&mut self) -> Result<KeyObject> {
        self.create_primary(TPM_RH_ENDORSEMENT, &templates::ak_ecc_p256_template())
    }

    /// Creates the endorsement key from the TCG default template `ek`: the key the EK certificate
    /// at [`EkType::cert_nv_index`] certifies.
    pub fn create_ek(&mut self, ek: EkType) -> Result<KeyObject> {
        self.create_primary(TPM_RH_ENDORSEMENT, &ek.template())
    }

    /// TPM2_ReadPublic: public area and Name of a loaded or persistent object.
    pub fn read_public(&mut self, handle: u32) -> Result<KeyObject> {
        let mut c = Command::new(TPM_ST_NO_SESSIONS, TPM_CC_READ_PUBLIC);
        c.u32(handle);
        let resp = self.execute("TPM2_ReadPublic", &c.finish())?;
        let mut r = Reader::new(&resp, "TPM2_ReadPublic");
        let public = r.tpm2b()?.to_vec();
        let name = r.tpm2b()?.to_vec();
        Ok(KeyObject {
            handle,
            public,
            name,
        })
    }

    /// TPM2_FlushContext: frees a transient object or session.
    pub fn flush_context(&mut self, handle: u32) -> Result<()> {
        let mut c = Command::new(TPM_ST_NO_SESSIONS, TPM_CC_FLUSH_CONTEXT);
        c.u32(handle);
        self.execute("TPM2_FlushContext", &c.finish())?;
        Ok(())
    }

    /// TPM2_Quote with `ak` over `pcrs` of `bank`, `qualifying_data` (the verifier's nonce) as
    /// extraData, and the key's own signing scheme (inScheme TPM_ALG_NULL).
    pub fn quote(
        &mut self,
        ak: u32,
        qualifying_data: &[u8],
        bank: HashAlg,
        pcrs: &[u32],
    ) -> Result<Quote> {
        check_tpm2b("quote qualifying data", qualifying_data)?;
        let sel = PcrSelection::from_pcrs(bank.alg_id(), pcrs)?;
        let mut c = Command::new(TPM_ST_SESSIONS, TPM_CC_QUOTE);
        c.u32(ak);
        password_sessions(&mut c, 1);
        c.tpm2b(qualifying_data);
        c.u16(TPM_ALG_NULL); // inScheme: the key's scheme
        c.u32(1);
        sel.write(&mut c);
        let resp = self.execute("TPM2_Quote", &c.finish())?;
        let params = marshal::session_response_params(&resp)?;
        let mut p = Reader::new(params, "TPM2_Quote parameters");
        let attest = p.tpm2b()?.to_vec();
        let signature = p.take(p.remaining())?.to_vec();
        if signature.is_empty() {
            return Err(Error::Malformed("TPM2_Quote: no signature".into()));
        }
        Ok(Quote { attest, signature })
    }

    /// TPM2_NV_ReadPublic; `Ok(None)` when the index is not defined.
    pub fn nv_read_public(&mut self, index: u32) -> Result<Option<NvPublic>> {
        let mut c = Command::new(TPM_ST_NO_SESSIONS, TPM_CC_NV_READ_PUBLIC);
        c.u32(index);
        let resp = match self.execute("TPM2_NV_ReadPublic", &c.finish()) {
            Ok(r) => r,
            Err(Error::Tpm { rc, .. }) if rc.base() == TPM_RC_HANDLE => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut r = Reader::new(&resp, "TPM2_NV_ReadPublic");
        let public = r.tpm2b()?;
        let mut p = Reader::new(public, "TPMS_NV_PUBLIC");
        let nv = NvPublic {
            index: p.u32()?,
            name_alg: p.u16()?,
            attributes: p.u32()?,
            data_size: {
                let _auth_policy = p.tpm2b()?;
                p.u16()?
            },
        };
        if nv.index != index {
            return Err(Error::Malformed(format!(
                "TPM2_NV_ReadPublic({index:#010x}) described index {:#010x}",
                nv.index
            )));
        }
        Ok(Some(nv))
    }

    /// The largest NV_Read chunk (TPM_PT_NV_BUFFER_MAX), or the PC Client minimum if not reported.
    pub fn nv_buffer_max(&mut self) -> Result<u16> {
        let mut c = Command::new(TPM_ST_NO_SESSIONS, TPM_CC_GET_CAPABILITY);
        c.u32(TPM_CAP_TPM_PROPERTIES)
            .u32(TPM_PT_NV_BUFFER_MAX)
            .u32(1);
        let resp = self.execute("TPM2_GetCapability(TPM_PT_NV_BUFFER_MAX)", &c.finish())?;
        let mut r = Reader::new(&resp, "TPM2_GetCapability(TPM_CAP_TPM_PROPERTIES)");
        let (_more, cap, count) = (r.u8()?, r.u32()?, r.u32()?);
        if cap != TPM_CAP_TPM_PROPERTIES {
            return Err(Error::Malformed(format!(
                "TPM2_GetCapability: asked for TPM properties, got capability {cap}"
            )));
        }
        for _ in 0..count {
            let (property, value) = (r.u32()?, r.u32()?);
            if property == TPM_PT_NV_BUFFER_MAX && value > 0 {
                return Ok(value.min(u16::MAX as u32) as u16);
            }
        }
        Ok(NV_CHUNK_FALLBACK)
    }

    /// Reads a whole NV index (authorized by the index's own empty auth, TPMA_NV_AUTHREAD),
    /// in chunks of at most [`Tpm::nv_buffer_max`]. `Ok(None)` when the index is not defined.
    pub fn nv_read(&mut self, index: u32) -> Result<Option<Vec<u8>>> {
        let Some(nv) = self.nv_read_public(index)? else {
            return Ok(None);
        };
        let chunk = self.nv_buffer_max()?;
        let mut out = Vec::with_capacity(nv.data_size as usize);
        while out.len() < nv.data_size as usize {
            let want = chunk.min(nv.data_size - out.len() as u16);
            let mut c = Command::new(TPM_ST_SESSIONS, TPM_CC_NV_READ);
            c.u32(index).u32(index);
            password_sessions(&mut c, 1);
            c.u16(want).u16(out.len() as u16);
            let resp = self.execute("TPM2_NV_Read", &c.finish())?;
            let params = marshal::session_response_params(&resp)?;
            let data = Reader::new(params, "TPM2_NV_Read parameters").tpm2b()?;
            if data.len() != want as usize {
                return Err(Error::Malformed(format!(
                    "TPM2_NV_Read({index:#010x}): asked for {want} bytes, got {}",
                    data.len()
                )));
            }
            out.extend_from_slice(data);
        }
        Ok(Some(out))
    }

    /// The EK certificate the manufacturer stored for template `ek`, if any (DER; trailing zero
    /// padding some TPMs leave after the certificate is kept, as TPMs return it).
    pub fn ek_certificate(&mut self, ek: EkType) -> Result<Option<Vec<u8>>> {
        self.nv_read(ek.cert_nv_index())
    }

    /// TPM2_StartAuthSession for an unbound, unsalted SHA-256 policy session; returns its handle.
    pub(crate) fn start_policy_session(&mut self) -> Result<u32> {
        let mut c = Command::new(TPM_ST_NO_SESSIONS, TPM_CC_START_AUTH_SESSION);
        c.u32(TPM_RH_NULL).u32(TPM_RH_NULL); // tpmKey, bind
        c.tpm2b(&POLICY_NONCE_CALLER);
        c.u16(0); // encryptedSalt
        c.u8(TPM_SE_POLICY);
        c.u16(TPM_ALG_NULL); // symmetric: none
        c.u16(HashAlg::Sha256.alg_id());
        let resp = self.execute("TPM2_StartAuthSession", &c.finish())?;
        Reader::new(&resp, "TPM2_StartAuthSession").u32()
    }

    /// TPM2_PolicySecret(TPM_RH_ENDORSEMENT) on `session`: satisfies the EK's policy A.
    fn policy_secret_endorsement(&mut self, session: u32) -> Result<()> {
        let mut c = Command::new(TPM_ST_SESSIONS, TPM_CC_POLICY_SECRET);
        c.u32(TPM_RH_ENDORSEMENT).u32(session);
        password_sessions(&mut c, 1);
        c.u16(0).u16(0).u16(0); // nonceTPM, cpHashA, policyRef
        c.u32(0); // expiration
        self.execute("TPM2_PolicySecret", &c.finish())?;
        Ok(())
    }

    /// TPM2_ActivateCredential: recovers the credential a verifier sealed with MakeCredential to
    /// (`ek`'s public key, `ak`'s Name). Succeeds only if `ak` is loaded in the TPM that holds `ek`.
    /// `credential_blob` and `secret` are the contents of the TPM2B_ID_OBJECT and
    /// TPM2B_ENCRYPTED_SECRET (without their size fields).
    pub fn activate_credential(
        &mut self,
        ak: u32,
        ek: u32,
        credential_blob: &[u8],
        secret: &[u8],
    ) -> Result<Vec<u8>> {
        check_tpm2b("credential blob", credential_blob)?;
        check_tpm2b("encrypted secret", secret)?;
        let session = self.start_policy_session()?;
        let result = self
            .policy_secret_endorsement(session)
            .and_then(|()| self.activate_with_session(ak, ek, session, credential_blob, secret));
        if result.is_err() {
            // A failed command leaves the session loaded; a successful one consumed it.
            let _ = self.flush_context(session);
        }
        result
    }

    fn activate_with_session(
        &mut self,
        ak: u32,
        ek: u32,
        session: u32,
        credential_blob: &[u8],
        secret: &[u8],
    ) -> Result<Vec<u8>> {
        let mut c = Command::new(TPM_ST_SESSIONS, TPM_CC_ACTIVATE_CREDENTIAL);
        c.u32(ak).u32(ek);
        // Session 1 (activateHandle, ADMIN role): password. Session 2 (keyHandle): the policy
        // session, no continueSession, empty hmac (the policy has no PolicyAuthValue).
        const SESSION_LEN: u32 = 4 + 2 + 1 + 2;
        c.u32(2 * SESSION_LEN);
        c.u32(TPM_RS_PW).u16(0).u8(TPMA_SESSION_NONE).u16(0);
        c.u32(session).u16(0).u8(TPMA_SESSION_NONE).u16(0);
        c.tpm2b(credential_blob);
        c.tpm2b(secret);
        let resp = self.execute("TPM2_ActivateCredential", &c.finish())?;
        let params = marshal::session_response_params(&resp)?;
        Ok(Reader::new(params, "TPM2_ActivateCredential parameters")
            .tpm2b()?
            .to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_argument_is_rejected_before_sending() {
        let e = check_tpm2b("credential blob", &vec![0; 70_000]).unwrap_err();
        assert!(e.to_string().contains("credential blob"), "{e}");
    }
}
