//! CSMS secrets: the secret aggregate (metadata, state, scheduled deletion,
//! backup and restore), its versions and stages, its tags, secret values
//! sealed under a KMS CMK, and random passwords.
//!
//! [`SecretService`] holds only the narrow store traits it needs plus the
//! KMS key and crypto services (secret values go through the same `Vault`
//! path as encrypt-data). Store errors become domain errors once, in
//! `From<StoreError> for Error`; a bare `NotFound` names no aggregate, so the
//! calls here say which one was missing ([`secret_missing`],
//! [`resource_missing`]).
//!
//! - [`secrets`] — create, show, list, update, delete, deletion schedule;
//! - [`backup`] — the backup document and restore;
//! - [`versions`] — versions, expiry, stages (SYSCURRENT / SYSPREVIOUS);
//! - [`values`] — the value codec and sealing;
//! - [`tags`] — secret tags and the tag search;
//! - [`password`] — generate-password.

pub mod backup;
pub mod password;
pub mod secrets;
pub mod tags;
pub mod values;
pub mod versions;

use std::sync::Arc;

use keymesh_store::{
    SecretQuotas, SecretRepo, SecretState, SecretTagRepo, SecretVersionRepo, Store, StoreError,
};

use crate::clock::Clock;
use crate::crypto::CryptoService;
use crate::error::Error;
use crate::keys::KeyService;
use zeroize::Zeroizing;

/// A decrypted (or about to be encrypted) secret value.
#[derive(Debug)]
pub enum SecretValue {
    Text(Zeroizing<String>),
    Binary(Zeroizing<Vec<u8>>),
}

/// The stage on a secret's current value.
pub const SYSCURRENT: &str = "SYSCURRENT";
/// The stage the previous SYSCURRENT version receives.
pub const SYSPREVIOUS: &str = "SYSPREVIOUS";

/// `^[a-zA-Z0-9_-]{1,64}$`: secret names and stage names.
pub fn is_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The error for using a secret in `state` where ENABLED is required.
pub fn unusable(state: SecretState) -> Error {
    Error::secret_unusable(state)
}

/// A store failure where a missing row is the secret addressed by name.
pub fn secret_missing(e: StoreError) -> Error {
    match e {
        StoreError::NotFound => Error::SecretNotFound,
        e => e.into(),
    }
}

/// A store failure where a missing row is a version, stage, tag or a
/// secret addressed by id.
pub fn resource_missing(e: StoreError) -> Error {
    match e {
        StoreError::NotFound => Error::ResourceNotFound,
        e => e.into(),
    }
}

/// The secret aggregate's service (secrets, versions, stages, tags).
#[derive(Debug, Clone)]
pub struct SecretService {
    secrets: Arc<dyn SecretRepo>,
    versions: Arc<dyn SecretVersionRepo>,
    tags: Arc<dyn SecretTagRepo>,
    keys: KeyService,
    crypto: CryptoService,
    clock: Arc<dyn Clock>,
    quotas: SecretQuotas,
}

impl SecretService {
    pub(crate) fn new(
        store: &Arc<dyn Store>,
        keys: KeyService,
        crypto: CryptoService,
        clock: Arc<dyn Clock>,
        quotas: SecretQuotas,
    ) -> Self {
        Self {
            secrets: Arc::clone(store) as Arc<dyn SecretRepo>,
            versions: Arc::clone(store) as Arc<dyn SecretVersionRepo>,
            tags: Arc::clone(store) as Arc<dyn SecretTagRepo>,
            keys,
            crypto,
            clock,
            quotas,
        }
    }

    pub fn quotas(&self) -> &SecretQuotas {
        &self.quotas
    }
}

#[cfg(test)]
mod tests;
