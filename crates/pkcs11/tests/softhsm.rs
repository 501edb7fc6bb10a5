//! HMAC keys and signing key pairs against a real SoftHSM2 token, checked
//! with an independent implementation (`ring`).
//!
//! The suite runs in a child process given its own token directory through
//! SOFTHSM2_CONF: C_Initialize happens once per process and reads the
//! configuration then, and tests never mutate their own environment.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use cryptoki::object::{Attribute, AttributeType};
use cryptoki::session::Session;
use der::Decode as _;
use keymesh_common::Secret;
use keymesh_pkcs11::Error;
use keymesh_pkcs11::mac::{self, MacAlg};
use keymesh_pkcs11::pair::{self, Curve, Hash, PairSpec, SignAlg};
use keymesh_pkcs11::token::{self, Hsm};
use keymesh_pkcs11::wrap::{self, WrappedKeyRef};
use ring::signature::{self as rs, UnparsedPublicKey};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const LABEL: &str = "keymesh-pkcs11-test";
const DOMAIN: &str = wrap::DEFAULT_DOMAIN_KEY_LABEL;
const CHILD_ENV: &str = "KEYMESH_PKCS11_SOFTHSM_CHILD";

#[test]
fn softhsm_suite() {
    if std::env::var_os(CHILD_ENV).is_some() {
        run();
        return;
    }
    if !Path::new(MODULE).exists() {
        eprintln!("SKIPPED: {MODULE} not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "softhsm_suite",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SOFTHSM2_CONF", &conf)
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "SoftHSM2 suite failed in the child");
}

fn pin() -> Secret {
    Secret::new("1234".into())
}

fn run() {
    let ctx = token::load_module(Path::new(MODULE)).unwrap();
    token::init_token(&ctx, LABEL, &pin(), &pin(), false).unwrap();
    let hsm = Hsm::open(ctx, LABEL, pin()).unwrap();
    let session = hsm.open_session().unwrap();
    wrap::generate_domain_key(&session, DOMAIN).unwrap();

    hmac(&session);
    ec(&session);
    rsa(&session);
    // Every generated and unwrapped object was a session object, destroyed.
    assert!(session_objects(&session).is_empty());
}

fn key(wrapped: &[u8]) -> WrappedKeyRef<'_> {
    WrappedKeyRef {
        wrapping_key: DOMAIN,
        wrapped,
    }
}

fn session_objects(session: &Session) -> Vec<cryptoki::object::ObjectHandle> {
    session.find_objects(&[Attribute::Token(false)]).unwrap()
}

fn bool_attr(session: &Session, handle: cryptoki::object::ObjectHandle, t: AttributeType) -> bool {
    match session.get_attributes(handle, &[t]).unwrap().as_slice() {
        [Attribute::Extractable(b)] | [Attribute::Sensitive(b)] | [Attribute::Sign(b)] => *b,
        other => panic!("{other:?}"),
    }
}

/// The unwrapped copy can be used but never read or wrapped again.
fn assert_locked(session: &Session, handle: cryptoki::object::ObjectHandle) {
    assert!(!bool_attr(session, handle, AttributeType::Extractable));
    assert!(bool_attr(session, handle, AttributeType::Sensitive));
    assert!(bool_attr(session, handle, AttributeType::Sign));
}

fn hmac(session: &Session) {
    let k1 = mac::generate_wrapped_secret(session, DOMAIN, 256).unwrap();
    let k2 = mac::generate_wrapped_secret(session, DOMAIN, 256).unwrap();
    // RFC 5649 of 32 bytes: 8-byte integrity block plus the key.
    assert_eq!(k1.len(), 40);
    assert_ne!(k1, k2);
    let msg = b"the message";
    let t1 = mac::mac(session, key(&k1), MacAlg::HmacSha256, msg).unwrap();
    assert_eq!(t1.len(), 32);
    assert_eq!(
        mac::mac(session, key(&k1), MacAlg::HmacSha256, msg).unwrap(),
        t1
    );
    assert_ne!(
        mac::mac(session, key(&k2), MacAlg::HmacSha256, msg).unwrap(),
        t1
    );
    assert!(mac::verify_mac(session, key(&k1), MacAlg::HmacSha256, msg, &t1).unwrap());
    let mut tampered = t1.clone();
    tampered[0] ^= 1;
    assert!(!mac::verify_mac(session, key(&k1), MacAlg::HmacSha256, msg, &tampered).unwrap());
    assert!(!mac::verify_mac(session, key(&k1), MacAlg::HmacSha256, msg, &t1[..31]).unwrap());
    assert!(!mac::verify_mac(session, key(&k2), MacAlg::HmacSha256, msg, &t1).unwrap());

    for (bits, alg) in [(384, MacAlg::HmacSha384), (512, MacAlg::HmacSha512)] {
        let k = mac::generate_wrapped_secret(session, DOMAIN, bits).unwrap();
        assert_eq!(k.len(), 8 + bits as usize / 8);
        let tag = mac::mac(session, key(&k), alg, msg).unwrap();
        assert_eq!(tag.len(), alg.tag_len());
    }
    assert!(matches!(
        mac::generate_wrapped_secret(session, DOMAIN, 128),
        Err(Error::InvalidArgument(_))
    ));

    let unwrapped = mac::unwrap_secret(session, key(&k1)).unwrap();
    assert_locked(session, unwrapped.handle);
    drop(unwrapped);

    // A corrupted blob does not unwrap.
    let mut bad = k1.clone();
    bad[10] ^= 1;
    assert!(matches!(
        mac::mac(session, key(&bad), MacAlg::HmacSha256, msg),
        Err(Error::InvalidKeyMaterial { .. })
    ));
}

/// The subjectPublicKey bytes of a DER SPKI, and its algorithm OID.
fn spki_key(der: &[u8]) -> (String, Vec<u8>) {
    let spki = spki::SubjectPublicKeyInfoRef::from_der(der).unwrap();
    (
        spki.algorithm.oid.to_string(),
        spki.subject_public_key.raw_bytes().to_vec(),
    )
}

fn sha(alg: &'static ring::digest::Algorithm, msg: &[u8]) -> Vec<u8> {
    ring::digest::digest(alg, msg).as_ref().to_vec()
}

fn ec(session: &Session) {
    let spec = PairSpec::Ec(Curve::P256);
    let pair = pair::generate_wrapped_pair(session, DOMAIN, spec).unwrap();
    let (oid, point) = spki_key(&pair.public_spki_der);
    assert_eq!(oid, "1.2.840.10045.2.1");
    assert_eq!(point.len(), 65);

    let msg = b"sign me";
    let digest = sha(&ring::digest::SHA256, msg);
    let sig = pair::sign(
        session,
        key(&pair.wrapped_private),
        spec,
        SignAlg::Ecdsa(Hash::Sha256),
        &digest,
    )
    .unwrap();
    let public = UnparsedPublicKey::new(&rs::ECDSA_P256_SHA256_ASN1, &point);
    public.verify(msg, &sig).unwrap();
    assert!(public.verify(b"sign m3", &sig).is_err());
    // A signature over a tampered digest does not verify for the message.
    let mut tampered = digest.clone();
    tampered[0] ^= 1;
    let bad = pair::sign(
        session,
        key(&pair.wrapped_private),
        spec,
        SignAlg::Ecdsa(Hash::Sha256),
        &tampered,
    )
    .unwrap();
    assert!(public.verify(msg, &bad).is_err());

    // Wrong digest length, wrong scheme for the key type.
    assert!(matches!(
        pair::sign(
            session,
            key(&pair.wrapped_private),
            spec,
            SignAlg::Ecdsa(Hash::Sha256),
            &digest[..31]
        ),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        pair::sign(
            session,
            key(&pair.wrapped_private),
            spec,
            SignAlg::RsaPss(Hash::Sha256),
            &digest
        ),
        Err(Error::InvalidArgument(_))
    ));

    let unwrapped = pair::unwrap_private(session, key(&pair.wrapped_private), spec).unwrap();
    assert_locked(session, unwrapped.handle);
    drop(unwrapped);

    // P-384 and secp256k1 generate and sign too.
    let p384 = PairSpec::Ec(Curve::P384);
    let pair = pair::generate_wrapped_pair(session, DOMAIN, p384).unwrap();
    let (_, point) = spki_key(&pair.public_spki_der);
    let sig = pair::sign(
        session,
        key(&pair.wrapped_private),
        p384,
        SignAlg::Ecdsa(Hash::Sha384),
        &sha(&ring::digest::SHA384, msg),
    )
    .unwrap();
    UnparsedPublicKey::new(&rs::ECDSA_P384_SHA384_ASN1, &point)
        .verify(msg, &sig)
        .unwrap();
    let k1 = PairSpec::Ec(Curve::Secp256k1);
    let pair = pair::generate_wrapped_pair(session, DOMAIN, k1).unwrap();
    assert_eq!(spki_key(&pair.public_spki_der).1.len(), 65);
    let sig = pair::sign(
        session,
        key(&pair.wrapped_private),
        k1,
        SignAlg::Ecdsa(Hash::Sha256),
        &digest,
    )
    .unwrap();
    assert_eq!(sig[0], 0x30);
}

fn rsa(session: &Session) {
    let spec = PairSpec::Rsa { bits: 2048 };
    let pair = pair::generate_wrapped_pair(session, DOMAIN, spec).unwrap();
    let (oid, public) = spki_key(&pair.public_spki_der);
    assert_eq!(oid, "1.2.840.113549.1.1.1");
    let msg = b"sign me with RSA";
    let digest = sha(&ring::digest::SHA256, msg);
    let mut tampered = digest.clone();
    tampered[5] ^= 1;
    for (alg, ring_alg) in [
        (
            SignAlg::RsaPkcs1(Hash::Sha256),
            &rs::RSA_PKCS1_2048_8192_SHA256,
        ),
        (SignAlg::RsaPss(Hash::Sha256), &rs::RSA_PSS_2048_8192_SHA256),
    ] {
        let verifier = UnparsedPublicKey::new(ring_alg, &public);
        let sig = pair::sign(session, key(&pair.wrapped_private), spec, alg, &digest).unwrap();
        assert_eq!(sig.len(), 256);
        verifier.verify(msg, &sig).unwrap();
        let bad = pair::sign(session, key(&pair.wrapped_private), spec, alg, &tampered).unwrap();
        assert!(verifier.verify(msg, &bad).is_err(), "{alg:?}");
    }
    let sig = pair::sign(
        session,
        key(&pair.wrapped_private),
        spec,
        SignAlg::RsaPkcs1(Hash::Sha512),
        &sha(&ring::digest::SHA512, msg),
    )
    .unwrap();
    UnparsedPublicKey::new(&rs::RSA_PKCS1_2048_8192_SHA512, &public)
        .verify(msg, &sig)
        .unwrap();

    let unwrapped = pair::unwrap_private(session, key(&pair.wrapped_private), spec).unwrap();
    assert_locked(session, unwrapped.handle);
    drop(unwrapped);

    assert!(matches!(
        pair::generate_wrapped_pair(session, DOMAIN, PairSpec::Rsa { bits: 1024 }),
        Err(Error::InvalidArgument(_))
    ));
}
