//! The raw HSM ceiling: AES-GCM encrypt straight through cryptoki, no network,
//! no service — the upper bound the keymesh stack is measured against.
//!
//! Like the crypto-worker: one logged-in session per thread, the key handle
//! found once, a fresh 12-byte IV from the OS CSPRNG per operation.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as Pkcs11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use keymesh_common::Secret;
use ring::rand::{SecureRandom, SystemRandom};

use crate::stats::Stats;

#[derive(Debug, Clone, clap::Args)]
pub struct RawHsmArgs {
    /// PKCS#11 module.
    #[arg(
        long,
        env = "KEYMESH_PKCS11_MODULE",
        default_value = "/usr/lib/softhsm/libsofthsm2.so"
    )]
    pub module: PathBuf,
    /// Token label.
    #[arg(long, env = "KEYMESH_TOKEN_LABEL", default_value = "keymesh")]
    pub token_label: String,
    /// User PIN (prefer the env var: argv is world-readable).
    #[arg(long, env = "KEYMESH_PIN", hide_env_values = true)]
    pub pin: Secret,
    /// Key label.
    #[arg(long)]
    pub key_id: String,
    /// Plaintext bytes per encrypt.
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// Threads, one session each.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Seconds.
    #[arg(long)]
    pub duration: f64,
    /// Encrypt with a session-object copy of the key (C_CopyObject,
    /// CKA_TOKEN=false), as the crypto-worker does with
    /// --session-key-copies, instead of the token object.
    #[arg(long)]
    pub session_copy: bool,
    /// Extra threads (own session each, same process) generating RSA key
    /// pairs of `--keygen-bits` back to back while the encrypt threads run:
    /// shows whether a long C_GenerateKeyPair stalls the other sessions of
    /// the process (SoftHSM2's internal locks). `--threads 0` with keygen
    /// threads only generates, to load the HSM from a second process.
    #[arg(long, default_value_t = 0)]
    pub keygen_threads: usize,
    /// Modulus bits of the background key pairs.
    #[arg(long, default_value_t = 4096)]
    pub keygen_bits: u32,
}

fn login(session: &Session, pin: &Secret) -> Result<(), Pkcs11Error> {
    match session.login(UserType::User, Some(&AuthPin::from(pin.expose()))) {
        // Login state is per token per process: every session after the
        // first is already logged in.
        Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(e),
    }
}

fn find_slot(ctx: &Pkcs11, label: &str) -> anyhow::Result<Slot> {
    for slot in ctx.get_slots_with_token()? {
        let info = ctx.get_token_info(slot)?;
        if info.token_initialized() && info.label() == label {
            return Ok(slot);
        }
    }
    anyhow::bail!("no initialised token labelled {label:?}")
}

fn find_key(session: &Session, label: &str) -> anyhow::Result<ObjectHandle> {
    let handles = session.find_objects(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ])?;
    match handles.as_slice() {
        [h] => Ok(*h),
        [] => anyhow::bail!("no secret key labelled {label:?}"),
        _ => anyhow::bail!("several keys labelled {label:?}"),
    }
}

/// One thread's loop until `end`.
fn encrypt_loop(
    ctx: &Pkcs11,
    slot: Slot,
    pin: &Secret,
    key: ObjectHandle,
    plaintext: &[u8],
    end: Instant,
) -> anyhow::Result<Stats> {
    let session = ctx.open_ro_session(slot)?;
    login(&session, pin)?;
    let rng = SystemRandom::new();
    let mut stats = Stats::new()?;
    let mut iv = [0u8; 12];
    while Instant::now() < end {
        let t0 = Instant::now();
        rng.fill(&mut iv)
            .map_err(|_| anyhow::anyhow!("CSPRNG failure"))?;
        let params = GcmParams::new(&mut iv, &[], 128.into())?;
        match session.encrypt(&Mechanism::AesGcm(params), key, plaintext) {
            Ok(_) => {
                let d = t0.elapsed();
                stats.record_ok(d, d);
            }
            Err(Pkcs11Error::Pkcs11(rv, _)) => stats.record_error(format!("{rv:?}")),
            Err(e) => stats.record_error(e.to_string()),
        }
    }
    Ok(stats)
}

/// One background thread: RSA key pairs (session objects, destroyed at once)
/// until `end`; returns how many were made.
fn keygen_loop(
    ctx: &Pkcs11,
    slot: Slot,
    pin: &Secret,
    bits: u32,
    end: Instant,
) -> anyhow::Result<u64> {
    let session = ctx.open_rw_session(slot)?;
    login(&session, pin)?;
    let public = [
        Attribute::Token(false),
        Attribute::ModulusBits(u64::from(bits).into()),
        Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
    ];
    let private = [Attribute::Token(false), Attribute::Sensitive(true)];
    let mut made = 0;
    while Instant::now() < end {
        let (pubk, privk) =
            session.generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)?;
        session.destroy_object(pubk)?;
        session.destroy_object(privk)?;
        made += 1;
    }
    Ok(made)
}

/// What [`run`] measured.
#[derive(Debug)]
pub struct RawRun {
    pub stats: Stats,
    pub elapsed: Duration,
    /// Key pairs the keygen threads finished.
    pub keypairs: u64,
}

/// Run the loop on `threads` threads (and `keygen_threads` beside them).
pub fn run(args: &RawHsmArgs) -> anyhow::Result<RawRun> {
    let ctx = Pkcs11::new(&args.module)?;
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
    let slot = find_slot(&ctx, &args.token_label)?;
    // Handles are per token, valid in every session of this process: find
    // the key once (C_FindObjects costs 40–60 µs and is not what we measure).
    // The lookup session stays open for the whole run: closing a token's last
    // session logs it out, and SoftHSM2 then invalidates handles of private
    // objects (CKR_OBJECT_HANDLE_INVALID in every thread).
    let lookup = ctx.open_ro_session(slot)?;
    login(&lookup, &args.pin)?;
    let token_key = find_key(&lookup, &args.key_id)?;
    // The copy is a session object of `lookup`, which outlives the run;
    // session objects are visible to every session of the process.
    let key = if args.session_copy {
        lookup.copy_object(token_key, &[Attribute::Token(false)])?
    } else {
        token_key
    };
    let plaintext: Vec<u8> = (0..args.size).map(|i| (i % 251) as u8).collect();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.duration);
    let (results, keygens): (Vec<anyhow::Result<Stats>>, Vec<anyhow::Result<u64>>) =
        std::thread::scope(|scope| {
            let keygen: Vec<_> = (0..args.keygen_threads)
                .map(|_| {
                    let (ctx, pin, bits) = (&ctx, &args.pin, args.keygen_bits);
                    scope.spawn(move || keygen_loop(ctx, slot, pin, bits, end))
                })
                .collect();
            let handles: Vec<_> = (0..args.threads)
                .map(|_| {
                    let (ctx, pin, plaintext) = (&ctx, &args.pin, &plaintext);
                    scope.spawn(move || encrypt_loop(ctx, slot, pin, key, plaintext, end))
                })
                .collect();
            let encrypts = handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("encrypt thread panicked")))
                })
                .collect();
            let keygens = keygen
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("keygen thread panicked")))
                })
                .collect();
            (encrypts, keygens)
        });
    let elapsed = start.elapsed();
    if args.session_copy {
        // Closing `lookup` would destroy it too; be explicit anyway.
        let _ = lookup.destroy_object(key);
    }
    drop(lookup);
    let mut total = Stats::new()?;
    for r in results {
        total.merge(&r?)?;
    }
    let mut keypairs = 0;
    for k in keygens {
        keypairs += k?;
    }
    Ok(RawRun {
        stats: total,
        elapsed,
        keypairs,
    })
}
