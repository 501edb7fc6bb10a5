//! The token: loading the PKCS#11 module once per process, finding the
//! token by label (with the SoftHSM2 retry), logging in, opening sessions,
//! and initialising a new token.
//!
//! Nothing here is async: every function blocks on the HSM and must run on a
//! session thread (worker) or in a plain CLI process (keymeshctl).

use std::path::Path;
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as Pkcs11Error, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use keymesh_common::Secret;

use crate::error::Error;

/// Load the PKCS#11 module and call `C_Initialize` — exactly once per process
/// (a second call fails with CKR_CRYPTOKI_ALREADY_INITIALIZED). OS locking is
/// requested because several session threads call into the library at once.
pub fn load_module(path: &Path) -> Result<Pkcs11, Error> {
    let ctx = Pkcs11::new(path).map_err(Error::Hsm)?;
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(Error::Hsm)?;
    Ok(ctx)
}

/// The slot holding the initialised token labelled `label`. Slot ids are not
/// stable (SoftHSM2 renumbers after `C_InitToken`), labels are.
pub fn find_token_slot(ctx: &Pkcs11, label: &str) -> Result<Option<Slot>, Error> {
    for slot in ctx.get_slots_with_token().map_err(Error::Hsm)? {
        let info = ctx.get_token_info(slot).map_err(Error::Hsm)?;
        if info.token_initialized() && info.label() == label {
            return Ok(Some(slot));
        }
    }
    Ok(None)
}

/// Log `session` in, treating "already logged in" as success: login state is
/// per token per process, so every session after the first sees it.
pub fn login(session: &Session, user: UserType, pin: &Secret) -> Result<(), Pkcs11Error> {
    let pin = AuthPin::from(pin.expose());
    match session.login(user, Some(&pin)) {
        Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// How often [`load_with_token`] looks for the token before it reports it
/// missing.
pub const TOKEN_LOOKUPS: u32 = 5;

/// [`load_module`], once the module lists the token `label` (or after
/// [`TOKEN_LOOKUPS`] tries, when the caller's own lookup reports it
/// missing). SoftHSM2 reads its token directory at `C_Initialize` and skips
/// a token whose files another process (a worker creating or destroying an
/// object) is rewriting at that instant, so a missing token is looked for
/// again with a fresh `C_Initialize` (measured: an occasional "no token" for
/// `keymeshctl account create` next to running workers) before the answer is
/// final. For short-lived processes (keymeshctl): a finalised module is
/// re-initialised, which a process serving from the module must not do.
pub fn load_with_token(path: &Path, label: &str) -> Result<Pkcs11, Error> {
    let mut attempt = 1;
    loop {
        let ctx = load_module(path)?;
        let found = find_token_slot(&ctx, label)?.is_some();
        if found || attempt == TOKEN_LOOKUPS {
            return Ok(ctx);
        }
        // The next C_Initialize must start from a finalised module.
        ctx.finalize().map_err(Error::Hsm)?;
        std::thread::sleep(Duration::from_millis(50 * u64::from(attempt)));
        attempt += 1;
    }
}

/// A token opened for use: module context, slot and user PIN.
pub struct Hsm {
    ctx: Pkcs11,
    slot: Slot,
    pin: Secret,
    token: TokenDescription,
}

impl std::fmt::Debug for Hsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hsm")
            .field("slot", &self.slot)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// What the token says about itself (for GetHealth).
#[derive(Debug, Clone)]
pub struct TokenDescription {
    pub label: String,
    pub manufacturer: String,
    pub model: String,
    pub firmware_version: String,
    pub hardware_version: String,
}

impl Hsm {
    /// Find the token labelled `label` in an initialised module.
    pub fn open(ctx: Pkcs11, label: &str, pin: Secret) -> Result<Self, Error> {
        let slot = find_token_slot(&ctx, label)?.ok_or_else(|| Error::TokenNotFound {
            label: label.to_owned(),
        })?;
        let info = ctx.get_token_info(slot).map_err(Error::Hsm)?;
        let token = TokenDescription {
            label: info.label().to_owned(),
            manufacturer: info.manufacturer_id().to_owned(),
            model: info.model().to_owned(),
            firmware_version: info.firmware_version().to_string(),
            hardware_version: info.hardware_version().to_string(),
        };
        Ok(Self {
            ctx,
            slot,
            pin,
            token,
        })
    }

    pub fn context(&self) -> &Pkcs11 {
        &self.ctx
    }

    pub fn token(&self) -> &TokenDescription {
        &self.token
    }

    /// A read-write session logged in as the user.
    pub fn open_session(&self) -> Result<Session, Pkcs11Error> {
        let session = self.ctx.open_rw_session(self.slot)?;
        login(&session, UserType::User, &self.pin)?;
        Ok(session)
    }

    /// A read-only session logged in as the user. Enough to create session
    /// objects (key copies), and it cannot create or change token objects.
    pub fn open_ro_session(&self) -> Result<Session, Pkcs11Error> {
        let session = self.ctx.open_ro_session(self.slot)?;
        login(&session, UserType::User, &self.pin)?;
        Ok(session)
    }
}

/// Outcome of [`init_token`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenInit {
    Created,
    AlreadyExists,
}

/// Initialise a free slot as token `label` with `so_pin`, then set the user
/// PIN. With `if_missing`, an existing token with this label is left alone;
/// without it, an existing token is an error (re-initialising would destroy
/// every key on it, which no CLI command should do by accident).
pub fn init_token(
    ctx: &Pkcs11,
    label: &str,
    so_pin: &Secret,
    user_pin: &Secret,
    if_missing: bool,
) -> anyhow::Result<TokenInit> {
    if find_token_slot(ctx, label)?.is_some() {
        if if_missing {
            return Ok(TokenInit::AlreadyExists);
        }
        anyhow::bail!("a token labelled {label:?} already exists (use --if-missing to accept it)");
    }
    let mut free = None;
    for slot in ctx.get_slots_with_token()? {
        if !ctx.get_token_info(slot)?.token_initialized() {
            free = Some(slot);
            break;
        }
    }
    let slot = free.ok_or_else(|| anyhow::anyhow!("no uninitialised slot is available"))?;
    ctx.init_token(slot, &AuthPin::from(so_pin.expose()), label)
        .map_err(|e| anyhow::anyhow!("C_InitToken failed: {e}"))?;
    // SoftHSM2 renumbers the slot once it holds a token: find it again by label.
    let slot = find_token_slot(ctx, label)?
        .ok_or_else(|| anyhow::anyhow!("token {label:?} vanished right after C_InitToken"))?;
    let session = ctx.open_rw_session(slot)?;
    login(&session, UserType::So, so_pin).map_err(|e| anyhow::anyhow!("SO login failed: {e}"))?;
    session
        .init_pin(&AuthPin::from(user_pin.expose()))
        .map_err(|e| anyhow::anyhow!("C_InitPIN failed: {e}"))?;
    session.logout()?;
    Ok(TokenInit::Created)
}
