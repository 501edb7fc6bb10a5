//! `domain-key init` and `domain-key check`: the HSM domain key that wraps
//! the KeyVault's customer master keys, created with the crypto-worker's own
//! template (AES-256 token key, CKA_WRAP/CKA_UNWRAP only, sensitive,
//! non-extractable), so the workers find exactly the key they expect, and
//! bound to the store by its key check value (KCV, computed in the HSM the
//! way the workers do: [`wrap::domain_key_check`]).
//!
//! A domain key lost with its token cannot be re-created: a new key under
//! the same label unwraps nothing the store holds. So `init` never creates a
//! key over existing material (a recorded KCV or wrapped keys naming the
//! label) unless told that the material is lost, and never accepts an HSM
//! key whose KCV differs from the store's.

use cryptoki::session::Session;
use keymesh_pkcs11::args::HsmArgs;
use keymesh_pkcs11::{keys, wrap};
use keymesh_store::Store;

use crate::accounts::open;
use crate::clock::now_ms;

#[derive(Debug, clap::Subcommand)]
pub enum DomainKeyCommand {
    /// Generate the domain key on the token --token-label and record its KCV
    /// in the store (--store-url).
    Init {
        /// CKA_LABEL of the domain key (the workers' --domain-key-label).
        #[arg(
            long,
            env = "KEYMESH_DOMAIN_KEY_LABEL",
            default_value = wrap::DEFAULT_DOMAIN_KEY_LABEL
        )]
        label: String,
        /// Succeed without changes when the domain key already exists (and
        /// matches the store's KCV).
        #[arg(long)]
        if_missing: bool,
        /// Create a new key although the store holds material wrapped under
        /// the label (a recorded KCV or wrapped keys): that material becomes
        /// unreadable for good. Restore the token from its backup instead
        /// whenever one exists (docs/SRE.md).
        #[arg(long)]
        i_understand_existing_material_is_lost: bool,
    },
    /// Print the KCV of the domain key on the token; with --store-url, fail
    /// unless it matches the store's record (none recorded: say so).
    Check {
        /// CKA_LABEL of the domain key.
        #[arg(
            long,
            env = "KEYMESH_DOMAIN_KEY_LABEL",
            default_value = wrap::DEFAULT_DOMAIN_KEY_LABEL
        )]
        label: String,
    },
}

pub fn run(
    args: &HsmArgs,
    store_url: Option<&str>,
    command: DomainKeyCommand,
) -> anyhow::Result<()> {
    match command {
        DomainKeyCommand::Init {
            label,
            if_missing,
            i_understand_existing_material_is_lost,
        } => init(
            args,
            store_url,
            &label,
            if_missing,
            i_understand_existing_material_is_lost,
        ),
        DomainKeyCommand::Check { label } => check(args, store_url, &label),
    }
}

/// What the store knows about `label`, and the runtime its connections
/// live on (a PostgreSQL pool cannot be used from another runtime).
struct OnRecord {
    rt: tokio::runtime::Runtime,
    store: std::sync::Arc<dyn Store>,
    kcv: Option<String>,
    wrapped: u64,
}

fn on_record(store_url: Option<&str>, label: &str) -> anyhow::Result<Option<OnRecord>> {
    let Some(url) = store_url else {
        return Ok(None);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (store, kcv, wrapped) = rt.block_on(async {
        let store = open(url).await?;
        let kcv = store
            .domain_key_check(label)
            .await
            .map_err(|e| anyhow::Error::new(e).context("cannot read the domain key record"))?
            .map(|r| r.kcv);
        let wrapped = store
            .wrapped_under(label)
            .await
            .map_err(|e| anyhow::Error::new(e).context("cannot count wrapped keys"))?;
        anyhow::Ok((store, kcv, wrapped))
    })?;
    Ok(Some(OnRecord {
        rt,
        store,
        kcv,
        wrapped,
    }))
}

/// The KCV of the usable domain key `label` on `session`.
fn hsm_kcv(session: &Session, label: &str) -> anyhow::Result<String> {
    wrap::find_domain_key(session, label).map_err(|e| {
        anyhow::anyhow!("a key labelled {label:?} exists but cannot be the domain key: {e}")
    })?;
    wrap::domain_key_check(session, label)
        .map_err(|e| anyhow::anyhow!("cannot compute the KCV of domain key {label:?}: {e}"))
}

fn mismatch(label: &str, hsm: &str, store: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "domain key {label:?} on the HSM has KCV {hsm}, but the store recorded KCV {store}: \
         the token holds another key than the one the stored keys are wrapped under \
         (restore the token, or point at the right store; see docs/SRE.md)"
    )
}

fn init(
    args: &HsmArgs,
    store_url: Option<&str>,
    label: &str,
    if_missing: bool,
    material_lost: bool,
) -> anyhow::Result<()> {
    wrap::check_domain_key_label(label).map_err(|e| anyhow::anyhow!("--label: {e}"))?;
    let session = crate::keys::user_session(args)?;
    let record = on_record(store_url, label)?;
    // PKCS#11 allows duplicate labels, and a second key under the label would
    // make every worker refuse it as ambiguous: never create one next to an
    // existing key. An existing key is accepted only if it is a usable
    // domain key whose KCV is the store's.
    if !keys::find_key_handles(&session, label)?.is_empty() {
        let kcv = hsm_kcv(&session, label)?;
        if let Some(stored) = record.as_ref().and_then(|r| r.kcv.as_deref())
            && stored != kcv
        {
            return Err(mismatch(label, &kcv, stored));
        }
        if !if_missing {
            anyhow::bail!(
                "a domain key labelled {label:?} already exists (KCV {kcv}; use --if-missing to accept it)"
            );
        }
        if let Some(r) = &record
            && r.kcv.is_none()
        {
            record_kcv(r, label, &kcv, false)?;
            println!("recorded the KCV of domain key {label:?} in the store");
        }
        println!("domain key {label:?} already exists (KCV {kcv})");
        return Ok(());
    }
    match &record {
        Some(r) if (r.kcv.is_some() || r.wrapped > 0) && !material_lost => anyhow::bail!(
            "the HSM has no domain key labelled {label:?}, but the store holds material wrapped \
             under it (recorded KCV {}, {} wrapped key version(s)): a new key would unwrap none \
             of it. Restore the token (or the domain key) from its backup (docs/SRE.md); only if \
             no backup exists, pass --i-understand-existing-material-is-lost",
            r.kcv.as_deref().unwrap_or("none"),
            r.wrapped
        ),
        Some(_) => {}
        None => eprintln!(
            "warning: no --store-url / KEYMESH_STORE_URL: the new key's KCV is not recorded \
             and existing material cannot be checked (the edge records it on its first start)"
        ),
    }
    wrap::generate_domain_key(&session, label)
        .map_err(|e| anyhow::anyhow!("domain key generation failed: {e}"))?;
    let kcv = hsm_kcv(&session, label)?;
    if let Some(r) = &record {
        record_kcv(r, label, &kcv, material_lost)?;
    }
    println!("created domain key {label} (AES_256, WRAP,UNWRAP), KCV {kcv}");
    Ok(())
}

/// Record `kcv` for `label` (overwriting an earlier record with `replace`).
fn record_kcv(record: &OnRecord, label: &str, kcv: &str, replace: bool) -> anyhow::Result<()> {
    let store = &record.store;
    record.rt.block_on(async {
        if replace {
            store.replace_domain_key_check(label, kcv, now_ms()).await
        } else {
            store
                .record_domain_key_check(label, kcv, now_ms())
                .await
                .map(|_| ())
        }
        .map_err(|e| anyhow::Error::new(e).context("cannot record the domain key KCV"))
    })
}

fn check(args: &HsmArgs, store_url: Option<&str>, label: &str) -> anyhow::Result<()> {
    wrap::check_label(label).map_err(|e| anyhow::anyhow!("--label: {e}"))?;
    let session = crate::keys::user_session(args)?;
    if keys::find_key_handles(&session, label)?.is_empty() {
        anyhow::bail!("the HSM has no domain key labelled {label:?}");
    }
    let kcv = hsm_kcv(&session, label)?;
    match on_record(store_url, label)? {
        Some(OnRecord { kcv: Some(s), .. }) if s != kcv => return Err(mismatch(label, &kcv, &s)),
        Some(OnRecord { kcv: Some(_), .. }) => eprintln!("matches the store's record"),
        Some(OnRecord { kcv: None, .. }) => eprintln!("the store has no record for {label:?}"),
        None => {}
    }
    println!("{kcv}");
    Ok(())
}
