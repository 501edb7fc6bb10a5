//! PKCS#11 plumbing shared by the worker and `keymeshctl`: loading the module
//! once, finding the token by label, logged-in sessions, key lookup by label,
//! key creation and token initialisation.
//!
//! Nothing here is async: every function blocks on the HSM and must run on a
//! session thread (worker) or in a plain CLI process (keymeshctl).

use std::path::Path;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as Pkcs11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use keymesh_common::Secret;

use crate::error::Error;

/// Label of the per-session AES key the deep health check uses. It is a
/// session object (CKA_TOKEN=false), so it never reaches the token store and
/// can never be mistaken for a customer key (those are looked up with
/// CKA_TOKEN=true).
pub const HEALTH_KEY_LABEL: &str = "keymesh-health-check";

/// Load the PKCS#11 module and call `C_Initialize` — exactly once per process
/// (a second call fails with CKR_CRYPTOKI_ALREADY_INITIALIZED). OS locking is
/// requested because several session threads call into the library at once.
pub fn load_module(path: &Path) -> Result<Pkcs11, Error> {
    let ctx = Pkcs11::new(path).map_err(Error::Hsm)?;
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(Error::Hsm)?;
    Ok(ctx)
}

/// The slot holding the initialised token labelled `label`. Slot ids are not
/// stable (SoftHSM2 renumbers after `C_InitToken`), labels are.
pub fn find_token_slot(ctx: &Pkcs11, label: &str) -> Result<Option<Slot>, Error> {
    for slot in ctx.get_slots_with_token().map_err(Error::Hsm)? {
        let info = ctx.get_token_info(slot).map_err(Error::Hsm)?;
        if info.token_initialized() && info.label() == label {
            return Ok(Some(slot));
        }
    }
    Ok(None)
}

/// Log `session` in, treating "already logged in" as success: login state is
/// per token per process, so every session after the first sees it.
pub fn login(session: &Session, user: UserType, pin: &Secret) -> Result<(), Pkcs11Error> {
    let pin = AuthPin::from(pin.expose());
    match session.login(user, Some(&pin)) {
        Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether a failure means the session (or the login behind it) is gone, so
/// the only cure is a fresh session and a fresh login. Used by the session
/// pool's single re-open decision point.
pub fn session_lost(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::UserNotLoggedIn
            | RvError::DeviceRemoved
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::CryptokiNotInitialized
    )
}

/// Whether a failure means a cached object handle no longer names an object
/// (another process deleted or re-created the key).
pub fn handle_stale(rv: RvError) -> bool {
    matches!(rv, RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid)
}

/// A token opened for use: module context, slot and user PIN.
pub struct Hsm {
    ctx: Pkcs11,
    slot: Slot,
    pin: Secret,
    token: TokenDescription,
}

impl std::fmt::Debug for Hsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hsm")
            .field("slot", &self.slot)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// What the token says about itself (for GetHealth).
#[derive(Debug, Clone)]
pub struct TokenDescription {
    pub label: String,
    pub manufacturer: String,
    pub model: String,
    pub firmware_version: String,
    pub hardware_version: String,
}

impl Hsm {
    /// Find the token labelled `label` in an initialised module.
    pub fn open(ctx: Pkcs11, label: &str, pin: Secret) -> Result<Self, Error> {
        let slot = find_token_slot(&ctx, label)?.ok_or_else(|| Error::TokenNotFound {
            label: label.to_owned(),
        })?;
        let info = ctx.get_token_info(slot).map_err(Error::Hsm)?;
        let token = TokenDescription {
            label: info.label().to_owned(),
            manufacturer: info.manufacturer_id().to_owned(),
            model: info.model().to_owned(),
            firmware_version: info.firmware_version().to_string(),
            hardware_version: info.hardware_version().to_string(),
        };
        Ok(Self {
            ctx,
            slot,
            pin,
            token,
        })
    }

    pub fn context(&self) -> &Pkcs11 {
        &self.ctx
    }

    pub fn token(&self) -> &TokenDescription {
        &self.token
    }

    /// A read-write session logged in as the user.
    pub fn open_session(&self) -> Result<Session, Pkcs11Error> {
        let session = self.ctx.open_rw_session(self.slot)?;
        login(&session, UserType::User, &self.pin)?;
        Ok(session)
    }

    /// A read-only session logged in as the user. Enough to create session
    /// objects (key copies), and it cannot create or change token objects.
    pub fn open_ro_session(&self) -> Result<Session, Pkcs11Error> {
        let session = self.ctx.open_ro_session(self.slot)?;
        login(&session, UserType::User, &self.pin)?;
        Ok(session)
    }
}

/// Usage attributes of a key (CKA_ENCRYPT ... CKA_DERIVE).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyUsage {
    pub encrypt: bool,
    pub decrypt: bool,
    pub wrap: bool,
    pub unwrap: bool,
    pub sign: bool,
    pub verify: bool,
    pub derive: bool,
}

impl KeyUsage {
    /// Upper-case names, as GetKeyMetadata reports them.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.encrypt, "ENCRYPT"),
            (self.decrypt, "DECRYPT"),
            (self.wrap, "WRAP"),
            (self.unwrap, "UNWRAP"),
            (self.sign, "SIGN"),
            (self.verify, "VERIFY"),
            (self.derive, "DERIVE"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// What the worker caches about a key: everything it needs to check a request
/// without another round trip to the HSM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub handle: ObjectHandle,
    pub key_type: Option<KeyType>,
    /// CKA_VALUE_LEN in bytes, when the token reports it.
    pub value_len: Option<usize>,
    pub usage: KeyUsage,
}

impl KeyInfo {
    pub fn is_aes_256(&self) -> bool {
        self.key_spec() == AES_256
    }

    /// "AES_256" for the keys we serve; otherwise the truth ("AES_128",
    /// "GENERIC_SECRET_512", "DES3", ...).
    pub fn key_spec(&self) -> String {
        key_spec(self.key_type, self.value_len)
    }
}

/// The only key spec the worker encrypts with.
pub const AES_256: &str = "AES_256";

fn key_spec(key_type: Option<KeyType>, value_len: Option<usize>) -> String {
    let name = match key_type {
        Some(t) if t == KeyType::AES => "AES".to_owned(),
        Some(t) => t.to_string().trim_start_matches("CKK_").to_owned(),
        None => "UNKNOWN".to_owned(),
    };
    match value_len {
        Some(len) if len > 0 => format!("{name}_{}", len * 8),
        _ => name,
    }
}

const KEY_INFO_ATTRIBUTES: [AttributeType; 9] = [
    AttributeType::KeyType,
    AttributeType::ValueLen,
    AttributeType::Encrypt,
    AttributeType::Decrypt,
    AttributeType::Wrap,
    AttributeType::Unwrap,
    AttributeType::Sign,
    AttributeType::Verify,
    AttributeType::Derive,
];

/// Read a key's type, length and usage flags.
pub fn key_info(session: &Session, handle: ObjectHandle) -> Result<KeyInfo, Pkcs11Error> {
    let mut info = KeyInfo {
        handle,
        key_type: None,
        value_len: None,
        usage: KeyUsage::default(),
    };
    // Attributes the token cannot report are skipped by cryptoki and stay at
    // their "not permitted" defaults.
    for attr in session.get_attributes(handle, &KEY_INFO_ATTRIBUTES)? {
        match attr {
            Attribute::KeyType(t) => info.key_type = Some(t),
            Attribute::ValueLen(len) => info.value_len = Some(usize::from(len)),
            Attribute::Encrypt(b) => info.usage.encrypt = b,
            Attribute::Decrypt(b) => info.usage.decrypt = b,
            Attribute::Wrap(b) => info.usage.wrap = b,
            Attribute::Unwrap(b) => info.usage.unwrap = b,
            Attribute::Sign(b) => info.usage.sign = b,
            Attribute::Verify(b) => info.usage.verify = b,
            Attribute::Derive(b) => info.usage.derive = b,
            _ => {}
        }
    }
    Ok(info)
}

/// The protection attributes of a key: what a session copy must carry over
/// unchanged from its token source. The check value (CKA_CHECK_VALUE, a
/// 3-byte commitment to the key value, not the key) tells apart two keys
/// that happen to get the same handle; tokens that do not report it leave
/// it `None`. It is never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyProtection {
    pub token: bool,
    pub sensitive: bool,
    pub extractable: bool,
    pub check_value: Option<Vec<u8>>,
}

impl std::fmt::Debug for KeyProtection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyProtection")
            .field("token", &self.token)
            .field("sensitive", &self.sensitive)
            .field("extractable", &self.extractable)
            .field(
                "check_value",
                &self.check_value.as_ref().map(|_| "<present>"),
            )
            .finish()
    }
}

impl KeyProtection {
    /// Same protection and same key value, wherever the object lives.
    pub fn same_key_as(&self, other: &Self) -> bool {
        self.sensitive == other.sensitive
            && self.extractable == other.extractable
            && self.check_value == other.check_value
    }
}

/// Read a key's CKA_TOKEN, CKA_SENSITIVE, CKA_EXTRACTABLE and CKA_CHECK_VALUE.
/// Unreported attributes fall back to the least flattering value
/// (not sensitive, extractable), so a token that hides them never looks safer
/// than it is.
pub fn key_protection(
    session: &Session,
    handle: ObjectHandle,
) -> Result<KeyProtection, Pkcs11Error> {
    let mut p = KeyProtection {
        token: false,
        sensitive: false,
        extractable: true,
        check_value: None,
    };
    for attr in session.get_attributes(
        handle,
        &[
            AttributeType::Token,
            AttributeType::Sensitive,
            AttributeType::Extractable,
            AttributeType::CheckValue,
        ],
    )? {
        match attr {
            Attribute::Token(b) => p.token = b,
            Attribute::Sensitive(b) => p.sensitive = b,
            Attribute::Extractable(b) => p.extractable = b,
            Attribute::CheckValue(v) if !v.is_empty() => p.check_value = Some(v),
            _ => {}
        }
    }
    Ok(p)
}

/// Copy the token key `handle` into a session object (CKA_TOKEN=false) owned
/// by `session`. Only CKA_TOKEN is changed; every other attribute, notably
/// CKA_SENSITIVE, CKA_EXTRACTABLE and the usage flags, is inherited. Tokens
/// may refuse (CKA_COPYABLE=false, CKR_ACTION_PROHIBITED, ...).
pub fn copy_to_session_object(
    session: &Session,
    handle: ObjectHandle,
) -> Result<ObjectHandle, Pkcs11Error> {
    session.copy_object(handle, &[Attribute::Token(false)])
}

/// Handles of the customer secret keys labelled `label`. CKA_TOKEN=true keeps
/// session objects (such as the health-check key) out of customer lookups.
pub fn find_key_handles(session: &Session, label: &str) -> Result<Vec<ObjectHandle>, Pkcs11Error> {
    session.find_objects(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ])
}

/// The key labelled `key_id`: exactly one must exist.
pub fn find_key(session: &Session, key_id: &str) -> Result<KeyInfo, Error> {
    let handles = find_key_handles(session, key_id).map_err(|e| Error::from_pkcs11(e, key_id))?;
    match handles.as_slice() {
        [] => Err(Error::KeyNotFound {
            key_id: key_id.to_owned(),
        }),
        [handle] => key_info(session, *handle).map_err(|e| Error::from_pkcs11(e, key_id)),
        many => Err(Error::AmbiguousKey {
            key_id: key_id.to_owned(),
            count: many.len(),
        }),
    }
}

/// Every customer secret key on the token, with its label.
pub fn list_keys(session: &Session) -> Result<Vec<(String, KeyInfo)>, Pkcs11Error> {
    let handles = session.find_objects(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Token(true),
    ])?;
    let mut keys = Vec::with_capacity(handles.len());
    for handle in handles {
        let mut label = String::new();
        for attr in session.get_attributes(handle, &[AttributeType::Label])? {
            if let Attribute::Label(bytes) = attr {
                label = String::from_utf8_lossy(&bytes).into_owned();
            }
        }
        keys.push((label, key_info(session, handle)?));
    }
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(keys)
}

/// The full attribute template of an AES-256 key. Every attribute is set
/// explicitly: SoftHSM2's defaults (SENSITIVE=false, WRAP=true) are not what
/// a KMS key needs.
pub fn aes_256_template(label: &str, token: bool, encrypt: bool, decrypt: bool) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(token),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::ValueLen(32.into()),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(label.as_bytes().to_vec()),
        Attribute::Encrypt(encrypt),
        Attribute::Decrypt(decrypt),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
    ]
}

/// Generate a token AES-256 key labelled `key_id` inside the HSM.
/// Uniqueness of the label is the caller's job (PKCS#11 allows duplicates).
pub fn generate_aes_256(
    session: &Session,
    key_id: &str,
    encrypt: bool,
    decrypt: bool,
) -> Result<ObjectHandle, Pkcs11Error> {
    session.generate_key(
        &Mechanism::AesKeyGen,
        &aes_256_template(key_id, true, encrypt, decrypt),
    )
}

/// The session-only AES-256 key the deep health check encrypts with.
pub fn generate_health_key(session: &Session) -> Result<ObjectHandle, Pkcs11Error> {
    session.generate_key(
        &Mechanism::AesKeyGen,
        &aes_256_template(HEALTH_KEY_LABEL, false, true, true),
    )
}

/// Default CKA_LABEL of the domain key (`--domain-key-label`): the HSM-resident
/// AES-256 key that wraps customer master keys kept outside the HSM
/// ([`crate::wrapped`]).
pub const DEFAULT_DOMAIN_KEY_LABEL: &str = "keymesh-domain-v1";

/// CKA_LABEL of the session objects (CKA_TOKEN=false) holding unwrapped or
/// freshly generated customer master keys. Never a customer key label:
/// those are looked up with CKA_TOKEN=true.
pub const VAULT_KEY_LABEL: &str = "keymesh-vault-key";

/// The wrapping mechanism of customer master keys: AES Key Wrap with Padding
/// (RFC 5649, CKM_AES_KEY_WRAP_PAD; SoftHSM2 2.6 has it). It carries its own
/// integrity check, so a corrupted or foreign blob fails to unwrap instead of
/// yielding a wrong key.
pub const WRAP_MECHANISM: Mechanism<'static> = Mechanism::AesKeyWrapPad;

/// The domain key: an AES-256 token key that can only wrap and unwrap
/// (no encrypt/decrypt, so it cannot be used as a customer key), sensitive
/// and non-extractable, so it never leaves the HSM.
pub fn domain_key_template(label: &str) -> Vec<Attribute> {
    let mut template = aes_256_template(label, true, false, false);
    for attr in &mut template {
        match attr {
            Attribute::Wrap(w) | Attribute::Unwrap(w) => *w = true,
            _ => {}
        }
    }
    template
}

/// Generate the domain key labelled `label` on the token. Uniqueness of the
/// label is the caller's job.
pub fn generate_domain_key(session: &Session, label: &str) -> Result<ObjectHandle, Pkcs11Error> {
    session.generate_key(&Mechanism::AesKeyGen, &domain_key_template(label))
}

/// The domain key labelled `label`: exactly one token secret key with that
/// label, AES-256, with CKA_WRAP and CKA_UNWRAP.
pub fn find_domain_key(session: &Session, label: &str) -> Result<ObjectHandle, Error> {
    let missing = |problem| Error::WrappingKeyMissing {
        label: label.to_owned(),
        problem,
    };
    let handles = find_key_handles(session, label).map_err(|e| Error::from_pkcs11(e, label))?;
    let handle = match handles.as_slice() {
        [] => return Err(missing("is not on the token")),
        [handle] => *handle,
        many => {
            return Err(Error::AmbiguousKey {
                key_id: label.to_owned(),
                count: many.len(),
            });
        }
    };
    let info = key_info(session, handle).map_err(|e| Error::from_pkcs11(e, label))?;
    if !info.is_aes_256() || !info.usage.wrap || !info.usage.unwrap {
        return Err(missing(
            "is not an AES-256 key with CKA_WRAP and CKA_UNWRAP",
        ));
    }
    Ok(handle)
}

/// A fresh customer master key as a session object: extractable so that it
/// can be wrapped (once, under the domain key), sensitive so its value cannot
/// be read in clear, and usable for nothing else.
pub fn new_vault_key_template() -> Vec<Attribute> {
    let mut template = aes_256_template(VAULT_KEY_LABEL, false, false, false);
    for attr in &mut template {
        if let Attribute::Extractable(e) = attr {
            *e = true;
        }
    }
    template
}

/// An unwrapped customer master key: a session object that can encrypt and
/// decrypt, sensitive and non-extractable, so it can neither be read nor
/// wrapped again. CKA_VALUE_LEN is left out: the length comes from the
/// wrapped bytes, and SoftHSM2 refuses C_UnwrapKey templates that give it.
pub fn unwrapped_vault_key_template() -> Vec<Attribute> {
    aes_256_template(VAULT_KEY_LABEL, false, true, true)
        .into_iter()
        .filter(|a| !matches!(a, Attribute::ValueLen(_)))
        .collect()
}

/// Outcome of [`init_token`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenInit {
    Created,
    AlreadyExists,
}

/// Initialise a free slot as token `label` with `so_pin`, then set the user
/// PIN. With `if_missing`, an existing token with this label is left alone;
/// without it, an existing token is an error (re-initialising would destroy
/// every key on it, which no CLI command should do by accident).
pub fn init_token(
    ctx: &Pkcs11,
    label: &str,
    so_pin: &Secret,
    user_pin: &Secret,
    if_missing: bool,
) -> anyhow::Result<TokenInit> {
    if find_token_slot(ctx, label)?.is_some() {
        if if_missing {
            return Ok(TokenInit::AlreadyExists);
        }
        anyhow::bail!("a token labelled {label:?} already exists (use --if-missing to accept it)");
    }
    let mut free = None;
    for slot in ctx.get_slots_with_token()? {
        if !ctx.get_token_info(slot)?.token_initialized() {
            free = Some(slot);
            break;
        }
    }
    let slot = free.ok_or_else(|| anyhow::anyhow!("no uninitialised slot is available"))?;
    ctx.init_token(slot, &AuthPin::from(so_pin.expose()), label)
        .map_err(|e| anyhow::anyhow!("C_InitToken failed: {e}"))?;
    // SoftHSM2 renumbers the slot once it holds a token: find it again by label.
    let slot = find_token_slot(ctx, label)?
        .ok_or_else(|| anyhow::anyhow!("token {label:?} vanished right after C_InitToken"))?;
    let session = ctx.open_rw_session(slot)?;
    login(&session, UserType::So, so_pin).map_err(|e| anyhow::anyhow!("SO login failed: {e}"))?;
    session
        .init_pin(&AuthPin::from(user_pin.expose()))
        .map_err(|e| anyhow::anyhow!("C_InitPIN failed: {e}"))?;
    session.logout()?;
    Ok(TokenInit::Created)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn key_specs_tell_the_truth() {
        assert_eq!(key_spec(Some(KeyType::AES), Some(32)), AES_256);
        assert_eq!(key_spec(Some(KeyType::AES), Some(16)), "AES_128");
        assert_eq!(
            key_spec(Some(KeyType::GENERIC_SECRET), Some(64)),
            "GENERIC_SECRET_512"
        );
        assert_eq!(key_spec(None, None), "UNKNOWN");
    }

    #[test]
    fn usage_names() {
        let u = KeyUsage {
            encrypt: true,
            unwrap: true,
            ..KeyUsage::default()
        };
        assert_eq!(u.names(), ["ENCRYPT", "UNWRAP"]);
    }

    #[test]
    fn vault_templates() {
        let d = domain_key_template("dk");
        for a in [
            Attribute::Token(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
        ] {
            assert!(d.contains(&a), "{a:?}");
        }
        let n = new_vault_key_template();
        for a in [
            Attribute::Token(false),
            Attribute::Sensitive(true),
            Attribute::Extractable(true),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
        ] {
            assert!(n.contains(&a), "{a:?}");
        }
        let u = unwrapped_vault_key_template();
        for a in [
            Attribute::Token(false),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
        ] {
            assert!(u.contains(&a), "{a:?}");
        }
        assert!(!u.iter().any(|a| matches!(a, Attribute::ValueLen(_))));
    }

    #[test]
    fn key_template_sets_every_attribute() {
        let t = aes_256_template("k", true, true, false);
        assert!(t.contains(&Attribute::Sensitive(true)));
        assert!(t.contains(&Attribute::Extractable(false)));
        assert!(t.contains(&Attribute::Wrap(false)));
        assert!(t.contains(&Attribute::Decrypt(false)));
        assert!(t.contains(&Attribute::Token(true)));
    }
}
