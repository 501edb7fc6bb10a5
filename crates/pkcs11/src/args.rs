//! The PKCS#11 flags the crypto-worker and keymeshctl share (module, token
//! label, user PIN), with the same names and environment variables in both.

use std::path::{Path, PathBuf};

use keymesh_common::Secret;

/// The PKCS#11 flags the worker and keymeshctl share.
#[derive(Debug, Clone, clap::Args)]
pub struct HsmArgs {
    /// PKCS#11 module (default /usr/lib/softhsm/libsofthsm2.so).
    #[arg(
        long,
        env = "KEYMESH_PKCS11_MODULE",
        default_value = "/usr/lib/softhsm/libsofthsm2.so",
        global = true
    )]
    pub pkcs11_module: PathBuf,
    /// Label of the token holding the keys (default keymesh).
    #[arg(
        long,
        env = "KEYMESH_TOKEN_LABEL",
        default_value = "keymesh",
        global = true
    )]
    pub token_label: String,
    /// User PIN (prefer --pin-file; the value is never printed).
    #[arg(
        long,
        env = "KEYMESH_PIN",
        hide_env_values = true,
        conflicts_with = "pin_file",
        global = true
    )]
    pub pin: Option<Secret>,
    /// File holding the user PIN (trailing newline ignored).
    #[arg(long, env = "KEYMESH_PIN_FILE", global = true)]
    pub pin_file: Option<PathBuf>,
}

impl HsmArgs {
    /// The user PIN from `--pin` or `--pin-file`; one is required.
    pub fn pin(&self) -> anyhow::Result<Secret> {
        match (&self.pin, &self.pin_file) {
            (Some(pin), _) if !pin.expose().is_empty() => Ok(pin.clone()),
            (_, Some(path)) => read_pin_file(path),
            _ => anyhow::bail!(
                "a PIN is required: --pin / KEYMESH_PIN or --pin-file / KEYMESH_PIN_FILE"
            ),
        }
    }
}

/// Read a PIN file, dropping one trailing newline (editors add one).
pub fn read_pin_file(path: &Path) -> anyhow::Result<Secret> {
    let raw = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read PIN file {}: {e}", path.display()))?;
    let raw = zeroize::Zeroizing::new(raw);
    let pin = raw.trim_end_matches(['\n', '\r']);
    if pin.is_empty() {
        anyhow::bail!("PIN file {} is empty", path.display());
    }
    Ok(Secret::new(pin.to_owned()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn pin_file_drops_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pin");
        std::fs::write(&p, "9876\n").unwrap();
        assert_eq!(read_pin_file(&p).unwrap().expose(), "9876");
    }
}
