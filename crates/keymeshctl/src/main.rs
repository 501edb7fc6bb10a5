//! keymeshctl: the keymesh admin CLI.
//!
//! HSM commands (`token`, `key create|list`, `domain-key`) speak PKCS#11 through the
//! crypto-worker library, so keys are created with exactly the attributes the
//! worker expects. Key status lives in the worker's key-status file and SigV4
//! credentials in the edge's keystores file; both are rewritten atomically so
//! the running services (which poll them) never see a torn file.
//!
//! Errors go to stderr with exit code 1. Nothing secret is ever printed,
//! except the console configuration that `credential create|rotate` exists to
//! hand over.

mod accounts;
mod auth_token;
mod clock;
mod credentials;
mod domain_key;
mod keys;
mod pki;
mod sealing;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use keymesh_common::Secret;
use keymesh_pkcs11::args::HsmArgs;

#[derive(Debug, Parser)]
#[command(
    name = "keymeshctl",
    about = "keymesh admin CLI: HSM token, keys, SigV4 credentials"
)]
struct Cli {
    #[command(flatten)]
    hsm: HsmArgs,
    /// Key-status file shared with the crypto-workers.
    #[arg(long, env = "KEYMESH_KEY_STATUS_FILE", global = true)]
    key_status_file: Option<PathBuf>,
    /// Keystores file shared with the edge.
    #[arg(long, env = "KEYMESH_KEYSTORES_FILE", global = true)]
    keystores_file: Option<PathBuf>,
    /// Durable store of the Huawei-compatible API (sqlite://PATH or postgres://...).
    #[arg(long, env = "KEYMESH_STORE_URL", global = true)]
    store_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The HSM token.
    #[command(subcommand)]
    Token(TokenCommand),
    /// AES-256 keys on the token, and which XKS key stores serve them.
    #[command(subcommand)]
    Key(KeyCommand),
    /// SigV4 credentials of XKS key stores.
    #[command(subcommand)]
    Credential(CredentialCommand),
    /// The HSM domain key that wraps KeyVault customer master keys.
    #[command(subcommand)]
    DomainKey(domain_key::DomainKeyCommand),
    /// AK/SK accounts of the Huawei-compatible API (in the store).
    #[command(subcommand)]
    Account(accounts::AccountCommand),
    /// X-Auth-Token signing keys and tokens.
    #[command(subcommand)]
    AuthToken(auth_token::AuthTokenCommand),
    /// The local mesh CA and service certificates (gRPC mTLS).
    #[command(subcommand)]
    Pki(pki::PkiCommand),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Initialise a free slot as token --token-label and set the user PIN.
    Init {
        /// Security Officer PIN (default: the user PIN).
        #[arg(long, env = "KEYMESH_SO_PIN", hide_env_values = true)]
        so_pin: Option<Secret>,
        /// Succeed without changes when the token already exists.
        #[arg(long)]
        if_missing: bool,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Generate an AES-256 key (sensitive, non-extractable) labelled <id>.
    Create {
        id: String,
        #[arg(long, value_enum, default_value_t = keys::Usage::EncryptDecrypt)]
        usage: keys::Usage,
        /// Assign the new key to the XKS key store with this URI path
        /// (repeatable; a key store serves only the keys assigned to it).
        #[arg(long = "keystore", value_name = "URI_PATH")]
        keystores: Vec<String>,
    },
    /// Let XKS key stores serve existing keys: ids, or patterns with * and ?
    /// that have a fixed part (idempotent).
    Assign {
        #[arg(required = true)]
        ids: Vec<String>,
        /// URI path of the key store (repeatable).
        #[arg(long = "keystore", value_name = "URI_PATH", required = true)]
        keystores: Vec<String>,
        /// Do not check that the ids exist on the token (editing a
        /// keystores file away from the HSM).
        #[arg(long)]
        no_token_check: bool,
    },
    /// Stop XKS key stores from serving keys (ids or patterns exactly as
    /// assigned; idempotent). Running edges answer 404 within a reload.
    Unassign {
        #[arg(required = true)]
        ids: Vec<String>,
        /// URI path of the key store (repeatable).
        #[arg(long = "keystore", value_name = "URI_PATH", required = true)]
        keystores: Vec<String>,
    },
    /// Id, key spec, usages and status of every key.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Re-enable a key (key-status file).
    Enable { id: String },
    /// Disable a key (key-status file); workers refuse it within a second.
    Disable { id: String },
}

#[derive(Debug, Subcommand)]
enum CredentialCommand {
    /// New credential for key store P (created if missing); prints the console JSON.
    Create {
        #[arg(long)]
        uri_path: String,
        /// Also write the console JSON to this file (mode 0600).
        #[arg(long)]
        console_config: Option<PathBuf>,
    },
    /// Add a credential and keep only the newest previous one.
    Rotate {
        #[arg(long)]
        uri_path: String,
        #[arg(long)]
        console_config: Option<PathBuf>,
    },
    /// Remove one credential.
    Revoke {
        #[arg(long)]
        uri_path: String,
        #[arg(long)]
        access_key_id: String,
    },
    /// Access key ids and creation times (never secrets).
    List {
        #[arg(long)]
        uri_path: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keymeshctl: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let keystores = || {
        cli.keystores_file
            .clone()
            .ok_or_else(|| anyhow::anyhow!("--keystores-file / KEYMESH_KEYSTORES_FILE is required"))
    };
    match cli.command {
        Command::Token(TokenCommand::Init { so_pin, if_missing }) => {
            keys::token_init(&cli.hsm, so_pin, if_missing)
        }
        Command::Key(KeyCommand::Create {
            id,
            usage,
            keystores,
        }) => keys::create(
            &cli.hsm,
            &id,
            usage,
            cli.keystores_file.as_deref(),
            &keystores,
        ),
        Command::Key(KeyCommand::Assign {
            ids,
            keystores,
            no_token_check,
        }) => keys::assign(
            cli.keystores_file.as_deref(),
            &ids,
            &keystores,
            (!no_token_check).then_some(&cli.hsm),
        ),
        Command::Key(KeyCommand::Unassign { ids, keystores }) => {
            keys::unassign(cli.keystores_file.as_deref(), &ids, &keystores)
        }
        Command::Key(KeyCommand::List { json }) => {
            keys::list(&cli.hsm, cli.key_status_file.as_deref(), json)
        }
        Command::Key(KeyCommand::Enable { id }) => {
            keys::set_disabled(&cli.hsm, cli.key_status_file.as_deref(), &id, false)
        }
        Command::Key(KeyCommand::Disable { id }) => {
            keys::set_disabled(&cli.hsm, cli.key_status_file.as_deref(), &id, true)
        }
        Command::Credential(CredentialCommand::Create {
            uri_path,
            console_config,
        }) => credentials::create(&keystores()?, &uri_path, console_config.as_deref(), false),
        Command::Credential(CredentialCommand::Rotate {
            uri_path,
            console_config,
        }) => credentials::create(&keystores()?, &uri_path, console_config.as_deref(), true),
        Command::Credential(CredentialCommand::Revoke {
            uri_path,
            access_key_id,
        }) => credentials::revoke(&keystores()?, &uri_path, &access_key_id),
        Command::Credential(CredentialCommand::List { uri_path }) => {
            credentials::list(&keystores()?, uri_path.as_deref())
        }
        Command::DomainKey(cmd) => domain_key::run(&cli.hsm, cli.store_url.as_deref(), cmd),
        Command::Account(cmd) => accounts::run(&cli.hsm, cli.store_url.as_deref(), cmd),
        Command::AuthToken(cmd) => auth_token::run(cmd),
        Command::Pki(cmd) => pki::run(cmd),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
