//! `account ...`: Huawei-API accounts in the durable store.
//!
//! An account is an AK/SK pair bound to one project and one user, with a
//! role. The edge needs the SK in clear to verify SDK-HMAC-SHA256 signatures,
//! so the store keeps it sealed by the HSM ([`crate::sealing`]) and the edge
//! unseals it through a crypto-worker; this tool prints it exactly once,
//! from `account create` (the operator hands it to the client, as with
//! `credential create`). `account list` never shows secrets.

use crate::clock::now_ms;

use clap::{Subcommand, ValueEnum};
use keymesh_huawei_auth::sdk_hmac::generate_credentials;
use keymesh_pkcs11::args::HsmArgs;
use keymesh_pkcs11::wrap;
use keymesh_store::sealed::account_aad;
use keymesh_store::{Account, AccountSecret, Role, StoreError};

use crate::sealing::Sealer;

/// `--role`: Huawei's "KMS CMKFullAccess" or "KMS ReadOnlyAccess".
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Full,
    Readonly,
}

impl RoleArg {
    pub fn store(self) -> Role {
        match self {
            Self::Full => Role::Full,
            Self::Readonly => Role::ReadOnly,
        }
    }

    pub fn token(self) -> keymesh_huawei_auth::token::Role {
        match self {
            Self::Full => keymesh_huawei_auth::token::Role::Full,
            Self::Readonly => keymesh_huawei_auth::token::Role::ReadOnly,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// New AK/SK for USER in PROJECT; prints the secret key (only time it is shown).
    Create {
        #[arg(long)]
        project: String,
        #[arg(long)]
        user: String,
        #[arg(long, value_enum, default_value_t = RoleArg::Full)]
        role: RoleArg,
        #[arg(long)]
        json: bool,
        /// HSM domain key the account seal key is wrapped under when it is
        /// created (first account).
        #[arg(
            long,
            env = "KEYMESH_DOMAIN_KEY_LABEL",
            default_value = wrap::DEFAULT_DOMAIN_KEY_LABEL
        )]
        domain_key_label: String,
    },
    /// Change an account's role; tokens of its user follow within the edge's cache TTL.
    SetRole {
        #[arg(long)]
        access_key: String,
        #[arg(long, value_enum)]
        role: RoleArg,
    },
    /// Seal every account secret key still stored in clear (the edge also does this on start).
    Seal {
        #[arg(
            long,
            env = "KEYMESH_DOMAIN_KEY_LABEL",
            default_value = wrap::DEFAULT_DOMAIN_KEY_LABEL
        )]
        domain_key_label: String,
    },
    /// Access keys, projects, users and roles (never secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove an account; its signatures stop verifying at once.
    Delete {
        #[arg(long)]
        access_key: String,
    },
}

/// Project ids are path segments; Huawei's are 32 hex digits.
pub fn valid_project_id(p: &str) -> bool {
    (1..=64).contains(&p.len())
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// User ids are grant principals: `^[a-zA-Z0-9]{1,64}$`.
pub fn valid_user_id(u: &str) -> bool {
    (1..=64).contains(&u.len()) && u.bytes().all(|b| b.is_ascii_alphanumeric())
}

pub fn check_ids(project: Option<&str>, user: &str) -> anyhow::Result<()> {
    if let Some(p) = project
        && !valid_project_id(p)
    {
        anyhow::bail!("invalid --project {p:?}: 1 to 64 characters of a-zA-Z0-9-_");
    }
    if !valid_user_id(user) {
        anyhow::bail!("invalid --user {user:?}: 1 to 64 characters of a-zA-Z0-9");
    }
    Ok(())
}

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// The store calls are async; one CLI command needs one short-lived runtime.
fn block_on<T>(fut: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(fut)
}

pub(crate) async fn open(url: &str) -> anyhow::Result<std::sync::Arc<dyn keymesh_store::Store>> {
    keymesh_store::open(url)
        .await
        .map_err(|e| anyhow::Error::new(e).context("cannot open the store"))
}

pub fn run(hsm: &HsmArgs, store_url: Option<&str>, cmd: AccountCommand) -> anyhow::Result<()> {
    let url =
        store_url.ok_or_else(|| anyhow::anyhow!("--store-url / KEYMESH_STORE_URL is required"))?;
    match cmd {
        AccountCommand::Create {
            project,
            user,
            role,
            json,
            domain_key_label,
        } => block_on(create(
            hsm,
            url,
            &domain_key_label,
            &project,
            &user,
            role.store(),
            json,
        )),
        AccountCommand::SetRole { access_key, role } => {
            block_on(set_role(url, &access_key, role.store()))
        }
        AccountCommand::Seal { domain_key_label } => {
            block_on(seal_clear(hsm, url, &domain_key_label))
        }
        AccountCommand::List { json } => block_on(list(url, json)),
        AccountCommand::Delete { access_key } => block_on(delete(url, &access_key)),
    }
}

async fn create(
    hsm: &HsmArgs,
    url: &str,
    domain_key: &str,
    project: &str,
    user: &str,
    role: Role,
    json: bool,
) -> anyhow::Result<()> {
    check_ids(Some(project), user)?;
    let store = open(url).await?;
    let (access_key, secret_key) = generate_credentials()?;
    // Sealed before anything is written: the store never sees the SK.
    let sealer = Sealer::open(hsm, store.as_ref(), domain_key).await?;
    let sealed = sealer.seal(
        secret_key.as_bytes(),
        &account_aad(project, &access_key, user),
    )?;
    drop(sealer);
    let account = Account {
        access_key,
        secret: AccountSecret::Sealed(sealed),
        project_id: project.to_owned(),
        user_id: user.to_owned(),
        role,
        created_ms: now_ms(),
    };
    store.create_account(&account).await.map_err(|e| match e {
        StoreError::Conflict(_) => {
            anyhow::anyhow!("access key {} exists; run again", account.access_key)
        }
        e => anyhow::Error::new(e).context("cannot create the account"),
    })?;
    // The one secret this command prints: the operator hands it to the client.
    if json {
        let out = serde_json::json!({
            "access_key": account.access_key,
            "secret_key": secret_key.as_str(),
            "project_id": account.project_id,
            "user_id": account.user_id,
            "role": account.role.as_str(),
            "created_at": rfc3339(account.created_ms),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("access_key: {}", account.access_key);
        println!("secret_key: {}", secret_key.as_str());
        println!("project_id: {}", account.project_id);
        println!("user_id:    {}", account.user_id);
        println!("role:       {}", account.role.as_str());
    }
    Ok(())
}

async fn list(url: &str, json: bool) -> anyhow::Result<()> {
    let store = open(url).await?;
    let accounts = store.list_accounts().await?;
    if json {
        let out: Vec<_> = accounts
            .iter()
            .map(|a| {
                serde_json::json!({
                    "access_key": a.access_key,
                    "project_id": a.project_id,
                    "user_id": a.user_id,
                    "role": a.role.as_str(),
                    "created_at": rfc3339(a.created_ms),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{:<20}  {:<32}  {:<20}  {:<8}  CREATED_AT",
        "ACCESS_KEY", "PROJECT_ID", "USER_ID", "ROLE"
    );
    for a in &accounts {
        println!(
            "{:<20}  {:<32}  {:<20}  {:<8}  {}",
            a.access_key,
            a.project_id,
            a.user_id,
            a.role.as_str(),
            rfc3339(a.created_ms)
        );
    }
    Ok(())
}

async fn seal_clear(hsm: &HsmArgs, url: &str, domain_key: &str) -> anyhow::Result<()> {
    let store = open(url).await?;
    let clear: Vec<Account> = store
        .list_accounts()
        .await?
        .into_iter()
        .filter(|a| a.secret.clear().is_some())
        .collect();
    let mut sealed = 0;
    if !clear.is_empty() {
        let sealer = Sealer::open(hsm, store.as_ref(), domain_key).await?;
        for a in &clear {
            let Some(sk) = a.secret.clear() else { continue };
            let envelope = sealer.seal(
                sk.as_bytes(),
                &account_aad(&a.project_id, &a.access_key, &a.user_id),
            )?;
            // Compare-and-set: an edge may have sealed it meanwhile.
            if store.seal_account_secret(&a.access_key, &envelope).await? {
                sealed += 1;
            }
        }
    }
    println!("sealed {sealed} account secret key(s)");
    Ok(())
}

async fn set_role(url: &str, access_key: &str, role: Role) -> anyhow::Result<()> {
    let store = open(url).await?;
    store
        .set_account_role(access_key, role)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => anyhow::anyhow!("no account with access key {access_key}"),
            e => anyhow::Error::new(e).context("cannot change the role"),
        })?;
    println!("{access_key}: role {}", role.as_str());
    Ok(())
}

async fn delete(url: &str, access_key: &str) -> anyhow::Result<()> {
    let store = open(url).await?;
    store
        .delete_account(access_key)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => anyhow::anyhow!("no account with access key {access_key}"),
            e => anyhow::Error::new(e).context("cannot delete the account"),
        })?;
    println!("deleted {access_key}");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn ids() {
        assert!(valid_project_id("0123456789abcdef0123456789abcdef"));
        assert!(valid_project_id("demo-project_1"));
        assert!(!valid_project_id(""));
        assert!(!valid_project_id("a/b"));
        assert!(!valid_project_id(&"a".repeat(65)));
        assert!(valid_user_id("user1"));
        assert!(!valid_user_id("user-1"));
        assert!(!valid_user_id(""));
        assert!(check_ids(None, "u").is_ok());
        assert!(check_ids(Some("p p"), "u").is_err());
    }

    #[test]
    fn timestamps_render_as_rfc3339() {
        assert_eq!(rfc3339(1_704_110_400_123), "2024-01-01T12:00:00.123Z");
    }
}
