//! `credential ...`: SigV4 credentials in the edge's keystores file.
//!
//! The file holds secrets: it is written atomically with mode 0600, and only
//! the console configuration of a freshly created credential is printed.

use std::path::Path;

use keymesh_contracts::keystores::{
    Credential, KeystoreEntry, KeystoresFile, SECRET_FILE_MODE, console_config, valid_uri_path,
};
use keymesh_contracts::write_atomic;

/// The key-stores file is read and rewritten (validated, atomic, private)
/// as its contract says; `key assign|unassign` use these too.
pub(crate) use keymesh_contracts::keystores::{read, write};

fn check_uri_path(uri_path: &str) -> anyhow::Result<()> {
    if !valid_uri_path(uri_path) {
        anyhow::bail!(
            "invalid --uri-path {uri_path:?}: expected [/<prefix>]/kms/xks/v1, at most 128 characters of a-zA-Z0-9/-_"
        );
    }
    Ok(())
}

/// RFC 3339 creation time for ordering; unreadable times sort as oldest.
fn created(c: &Credential) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(
        &c.created_at,
        &time::format_description::well_known::Rfc3339,
    )
    .ok()
}

/// Add `cred` to the key store at `uri_path` (created when `rotate` is false
/// and it is missing). On rotate, keep only the newest previous credential,
/// so exactly the old and the new one stay valid during the switch-over.
pub fn add_credential(
    file: &mut KeystoresFile,
    uri_path: &str,
    cred: Credential,
    rotate: bool,
) -> anyhow::Result<()> {
    if file.keystore_mut(uri_path).is_none() {
        if rotate {
            anyhow::bail!("no key store {uri_path:?} to rotate (use `credential create`)");
        }
        file.keystores.push(KeystoreEntry {
            uri_path: uri_path.to_owned(),
            // A new key store serves no key until keys are assigned to it.
            key_ids: Vec::new(),
            credentials: Vec::new(),
        });
    }
    let ks = file
        .keystore_mut(uri_path)
        .ok_or_else(|| anyhow::anyhow!("key store {uri_path:?} vanished"))?;
    if rotate {
        // Stable sort by (time, position): the last one is the newest,
        // position breaking ties and placing unreadable times first.
        let mut indexed: Vec<(usize, Credential)> = ks.credentials.drain(..).enumerate().collect();
        indexed.sort_by_key(|(i, c)| (created(c), *i));
        ks.credentials = indexed.pop().map(|(_, c)| c).into_iter().collect();
    }
    ks.credentials.push(cred);
    Ok(())
}

pub fn create(
    keystores: &Path,
    uri_path: &str,
    console_file: Option<&Path>,
    rotate: bool,
) -> anyhow::Result<()> {
    check_uri_path(uri_path)?;
    let mut file = read(keystores)?;
    let cred = Credential::generate()?;
    let config = console_config(uri_path, &cred);
    add_credential(&mut file, uri_path, cred, rotate)?;
    write(keystores, &file)?;
    let mut json = serde_json::to_vec_pretty(&config)?;
    json.push(b'\n');
    if let Some(path) = console_file {
        write_atomic(path, &json, Some(SECRET_FILE_MODE))?;
    }
    // The one secret this tool prints: the operator pastes it into the KMS console.
    println!("{}", String::from_utf8_lossy(&json).trim_end());
    Ok(())
}

pub fn revoke(keystores: &Path, uri_path: &str, access_key_id: &str) -> anyhow::Result<()> {
    let mut file = read(keystores)?;
    let ks = file
        .keystore_mut(uri_path)
        .ok_or_else(|| anyhow::anyhow!("no key store {uri_path:?}"))?;
    let before = ks.credentials.len();
    ks.credentials.retain(|c| c.access_key_id != access_key_id);
    if ks.credentials.len() == before {
        anyhow::bail!("key store {uri_path:?} has no credential {access_key_id}");
    }
    if ks.credentials.is_empty() {
        eprintln!(
            "keymeshctl: warning: key store {uri_path} has no credentials left; KMS cannot reach it"
        );
    }
    write(keystores, &file)?;
    println!("revoked {access_key_id} from {uri_path}");
    Ok(())
}

pub fn list(keystores: &Path, uri_path: Option<&str>) -> anyhow::Result<()> {
    let file = read(keystores)?;
    if let Some(p) = uri_path
        && !file.keystores.iter().any(|k| k.uri_path == p)
    {
        anyhow::bail!("no key store {p:?}");
    }
    println!("{:<40}  {:<30}  CREATED_AT", "URI_PATH", "ACCESS_KEY_ID");
    for ks in file
        .keystores
        .iter()
        .filter(|k| uri_path.is_none_or(|p| k.uri_path == p))
    {
        for c in &ks.credentials {
            println!(
                "{:<40}  {:<30}  {}",
                ks.uri_path, c.access_key_id, c.created_at
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    const P: &str = "/demo/kms/xks/v1";

    fn cred(at: &str) -> Credential {
        let mut c = Credential::generate().unwrap();
        c.created_at = at.to_owned();
        c
    }

    #[test]
    fn create_then_rotate_keeps_old_and_new() {
        let mut f = KeystoresFile::default();
        assert!(add_credential(&mut f, P, cred("2026-01-01T00:00:00Z"), true).is_err());
        add_credential(&mut f, P, cred("2026-01-01T00:00:00Z"), false).unwrap();
        add_credential(&mut f, P, cred("2026-01-03T00:00:00.5Z"), false).unwrap();
        add_credential(&mut f, P, cred("2026-01-03T00:00:00Z"), false).unwrap();
        let newest_previous = f.keystores[0].credentials[1].access_key_id.clone();
        let new = cred("2026-02-01T00:00:00Z");
        let new_id = new.access_key_id.clone();
        add_credential(&mut f, P, new, true).unwrap();
        let ids: Vec<_> = f.keystores[0]
            .credentials
            .iter()
            .map(|c| c.access_key_id.clone())
            .collect();
        assert_eq!(ids, [newest_previous, new_id]);
        assert!(f.keystores[0].key_ids.is_empty(), "no key by default");
        f.validate().unwrap();
    }

    #[test]
    fn files_are_private_and_round_trip() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keystores.json");
        let console = dir.path().join("console.json");
        create(&path, P, Some(&console), false).unwrap();
        create(&path, P, None, true).unwrap();
        for p in [&path, &console] {
            let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
        let file = read(&path).unwrap();
        assert_eq!(file.keystores[0].credentials.len(), 2);
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&console).unwrap()).unwrap();
        assert_eq!(cfg["XksProxyUriPath"], P);
        assert_eq!(
            cfg["XksProxyAuthenticationCredential"]["AccessKeyId"],
            file.keystores[0].credentials[0].access_key_id.as_str()
        );
        let id = file.keystores[0].credentials[0].access_key_id.clone();
        revoke(&path, P, &id).unwrap();
        assert!(revoke(&path, P, &id).is_err());
        assert_eq!(read(&path).unwrap().keystores[0].credentials.len(), 1);
        assert!(create(&path, "/bad", None, false).is_err());
    }
}
