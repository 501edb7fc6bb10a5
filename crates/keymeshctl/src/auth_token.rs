//! `auth-token ...`: the Ed25519 key pair behind `X-Auth-Token`, and tokens.
//!
//! Tokens are issued offline: whoever holds the private key can mint them,
//! and the edge holds only the public key (its `token_public_key_file` may
//! hold several, for a rotation; each token names its key by `kid`). A token
//! is honoured only while its user has an account in its project with at
//! least its role, so deleting or downgrading the account revokes it. The private key file is created
//! with mode 0600, and neither key file is ever overwritten (replacing a key
//! in use would silently invalidate every token already handed out).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::Subcommand;
use keymesh_huawei_auth::token::{Claims, DEFAULT_ISSUER, TokenIssuer, keygen};

use crate::accounts::{RoleArg, check_ids};

#[derive(Debug, Subcommand)]
pub enum AuthTokenCommand {
    /// New Ed25519 key pair: PKCS#8 private key (mode 0600), SPKI public key.
    Keygen {
        #[arg(long)]
        private_key: PathBuf,
        #[arg(long)]
        public_key: PathBuf,
    },
    /// Print an X-Auth-Token for USER in PROJECT.
    Issue {
        #[arg(long)]
        private_key: PathBuf,
        #[arg(long, required_unless_present = "no_project")]
        project: Option<String>,
        #[arg(long)]
        user: String,
        #[arg(long, value_enum, default_value_t = RoleArg::Full)]
        role: RoleArg,
        /// Lifetime in seconds (the edge refuses more than its
        /// `token_max_ttl_secs`, default 86400).
        #[arg(long, default_value_t = 86_400)]
        ttl_secs: u64,
        /// `iss` claim: the edge's `token_issuer`.
        #[arg(long, default_value = DEFAULT_ISSUER)]
        issuer: String,
        /// Valid only from this many seconds after now (`nbf`).
        #[arg(long, default_value_t = 0)]
        not_before_secs: u64,
        /// Mark the token OBT (refused with KMS.0304; for testing clients).
        #[arg(long)]
        obt: bool,
        /// Name no project (refused on project paths with KMS.0305).
        #[arg(long, conflicts_with = "project")]
        no_project: bool,
    },
}

pub fn run(cmd: AuthTokenCommand) -> anyhow::Result<()> {
    match cmd {
        AuthTokenCommand::Keygen {
            private_key,
            public_key,
        } => keygen_files(&private_key, &public_key),
        AuthTokenCommand::Issue {
            private_key,
            project,
            user,
            role,
            ttl_secs,
            issuer: iss,
            not_before_secs,
            obt,
            no_project,
        } => {
            let project = if no_project { None } else { project };
            check_ids(project.as_deref(), &user)?;
            let issuer = TokenIssuer::load(&private_key)
                .map_err(|e| anyhow::Error::new(e).context(private_key.display().to_string()))?;
            let mut claims = Claims::new(
                user,
                project,
                role.token(),
                SystemTime::now(),
                Duration::from_secs(ttl_secs),
            );
            claims.obt = obt;
            claims.iss = iss;
            claims.nbf = claims
                .iat
                .saturating_add(i64::try_from(not_before_secs).unwrap_or(i64::MAX));
            println!("{}", issuer.issue(&claims)?);
            Ok(())
        }
    }
}

/// Create `path` (it must not exist) with `mode` and write `bytes`.
fn create_new(path: &Path, mode: u32, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

fn keygen_files(private_path: &Path, public_path: &Path) -> anyhow::Result<()> {
    for p in [private_path, public_path] {
        if p.exists() {
            anyhow::bail!("{} exists; refusing to replace a key", p.display());
        }
    }
    let (private, public) = keygen()?;
    let kid = TokenIssuer::from_pem(&private)?.kid().to_owned();
    create_new(private_path, 0o600, private.as_bytes())?;
    if let Err(e) = create_new(public_path, 0o644, public.as_bytes()) {
        // Leave no half-made pair behind.
        let _ = std::fs::remove_file(private_path);
        return Err(e);
    }
    println!(
        "wrote {} (private, 0600) and {} (public)",
        private_path.display(),
        public_path.display()
    );
    // The id tokens signed with this key carry (the edge derives it from the
    // public key, so the public file needs no annotation).
    println!("kid: {kid}");
    Ok(())
}
