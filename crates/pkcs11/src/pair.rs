//! Asymmetric signing keys (RSA_2048/3072/4096, EC_P256/P384/SECP256K1)
//! whose private half lives outside the HSM, wrapped under the domain key.
//!
//! Why wrapped: a private signing key must never leave the HSM in clear, yet
//! the service keeps customer keys in its database, not on the token. So the
//! pair is generated in the HSM (C_GenerateKeyPair) as session objects; the
//! private half is sensitive and extractable only so that it can be wrapped
//! once with CKM_AES_KEY_WRAP_PAD (a PKCS#8 blob inside, encrypted under the
//! domain key); the public half is read and encoded here as DER
//! SubjectPublicKeyInfo; both objects are destroyed. To sign, the blob is
//! unwrapped into a sensitive, non-extractable session object that may only
//! sign, C_Sign runs on a digest the caller computed, and the object is
//! destroyed.
//!
//! Signatures are returned in the form KMS APIs and verifiers expect: DER
//! ECDSA-Sig-Value (RFC 3279) for ECDSA — CKM_ECDSA's raw r‖s is converted
//! here — and the plain PKCS#1 signature for RSA. RSASSA-PKCS1-v1_5 runs as
//! raw CKM_RSA_PKCS over DigestInfo(digest) and PSS as CKM_RSA_PKCS_PSS with
//! MGF1 of the same hash and a salt as long as the hash, so one precomputed
//! digest path serves every algorithm.

use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::Session;
use der::Encode as _;
use der::asn1::{AnyRef, BitStringRef, ObjectIdentifier, OctetStringRef, UintRef};
use spki::{AlgorithmIdentifier, SubjectPublicKeyInfo};

use crate::error::Error;
use crate::wrap::{SessionObject, VAULT_KEY_LABEL, WRAP_MECHANISM, WrappedKeyRef, find_domain_key};

/// rsaEncryption (RFC 8017).
const RSA_ENCRYPTION: ObjectIdentifier = pkcs1::ALGORITHM_OID;
/// id-ecPublicKey (RFC 5480).
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

/// The named curves on offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
    Secp256k1,
}

impl Curve {
    /// The namedCurve OID (RFC 5480, SEC 2), DER-encoded as CKA_EC_PARAMS.
    pub fn oid(self) -> ObjectIdentifier {
        match self {
            Curve::P256 => ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7"),
            Curve::P384 => ObjectIdentifier::new_unwrap("1.3.132.0.34"),
            Curve::Secp256k1 => ObjectIdentifier::new_unwrap("1.3.132.0.10"),
        }
    }

    /// Bytes of a field element (and of r and s in CKM_ECDSA output).
    pub fn field_len(self) -> usize {
        match self {
            Curve::P256 | Curve::Secp256k1 => 32,
            Curve::P384 => 48,
        }
    }
}

/// What [`generate_wrapped_pair`] can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairSpec {
    /// RSA with public exponent 65537; `bits` is 2048, 3072 or 4096.
    Rsa {
        bits: u32,
    },
    Ec(Curve),
}

impl PairSpec {
    fn key_type(self) -> KeyType {
        match self {
            PairSpec::Rsa { .. } => KeyType::RSA,
            PairSpec::Ec(_) => KeyType::EC,
        }
    }
}

/// RSA modulus sizes accepted (the RSA_2048/3072/4096 key specs).
pub const RSA_BITS: [u32; 3] = [2048, 3072, 4096];

/// A digest algorithm of a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    /// Bytes of the digest.
    pub fn digest_len(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    /// The DER DigestInfo prefix (RFC 8017 §9.2 note 1) that precedes the
    /// digest in an RSASSA-PKCS1-v1_5 signature.
    pub fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            Hash::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            Hash::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            Hash::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }

    fn pss_params(self) -> PkcsPssParams {
        let (hash_alg, mgf) = match self {
            Hash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
            Hash::Sha384 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
            Hash::Sha512 => (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512),
        };
        PkcsPssParams {
            hash_alg,
            mgf,
            s_len: (self.digest_len() as u64).into(),
        }
    }
}

/// A signature scheme over a precomputed digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignAlg {
    /// ECDSA; the signature is DER ECDSA-Sig-Value.
    Ecdsa(Hash),
    /// RSASSA-PKCS1-v1_5.
    RsaPkcs1(Hash),
    /// RSASSA-PSS, MGF1 with the same hash, salt as long as the hash.
    RsaPss(Hash),
}

impl SignAlg {
    pub fn hash(self) -> Hash {
        match self {
            SignAlg::Ecdsa(h) | SignAlg::RsaPkcs1(h) | SignAlg::RsaPss(h) => h,
        }
    }
}

/// A generated pair: the private key wrapped under the domain key, the
/// public key in clear.
pub struct WrappedPair {
    /// RFC 5649 wrap of the PKCS#8 private key under the domain key.
    pub wrapped_private: Vec<u8>,
    /// DER SubjectPublicKeyInfo.
    pub public_spki_der: Vec<u8>,
}

impl std::fmt::Debug for WrappedPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrappedPair")
            .field("wrapped_private_len", &self.wrapped_private.len())
            .field("public_spki_der_len", &self.public_spki_der.len())
            .finish()
    }
}

fn encoding(_: der::Error) -> Error {
    Error::HsmOutput("public key components do not DER-encode")
}

/// Template of a private key. `fresh` is the generated key: extractable so
/// it can be wrapped once, usable for nothing. Otherwise it is the unwrapped
/// copy: non-extractable, sign only. Both sensitive; every attribute
/// explicit (SoftHSM2 defaults to SENSITIVE=false).
pub fn private_template(spec: PairSpec, fresh: bool) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(spec.key_type()),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(fresh),
        Attribute::Label(VAULT_KEY_LABEL.as_bytes().to_vec()),
        Attribute::Sign(!fresh),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
    ]
}

/// Template of the generated public key: a session object only read once.
pub fn public_template(spec: PairSpec) -> Result<Vec<Attribute>, Error> {
    let mut template = vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(spec.key_type()),
        Attribute::Token(false),
        Attribute::Private(false),
        Attribute::Label(VAULT_KEY_LABEL.as_bytes().to_vec()),
        Attribute::Verify(false),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Derive(false),
    ];
    match spec {
        PairSpec::Rsa { bits } => {
            template.push(Attribute::ModulusBits(u64::from(bits).into()));
            template.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
        }
        PairSpec::Ec(curve) => {
            template.push(Attribute::EcParams(curve.oid().to_der().map_err(encoding)?));
        }
    }
    Ok(template)
}

/// CreateKey for an asymmetric spec: the pair is generated in the HSM, the
/// private key returned wrapped under `wrapping_key_label` and the public
/// key as DER SubjectPublicKeyInfo. Both objects are session objects,
/// destroyed before returning.
pub fn generate_wrapped_pair(
    session: &Session,
    wrapping_key_label: &str,
    spec: PairSpec,
) -> Result<WrappedPair, Error> {
    if let PairSpec::Rsa { bits } = spec
        && !RSA_BITS.contains(&bits)
    {
        return Err(Error::InvalidArgument(
            "RSA key size must be 2048, 3072 or 4096 bits",
        ));
    }
    let domain = find_domain_key(session, wrapping_key_label)?;
    let mechanism = match spec {
        PairSpec::Rsa { .. } => Mechanism::RsaPkcsKeyPairGen,
        PairSpec::Ec(_) => Mechanism::EccKeyPairGen,
    };
    let (public, private) = session
        .generate_key_pair(
            &mechanism,
            &public_template(spec)?,
            &private_template(spec, true),
        )
        .map_err(Error::Hsm)?;
    let public = SessionObject::new(session, public);
    let private = SessionObject::new(session, private);
    let public_spki_der = match spec {
        PairSpec::Rsa { .. } => rsa_spki(session, &public)?,
        PairSpec::Ec(curve) => ec_spki(session, curve, &public)?,
    };
    let wrapped_private = session
        .wrap_key(&WRAP_MECHANISM, domain, private.handle)
        .map_err(|e| Error::from_pkcs11(e, wrapping_key_label))?;
    Ok(WrappedPair {
        wrapped_private,
        public_spki_der,
    })
}

/// The public attributes `types` of `object`, in order, each non-empty.
fn read(
    session: &Session,
    object: &SessionObject<'_>,
    types: &[AttributeType],
) -> Result<Vec<Vec<u8>>, Error> {
    let attrs = session
        .get_attributes(object.handle, types)
        .map_err(Error::Hsm)?;
    if attrs.len() != types.len() {
        return Err(Error::HsmOutput("the HSM did not report a public key part"));
    }
    attrs
        .into_iter()
        .map(|a| match a {
            Attribute::Modulus(v) | Attribute::PublicExponent(v) | Attribute::EcPoint(v)
                if !v.is_empty() =>
            {
                Ok(v)
            }
            _ => Err(Error::HsmOutput(
                "the HSM reported an empty public key part",
            )),
        })
        .collect()
}

fn spki(algorithm: AlgorithmIdentifier<AnyRef<'_>>, key: &[u8]) -> Result<Vec<u8>, Error> {
    SubjectPublicKeyInfo {
        algorithm,
        subject_public_key: BitStringRef::from_bytes(key).map_err(encoding)?,
    }
    .to_der()
    .map_err(encoding)
}

fn rsa_spki(session: &Session, public: &SessionObject<'_>) -> Result<Vec<u8>, Error> {
    let parts = read(
        session,
        public,
        &[AttributeType::Modulus, AttributeType::PublicExponent],
    )?;
    let [n, e] = parts.as_slice() else {
        return Err(Error::HsmOutput("the HSM did not report a public key part"));
    };
    let key = pkcs1::RsaPublicKey {
        modulus: UintRef::new(n).map_err(encoding)?,
        public_exponent: UintRef::new(e).map_err(encoding)?,
    }
    .to_der()
    .map_err(encoding)?;
    // rsaEncryption carries an explicit NULL parameter (RFC 8017 A.1).
    let algorithm = AlgorithmIdentifier {
        oid: RSA_ENCRYPTION,
        parameters: Some(AnyRef::NULL),
    };
    spki(algorithm, &key)
}

fn ec_spki(session: &Session, curve: Curve, public: &SessionObject<'_>) -> Result<Vec<u8>, Error> {
    let parts = read(session, public, &[AttributeType::EcPoint])?;
    let point = uncompressed_point(curve, parts.first().map_or(&[][..], Vec::as_slice))?;
    let oid = curve.oid();
    let algorithm = AlgorithmIdentifier {
        oid: ID_EC_PUBLIC_KEY,
        parameters: Some(AnyRef::from(&oid)),
    };
    spki(algorithm, point)
}

/// The uncompressed point (0x04 ‖ X ‖ Y) inside CKA_EC_POINT, which PKCS#11
/// defines as a DER OCTET STRING (SoftHSM2 does so); some HSMs return it raw.
pub fn uncompressed_point(curve: Curve, attr: &[u8]) -> Result<&[u8], Error> {
    use der::Decode as _;
    let len = 1 + 2 * curve.field_len();
    let raw = if attr.len() == len {
        attr
    } else {
        <&OctetStringRef>::from_der(attr)
            .map_err(|_| Error::HsmOutput("CKA_EC_POINT is not a DER OCTET STRING"))?
            .as_bytes()
    };
    if raw.len() != len || raw.first() != Some(&0x04) {
        return Err(Error::HsmOutput(
            "CKA_EC_POINT is not an uncompressed point",
        ));
    }
    Ok(raw)
}

/// Unwrap a private key of `spec` onto `session` as a sensitive,
/// non-extractable session object that may only sign; destroyed when the
/// result drops.
pub fn unwrap_private<'a>(
    session: &'a Session,
    key: WrappedKeyRef<'_>,
    spec: PairSpec,
) -> Result<SessionObject<'a>, Error> {
    let domain = find_domain_key(session, key.wrapping_key)?;
    let handle = session
        .unwrap_key(
            &WRAP_MECHANISM,
            domain,
            key.wrapped,
            &private_template(spec, false),
        )
        .map_err(|e| Error::from_pkcs11(e, key.wrapping_key))?;
    Ok(SessionObject::new(session, handle))
}

/// Sign `digest` (already hashed with `alg`'s hash) with the wrapped private
/// key of `spec`, in the HSM. ECDSA signatures come back as DER
/// ECDSA-Sig-Value, RSA signatures as the modulus-length integer.
pub fn sign(
    session: &Session,
    wrapped_private: WrappedKeyRef<'_>,
    spec: PairSpec,
    alg: SignAlg,
    digest: &[u8],
) -> Result<Vec<u8>, Error> {
    let hash = alg.hash();
    if digest.len() != hash.digest_len() {
        return Err(Error::InvalidArgument(
            "digest length does not match the signing algorithm",
        ));
    }
    let key = unwrap_private(session, wrapped_private, spec)?;
    let hsm = |e| Error::from_pkcs11(e, wrapped_private.wrapping_key);
    match (spec, alg) {
        (PairSpec::Ec(curve), SignAlg::Ecdsa(_)) => {
            let raw = session
                .sign(&Mechanism::Ecdsa, key.handle, digest)
                .map_err(hsm)?;
            ecdsa_der(curve, &raw)
        }
        (PairSpec::Rsa { .. }, SignAlg::RsaPkcs1(_)) => {
            let mut info = hash.digest_info_prefix().to_vec();
            info.extend_from_slice(digest);
            session
                .sign(&Mechanism::RsaPkcs, key.handle, &info)
                .map_err(hsm)
        }
        (PairSpec::Rsa { .. }, SignAlg::RsaPss(_)) => session
            .sign(
                &Mechanism::RsaPkcsPss(hash.pss_params()),
                key.handle,
                digest,
            )
            .map_err(hsm),
        _ => Err(Error::InvalidArgument(
            "signing algorithm does not fit the key type",
        )),
    }
}

/// DER ECDSA-Sig-Value (RFC 3279: SEQUENCE { r INTEGER, s INTEGER }) from
/// CKM_ECDSA's r‖s, each half [`Curve::field_len`] bytes.
pub fn ecdsa_der(curve: Curve, raw: &[u8]) -> Result<Vec<u8>, Error> {
    if raw.len() != 2 * curve.field_len() {
        return Err(Error::HsmOutput("ECDSA output has the wrong length"));
    }
    let (r, s) = raw.split_at(curve.field_len());
    let mut body = UintRef::new(r)
        .map_err(encoding)?
        .to_der()
        .map_err(encoding)?;
    body.extend(
        UintRef::new(s)
            .map_err(encoding)?
            .to_der()
            .map_err(encoding)?,
    );
    // Two INTEGERs of at most 49 bytes each (P-384) stay below 128 bytes,
    // so the SEQUENCE length is one byte (short form).
    let len = u8::try_from(body.len())
        .ok()
        .filter(|l| *l < 0x80)
        .ok_or(Error::HsmOutput("ECDSA signature is too long"))?;
    let mut der = vec![0x30, len];
    der.extend(body);
    Ok(der)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn templates() {
        let spec = PairSpec::Ec(Curve::P256);
        let fresh = private_template(spec, true);
        for a in [
            Attribute::Token(false),
            Attribute::Sensitive(true),
            Attribute::Extractable(true),
            Attribute::Sign(false),
        ] {
            assert!(fresh.contains(&a), "{a:?}");
        }
        let unwrapped = private_template(PairSpec::Rsa { bits: 2048 }, false);
        for a in [
            Attribute::KeyType(KeyType::RSA),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
        ] {
            assert!(unwrapped.contains(&a), "{a:?}");
        }
        let public = public_template(spec).unwrap();
        assert!(public.contains(&Attribute::EcParams(vec![
            0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07
        ])));
    }

    #[test]
    fn ecdsa_der_encoding() {
        // r with the high bit set gains a 0x00; s with leading zeros loses them.
        let mut raw = vec![0x80; 32];
        raw.extend([0u8; 31]);
        raw.push(0x05);
        let der = ecdsa_der(Curve::P256, &raw).unwrap();
        assert_eq!(&der[..4], &[0x30, 2 + 33 + 3, 0x02, 33]);
        assert_eq!(&der[der.len() - 3..], &[0x02, 0x01, 0x05]);
        assert!(ecdsa_der(Curve::P256, &raw[1..]).is_err());
    }

    #[test]
    fn ec_point() {
        let point = [&[0x04][..], &[1; 64]].concat();
        let wrapped = [&[0x04, 65][..], &point].concat();
        assert_eq!(uncompressed_point(Curve::P256, &wrapped).unwrap(), point);
        assert_eq!(uncompressed_point(Curve::P256, &point).unwrap(), point);
        assert!(uncompressed_point(Curve::P384, &wrapped).is_err());
    }

    #[test]
    fn digest_info_prefixes_end_in_the_digest_length() {
        for h in [Hash::Sha256, Hash::Sha384, Hash::Sha512] {
            let p = h.digest_info_prefix();
            assert_eq!(usize::from(p[p.len() - 1]), h.digest_len());
            assert_eq!(usize::from(p[1]) + 2, p.len() + h.digest_len());
        }
    }
}
