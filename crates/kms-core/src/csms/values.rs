//! Secret values: text or binary, at most 32 KiB, encrypted under a KMS CMK
//! with the same self-describing blobs as encrypt-data (kind `Secret`, the
//! secret id bound into the AAD so a value cannot be moved to another
//! secret). A one-byte type tag inside the plaintext says text or binary.
//! Every plaintext buffer is zeroizing.

use bytes::Bytes;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::{SecretService, SecretValue};
use crate::blob::{Blob, Kind};
use crate::error::Error;

/// Largest value, in characters (text) or bytes (binary).
pub const MAX_VALUE: usize = 32 * 1024;
/// The project's default CMK for secrets (Huawei's service default key).
pub const DEFAULT_KEY_ALIAS: &str = "csms/default";
const DEFAULT_KEY_DESCRIPTION: &str = "Default master key for CSMS secrets";

const TEXT: u8 = b's';
const BINARY: u8 = b'b';

/// `value` framed for sealing: the type tag, then the bytes.
fn frame(value: &SecretValue) -> Zeroizing<Vec<u8>> {
    let mut plain = Zeroizing::new(Vec::new());
    match value {
        SecretValue::Text(s) => {
            plain.push(TEXT);
            plain.extend_from_slice(s.as_bytes());
        }
        SecretValue::Binary(b) => {
            plain.push(BINARY);
            plain.extend_from_slice(b);
        }
    }
    plain
}

/// The value an opened frame holds (`Internal` for an unknown tag or text
/// that is not UTF-8: only this code writes frames).
fn unframe(mut plain: Zeroizing<Vec<u8>>) -> Result<SecretValue, Error> {
    let binary = match plain.first() {
        Some(&TEXT) => false,
        Some(&BINARY) => true,
        _ => return Err(Error::Invariant("secret value frame")),
    };
    // Drop the type tag in place rather than copying the value: the buffer
    // (spare capacity included) stays zeroizing throughout.
    plain.remove(0);
    if binary {
        return Ok(SecretValue::Binary(plain));
    }
    // Checked first so no error value carries unwiped bytes away.
    std::str::from_utf8(&plain).map_err(|_| Error::Invariant("secret value frame"))?;
    let text = String::from_utf8(std::mem::take(&mut *plain))
        .map_err(|_| Error::Invariant("secret value frame"))?;
    Ok(SecretValue::Text(Zeroizing::new(text)))
}

impl SecretService {
    /// Encrypt `value` for the secret `secret_id` under `kms_key_id`;
    /// returns the stored ciphertext (an encoded blob).
    pub(super) async fn seal_value(
        &self,
        project: &str,
        secret_id: &str,
        kms_key_id: &str,
        value: &SecretValue,
        deadline: Instant,
    ) -> Result<Vec<u8>, Error> {
        // The request buffer is wiped when the vault drops it.
        let plain = Bytes::from_owner(frame(value));
        self.crypto
            .encrypt(
                project,
                kms_key_id,
                Kind::Secret,
                plain,
                secret_id.as_bytes(),
                deadline,
            )
            .await
    }

    /// Decrypt a stored value of the secret `secret_id` (`Ciphertext` when
    /// the stored bytes are not a blob).
    pub(super) async fn open_value(
        &self,
        project: &str,
        secret_id: &str,
        ciphertext: &[u8],
        deadline: Instant,
    ) -> Result<SecretValue, Error> {
        let blob = Blob::decode(ciphertext).ok_or(Error::Ciphertext)?;
        let plain = self
            .crypto
            .decrypt(project, &blob, Kind::Secret, secret_id.as_bytes(), deadline)
            .await?;
        unframe(plain)
    }

    /// The CMK a secret's values go under: the requested key id
    /// (`InvalidKeyId` when malformed; it must exist in the project and be
    /// enabled), or the project's `csms/default` key, created on first use.
    pub(super) async fn resolve_key(
        &self,
        project: &str,
        requested: Option<&str>,
        deadline: Instant,
    ) -> Result<String, Error> {
        match requested {
            Some(id) => {
                if !crate::ids::is_key_id(id) {
                    return Err(Error::InvalidKeyId);
                }
                let id = id.to_ascii_lowercase();
                self.keys.usable(project, &id).await?;
                Ok(id)
            }
            None => {
                self.keys
                    .default_key(
                        project,
                        DEFAULT_KEY_ALIAS,
                        DEFAULT_KEY_DESCRIPTION,
                        deadline,
                    )
                    .await
            }
        }
    }
}
