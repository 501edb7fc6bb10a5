//! `token init` and `key ...`: PKCS#11 through [`keymesh_pkcs11`], key status
//! through the key-status file (`keymesh_contracts::key_status`).

use std::path::Path;

use cryptoki::context::Pkcs11;
use cryptoki::session::Session;
use keymesh_common::Secret;
use keymesh_contracts::key_status;
use keymesh_pkcs11::args::HsmArgs;
use keymesh_pkcs11::keys;
use keymesh_pkcs11::token::{self, Hsm, TokenInit};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Usage {
    EncryptDecrypt,
    Encrypt,
    Decrypt,
    None,
}

impl Usage {
    fn flags(self) -> (bool, bool) {
        match self {
            Usage::EncryptDecrypt => (true, true),
            Usage::Encrypt => (true, false),
            Usage::Decrypt => (false, true),
            Usage::None => (false, false),
        }
    }
}

/// Key ids are PKCS#11 labels and XKS key ids: 1-128 of `A-Za-z0-9-._`.
pub fn validate_key_id(id: &str) -> anyhow::Result<()> {
    if id.is_empty() || id.len() > 128 {
        anyhow::bail!("key id must be 1-128 characters, got {}", id.len());
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        anyhow::bail!("key id {id:?} may only contain A-Z a-z 0-9 - . _");
    }
    if keymesh_common::labels::is_reserved(id) {
        anyhow::bail!(
            "key id {id:?} is in the prefix {:?} reserved for keymesh's own objects",
            keymesh_common::labels::RESERVED_PREFIX
        );
    }
    Ok(())
}

fn load(args: &HsmArgs) -> anyhow::Result<Pkcs11> {
    token::load_module(&args.pkcs11_module).map_err(|e| {
        anyhow::anyhow!(
            "cannot load PKCS#11 module {}: {e:#}",
            args.pkcs11_module.display()
        )
    })
}

/// The module, initialised, once it lists the configured token
/// ([`token::load_with_token`]: SoftHSM2 may skip a token another process
/// is rewriting, so a missing one is looked for again).
fn load_with_token(args: &HsmArgs) -> anyhow::Result<Pkcs11> {
    token::load_with_token(&args.pkcs11_module, &args.token_label).map_err(|e| {
        anyhow::anyhow!(
            "cannot load PKCS#11 module {}: {e:#}",
            args.pkcs11_module.display()
        )
    })
}

/// A logged-in session on the configured token.
pub(crate) fn user_session(args: &HsmArgs) -> anyhow::Result<Session> {
    let pin = args.pin()?;
    let hsm = Hsm::open(load_with_token(args)?, &args.token_label, pin)?;
    hsm.open_session()
        .map_err(|e| anyhow::anyhow!("cannot log in to token {:?}: {e}", args.token_label))
}

pub fn token_init(args: &HsmArgs, so_pin: Option<Secret>, if_missing: bool) -> anyhow::Result<()> {
    let pin = args.pin()?;
    let so_pin = so_pin.unwrap_or_else(|| pin.clone());
    let ctx = load(args)?;
    match token::init_token(&ctx, &args.token_label, &so_pin, &pin, if_missing)? {
        TokenInit::Created => println!("initialised token {:?}", args.token_label),
        TokenInit::AlreadyExists => println!("token {:?} already exists", args.token_label),
    }
    Ok(())
}

/// Create the key, then assign it to each of `keystores` (checked first, so
/// a typo in a URI path creates nothing).
pub fn create(
    args: &HsmArgs,
    id: &str,
    usage: Usage,
    keystores: Option<&Path>,
    assign_to: &[String],
) -> anyhow::Result<()> {
    validate_key_id(id)?;
    let assignment = match (assign_to.is_empty(), keystores) {
        (true, _) => None,
        (false, None) => {
            anyhow::bail!("--keystore needs --keystores-file / KEYMESH_KEYSTORES_FILE")
        }
        (false, Some(path)) => {
            let mut file = crate::credentials::read(path)?;
            for ks in assign_to {
                file.assign(ks, id)?;
            }
            Some((path, file))
        }
    };
    let session = user_session(args)?;
    // PKCS#11 allows duplicate labels; the worker would then refuse the key
    // as ambiguous, so uniqueness is enforced here.
    if !keys::find_key_handles(&session, id)?.is_empty() {
        anyhow::bail!("a key labelled {id:?} already exists");
    }
    let (encrypt, decrypt) = usage.flags();
    keys::generate_aes_256(&session, id, encrypt, decrypt)
        .map_err(|e| anyhow::anyhow!("key generation failed: {e}"))?;
    println!("created key {id} (AES_256)");
    if let Some((path, _)) = assignment {
        // Re-read: the file may have changed while the key was generated.
        assign(Some(path), &[id.to_owned()], assign_to, None)?;
    }
    Ok(())
}

/// `key assign|unassign`: add ids (or patterns) to, or remove them from, the
/// key stores' `key_ids` in one atomic rewrite. Both are idempotent. With
/// `hsm`, every plain id (not a pattern) must name a key on the token, so a
/// typo does not silently assign nothing.
pub fn assign(
    keystores: Option<&Path>,
    ids: &[String],
    assign_to: &[String],
    hsm: Option<&HsmArgs>,
) -> anyhow::Result<()> {
    edit_assignments(keystores, ids, assign_to, hsm, true)
}

pub fn unassign(keystores: Option<&Path>, ids: &[String], from: &[String]) -> anyhow::Result<()> {
    edit_assignments(keystores, ids, from, None, false)
}

fn edit_assignments(
    keystores: Option<&Path>,
    ids: &[String],
    stores: &[String],
    hsm: Option<&HsmArgs>,
    add: bool,
) -> anyhow::Result<()> {
    let path = keystores
        .ok_or_else(|| anyhow::anyhow!("--keystores-file / KEYMESH_KEYSTORES_FILE is required"))?;
    if add {
        for id in ids {
            keymesh_contracts::keystores::check_key_pattern(id)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    if let Some(args) = hsm {
        let literal: Vec<&String> = ids
            .iter()
            .filter(|i| !keymesh_contracts::glob::is_pattern(i))
            .collect();
        if !literal.is_empty() {
            let session = user_session(args)?;
            for id in literal {
                if keys::find_key_handles(&session, id)?.is_empty() {
                    anyhow::bail!("no key labelled {id:?} on token {:?}", args.token_label);
                }
            }
        }
    }
    let mut file = crate::credentials::read(path)?;
    let mut lines = Vec::new();
    for ks in stores {
        for id in ids {
            let (changed, done, already) = if add {
                (file.assign(ks, id)?, "assigned to", "already assigned to")
            } else {
                (
                    file.unassign(ks, id)?,
                    "unassigned from",
                    "was not assigned to",
                )
            };
            lines.push(format!(
                "key {id} {} {ks}",
                if changed { done } else { already }
            ));
        }
    }
    crate::credentials::write(path, &file)?;
    for l in lines {
        println!("{l}");
    }
    Ok(())
}

#[derive(Debug, serde::Serialize)]
struct KeyRow {
    id: String,
    key_spec: String,
    key_usage: Vec<&'static str>,
    status: &'static str,
}

pub fn list(args: &HsmArgs, status_file: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let status = match status_file {
        Some(p) => key_status::read(p)?,
        None => key_status::KeyStatusFile::default(),
    };
    let session = user_session(args)?;
    let rows: Vec<KeyRow> = keys::list_keys(&session)?
        .into_iter()
        .map(|(id, info)| KeyRow {
            status: if status.is_disabled(&id) {
                "DISABLED"
            } else {
                "ENABLED"
            },
            key_spec: info.key_spec(),
            key_usage: info.usage.names(),
            id,
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", table(&rows));
    }
    Ok(())
}

fn table(rows: &[KeyRow]) -> String {
    let usage = |r: &KeyRow| {
        if r.key_usage.is_empty() {
            "-".to_owned()
        } else {
            r.key_usage.join(",")
        }
    };
    let w_id = rows
        .iter()
        .map(|r| r.id.len())
        .chain([2])
        .max()
        .unwrap_or(2);
    let w_spec = rows
        .iter()
        .map(|r| r.key_spec.len())
        .chain([8])
        .max()
        .unwrap_or(8);
    let w_use = rows
        .iter()
        .map(|r| usage(r).len())
        .chain([5])
        .max()
        .unwrap_or(5);
    let mut out = format!(
        "{:w_id$}  {:w_spec$}  {:w_use$}  STATUS\n",
        "ID", "KEY_SPEC", "USAGE"
    );
    for r in rows {
        out.push_str(&format!(
            "{:w_id$}  {:w_spec$}  {:w_use$}  {}\n",
            r.id,
            r.key_spec,
            usage(r),
            r.status
        ));
    }
    out
}

pub fn set_disabled(
    args: &HsmArgs,
    status_file: Option<&Path>,
    id: &str,
    disabled: bool,
) -> anyhow::Result<()> {
    let path = status_file.ok_or_else(|| {
        anyhow::anyhow!("--key-status-file / KEYMESH_KEY_STATUS_FILE is required")
    })?;
    let session = user_session(args)?;
    if keys::find_key_handles(&session, id)?.is_empty() {
        anyhow::bail!("no key labelled {id:?} on token {:?}", args.token_label);
    }
    key_status::modify(path, |f| {
        if disabled {
            f.disabled.insert(id.to_owned());
        } else {
            f.disabled.remove(id);
        }
    })?;
    println!("key {id} {}", if disabled { "disabled" } else { "enabled" });
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use keymesh_pkcs11::wrap;

    use super::*;

    #[test]
    fn key_ids() {
        assert!(validate_key_id("a").is_ok());
        assert!(validate_key_id("Key-1.prod_2").is_ok());
        assert!(validate_key_id(&"a".repeat(128)).is_ok());
        assert!(validate_key_id(&"a".repeat(129)).is_err());
        assert!(validate_key_id("").is_err());
        assert!(validate_key_id("a b").is_err());
        assert!(validate_key_id("a/b").is_err());
        assert!(validate_key_id("ключ").is_err());
        assert!(validate_key_id(keys::HEALTH_KEY_LABEL).is_err());
        assert!(validate_key_id(wrap::DEFAULT_DOMAIN_KEY_LABEL).is_err());
        assert!(validate_key_id("keymesh-anything").is_err());
    }

    #[test]
    fn table_aligns() {
        let rows = vec![KeyRow {
            id: "k1".into(),
            key_spec: "AES_256".into(),
            key_usage: vec!["ENCRYPT", "DECRYPT"],
            status: "ENABLED",
        }];
        let t = table(&rows);
        assert!(t.starts_with("ID  KEY_SPEC  USAGE"), "{t}");
        assert!(t.contains("k1  AES_256   ENCRYPT,DECRYPT  ENABLED"), "{t}");
    }
}
