//! `domain-key init`: create the HSM domain key that wraps the KeyVault's
//! customer master keys, with the crypto-worker's own template (AES-256
//! token key, CKA_WRAP/CKA_UNWRAP only, sensitive, non-extractable), so the
//! workers find exactly the key they expect.

use keymesh_crypto_worker::HsmArgs;
use keymesh_crypto_worker::hsm;
use keymesh_crypto_worker::wrapped;

#[derive(Debug, clap::Subcommand)]
pub enum DomainKeyCommand {
    /// Generate the domain key on the token --token-label.
    Init {
        /// CKA_LABEL of the domain key (the workers' --domain-key-label).
        #[arg(
            long,
            env = "KEYMESH_DOMAIN_KEY_LABEL",
            default_value = hsm::DEFAULT_DOMAIN_KEY_LABEL
        )]
        label: String,
        /// Succeed without changes when the domain key already exists.
        #[arg(long)]
        if_missing: bool,
    },
}

pub fn run(args: &HsmArgs, command: DomainKeyCommand) -> anyhow::Result<()> {
    match command {
        DomainKeyCommand::Init { label, if_missing } => init(args, &label, if_missing),
    }
}

fn init(args: &HsmArgs, label: &str, if_missing: bool) -> anyhow::Result<()> {
    wrapped::check_domain_key_label(label).map_err(|e| anyhow::anyhow!("--label: {e}"))?;
    let session = crate::keys::user_session(args)?;
    // PKCS#11 allows duplicate labels, and a second key under the label would
    // make every worker refuse it as ambiguous: never create one next to an
    // existing key. An existing key is accepted only if it is a usable
    // domain key.
    if !hsm::find_key_handles(&session, label)?.is_empty() {
        hsm::find_domain_key(&session, label).map_err(|e| {
            anyhow::anyhow!("a key labelled {label:?} exists but cannot be the domain key: {e}")
        })?;
        if if_missing {
            println!("domain key {label:?} already exists");
            return Ok(());
        }
        anyhow::bail!(
            "a domain key labelled {label:?} already exists (use --if-missing to accept it)"
        );
    }
    hsm::generate_domain_key(&session, label)
        .map_err(|e| anyhow::anyhow!("domain key generation failed: {e}"))?;
    println!("created domain key {label} (AES_256, WRAP,UNWRAP)");
    Ok(())
}
