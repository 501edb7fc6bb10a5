//! Customer key objects on the token: what a key is (type, length, usage,
//! protection), finding it by label, copying it into a session object, and
//! the attribute templates keys are created with.
//!
//! Nothing here is async: every function blocks on the HSM.

use cryptoki::error::Error as Pkcs11Error;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use crate::error::Error;

/// Label of the per-session AES key the deep health check uses. It is a
/// session object (CKA_TOKEN=false), so it never reaches the token store and
/// can never be mistaken for a customer key (those are looked up with
/// CKA_TOKEN=true).
pub const HEALTH_KEY_LABEL: &str = "keymesh-health-check";

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
    fn key_template_sets_every_attribute() {
        let t = aes_256_template("k", true, true, false);
        assert!(t.contains(&Attribute::Sensitive(true)));
        assert!(t.contains(&Attribute::Extractable(false)));
        assert!(t.contains(&Attribute::Wrap(false)));
        assert!(t.contains(&Attribute::Decrypt(false)));
        assert!(t.contains(&Attribute::Token(true)));
    }
}
