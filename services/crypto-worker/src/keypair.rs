//! Data key pairs (GenerateDataKeyPair): RSA 2048/3072/4096 and EC P-256,
//! P-384, P-521, secp256k1, returned as DER SubjectPublicKeyInfo and DER
//! PKCS#8 PrivateKeyInfo.
//!
//! Why the HSM generates them (C_GenerateKeyPair) rather than RustCrypto
//! crates with OsRng: the randomness and the prime/scalar generation then come
//! from the same module as every other key of the service, and the only new
//! dependencies are DER encoders (`der`, `spki`, `pkcs8`, `pkcs1`, `sec1`)
//! with no key arithmetic: no `rsa`/`num-bigint-dig` (slow RSA keygen in
//! debug builds, and a large tree) and no four curve crates. The pair is made
//! as session objects whose private half is extractable and not sensitive
//! (it is handed to the caller anyway), its components are read, both objects
//! are destroyed at once, and the components are DER-encoded here. The cost:
//! RSA-4096 generation holds one session thread for seconds (SoftHSM2 ≈ 2 s),
//! so RSA pairs run on the pool's slow lane ([`PairSpec::slow`]).

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectHandle};
use cryptoki::session::Session;
use der::asn1::{AnyRef, BitStringRef, ObjectIdentifier, OctetStringRef, UintRef};
use der::{Decode as _, Encode as _};
use keymesh_proto::crypto::v1::KeyPairSpec;
use pkcs8::PrivateKeyInfoRef;
use spki::{AlgorithmIdentifier, SubjectPublicKeyInfo};
use zeroize::Zeroizing;

use keymesh_pkcs11::Error;
use keymesh_pkcs11::wrap::{self, SessionObject};

/// rsaEncryption (RFC 8017).
const RSA_ENCRYPTION: ObjectIdentifier = pkcs1::ALGORITHM_OID;
/// id-ecPublicKey (RFC 5480).
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

/// The named curves on offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
    P521,
    Secp256k1,
}

impl Curve {
    /// The namedCurve OID (RFC 5480, SEC 2).
    pub fn oid(self) -> ObjectIdentifier {
        match self {
            Curve::P256 => ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7"),
            Curve::P384 => ObjectIdentifier::new_unwrap("1.3.132.0.34"),
            Curve::P521 => ObjectIdentifier::new_unwrap("1.3.132.0.35"),
            Curve::Secp256k1 => ObjectIdentifier::new_unwrap("1.3.132.0.10"),
        }
    }

    /// Bytes of a field element, and of the private scalar in SEC1
    /// (ceil(log2(n) / 8): the same for these curves).
    pub fn field_len(self) -> usize {
        match self {
            Curve::P256 | Curve::Secp256k1 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }
}

/// What GenerateDataKeyPair can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairSpec {
    Rsa { bits: u32 },
    Ec(Curve),
}

impl PairSpec {
    /// `None` for KEY_PAIR_SPEC_UNSPECIFIED and unknown values.
    pub fn from_proto(spec: i32) -> Option<Self> {
        Some(match KeyPairSpec::try_from(spec).ok()? {
            KeyPairSpec::Unspecified => return None,
            KeyPairSpec::Rsa2048 => PairSpec::Rsa { bits: 2048 },
            KeyPairSpec::Rsa3072 => PairSpec::Rsa { bits: 3072 },
            KeyPairSpec::Rsa4096 => PairSpec::Rsa { bits: 4096 },
            KeyPairSpec::EcP256 => PairSpec::Ec(Curve::P256),
            KeyPairSpec::EcP384 => PairSpec::Ec(Curve::P384),
            KeyPairSpec::EcP521 => PairSpec::Ec(Curve::P521),
            KeyPairSpec::EcSecp256k1 => PairSpec::Ec(Curve::Secp256k1),
        })
    }

    /// Whether generating it holds a session long enough to belong on the
    /// slow lane ([`crate::pool::Pool::run_slow`]): every RSA size (SoftHSM2:
    /// ~0.1-0.5 s for 2048 bits, ~2 s for 4096, against a 200 ms XKS
    /// budget); no EC curve (about a millisecond).
    pub fn slow(self) -> bool {
        matches!(self, PairSpec::Rsa { .. })
    }
}

/// A generated pair, DER-encoded. The private key is zeroized on drop.
pub struct KeyPair {
    /// SubjectPublicKeyInfo.
    pub public_key_der: Vec<u8>,
    /// PKCS#8 (v1) PrivateKeyInfo.
    pub private_key_der: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public_key_der_len", &self.public_key_der.len())
            .finish_non_exhaustive()
    }
}

fn encoding(_: der::Error) -> Error {
    Error::HsmOutput("key pair components do not DER-encode")
}

/// Generate a pair on `session` (C_GenerateKeyPair) and encode it.
pub fn generate(session: &Session, spec: PairSpec) -> Result<KeyPair, Error> {
    // Usage flags all off: the objects live only until their components are
    // read, and are never used for crypto.
    let private = vec![
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
        Attribute::Label(wrap::VAULT_KEY_LABEL.as_bytes().to_vec()),
        Attribute::Sign(false),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
    ];
    let mut public = vec![
        Attribute::Token(false),
        Attribute::Label(wrap::VAULT_KEY_LABEL.as_bytes().to_vec()),
        Attribute::Verify(false),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
    ];
    let mechanism = match spec {
        PairSpec::Rsa { bits } => {
            public.push(Attribute::ModulusBits(u64::from(bits).into()));
            public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
            Mechanism::RsaPkcsKeyPairGen
        }
        PairSpec::Ec(curve) => {
            public.push(Attribute::EcParams(curve.oid().to_der().map_err(encoding)?));
            Mechanism::EccKeyPairGen
        }
    };
    let (public_handle, private_handle) = session
        .generate_key_pair(&mechanism, &public, &private)
        .map_err(Error::Hsm)?;
    let public_object = SessionObject::new(session, public_handle);
    let private_object = SessionObject::new(session, private_handle);
    match spec {
        PairSpec::Rsa { .. } => rsa(session, private_object.handle),
        PairSpec::Ec(curve) => ec(session, curve, public_object.handle, private_object.handle),
    }
}

/// The attributes `types` of `handle`, in that order, each zeroized on drop.
fn read(
    session: &Session,
    handle: ObjectHandle,
    types: &[AttributeType],
) -> Result<Vec<Zeroizing<Vec<u8>>>, Error> {
    let attrs = session.get_attributes(handle, types).map_err(Error::Hsm)?;
    if attrs.len() != types.len() {
        return Err(Error::HsmOutput("the HSM did not report a key component"));
    }
    attrs
        .into_iter()
        .map(|a| match a {
            Attribute::Modulus(v)
            | Attribute::PublicExponent(v)
            | Attribute::PrivateExponent(v)
            | Attribute::Prime1(v)
            | Attribute::Prime2(v)
            | Attribute::Exponent1(v)
            | Attribute::Exponent2(v)
            | Attribute::Coefficient(v)
            | Attribute::Value(v)
            | Attribute::EcPoint(v)
                if !v.is_empty() =>
            {
                Ok(Zeroizing::new(v))
            }
            _ => Err(Error::HsmOutput("the HSM reported an empty key component")),
        })
        .collect()
}

fn uint(v: &[u8]) -> Result<UintRef<'_>, Error> {
    UintRef::new(v).map_err(encoding)
}

fn rsa(session: &Session, private: ObjectHandle) -> Result<KeyPair, Error> {
    let parts = read(
        session,
        private,
        &[
            AttributeType::Modulus,
            AttributeType::PublicExponent,
            AttributeType::PrivateExponent,
            AttributeType::Prime1,
            AttributeType::Prime2,
            AttributeType::Exponent1,
            AttributeType::Exponent2,
            AttributeType::Coefficient,
        ],
    )?;
    let [n, e, d, p, q, dp, dq, qinv] = parts.as_slice() else {
        return Err(Error::HsmOutput("the HSM did not report a key component"));
    };
    let key = pkcs1::RsaPrivateKey {
        modulus: uint(n)?,
        public_exponent: uint(e)?,
        private_exponent: uint(d)?,
        prime1: uint(p)?,
        prime2: uint(q)?,
        exponent1: uint(dp)?,
        exponent2: uint(dq)?,
        coefficient: uint(qinv)?,
        other_prime_infos: None,
    };
    let inner = Zeroizing::new(key.to_der().map_err(encoding)?);
    let public = pkcs1::RsaPublicKey {
        modulus: uint(n)?,
        public_exponent: uint(e)?,
    }
    .to_der()
    .map_err(encoding)?;
    // rsaEncryption carries an explicit NULL parameter (RFC 8017 A.1).
    let algorithm = AlgorithmIdentifier {
        oid: RSA_ENCRYPTION,
        parameters: Some(AnyRef::NULL),
    };
    encode(algorithm, &public, &inner)
}

/// The uncompressed point (0x04 ‖ X ‖ Y) from CKA_EC_POINT, which PKCS#11
/// defines as a DER OCTET STRING (SoftHSM2 does so) but some HSMs return raw.
fn uncompressed_point(curve: Curve, attr: &[u8]) -> Result<Vec<u8>, Error> {
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
    Ok(raw.to_vec())
}

fn ec(
    session: &Session,
    curve: Curve,
    public: ObjectHandle,
    private: ObjectHandle,
) -> Result<KeyPair, Error> {
    let point = read(session, public, &[AttributeType::EcPoint])?;
    let point = uncompressed_point(curve, point.first().map_or(&[][..], |p| p.as_slice()))?;
    let value = read(session, private, &[AttributeType::Value])?;
    let value = value.first().map_or(&[][..], |v| v.as_slice());
    // CKA_VALUE is the scalar as a big-endian integer, so leading zero bytes
    // may be missing; SEC1 wants it at full length.
    let width = curve.field_len();
    if value.len() > width {
        return Err(Error::HsmOutput(
            "EC private value is longer than the curve",
        ));
    }
    let mut scalar = Zeroizing::new(vec![0u8; width]);
    scalar[width - value.len()..].copy_from_slice(value);
    // Curve parameters sit in the PKCS#8 AlgorithmIdentifier, so the inner
    // ECPrivateKey omits them (RFC 5915 §3, as OpenSSL writes it) and carries
    // the public key, which some parsers (ring) require.
    let key = sec1::EcPrivateKey {
        private_key: &scalar,
        parameters: None,
        public_key: Some(&point),
    };
    let inner = Zeroizing::new(key.to_der().map_err(encoding)?);
    let oid = curve.oid();
    let algorithm = AlgorithmIdentifier {
        oid: ID_EC_PUBLIC_KEY,
        parameters: Some(AnyRef::from(&oid)),
    };
    encode(algorithm, &point, &inner)
}

/// SPKI around `public` and PKCS#8 around the algorithm-specific private
/// key `inner`.
fn encode(
    algorithm: AlgorithmIdentifier<AnyRef<'_>>,
    public: &[u8],
    inner: &[u8],
) -> Result<KeyPair, Error> {
    let spki = SubjectPublicKeyInfo {
        algorithm,
        subject_public_key: BitStringRef::from_bytes(public).map_err(encoding)?,
    };
    let pkcs8 = PrivateKeyInfoRef::new(algorithm, OctetStringRef::new(inner).map_err(encoding)?);
    Ok(KeyPair {
        public_key_der: spki.to_der().map_err(encoding)?,
        private_key_der: Zeroizing::new(pkcs8.to_der().map_err(encoding)?),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn specs() {
        assert_eq!(
            PairSpec::from_proto(KeyPairSpec::Rsa3072 as i32),
            Some(PairSpec::Rsa { bits: 3072 })
        );
        assert_eq!(
            PairSpec::from_proto(KeyPairSpec::EcSecp256k1 as i32),
            Some(PairSpec::Ec(Curve::Secp256k1))
        );
        assert_eq!(PairSpec::from_proto(KeyPairSpec::Unspecified as i32), None);
        assert_eq!(PairSpec::from_proto(99), None);
        assert!(PairSpec::Rsa { bits: 2048 }.slow());
        assert!(!PairSpec::Ec(Curve::P521).slow());
    }

    #[test]
    fn ec_points_raw_or_der() {
        let mut raw = vec![0x04];
        raw.extend_from_slice(&[7; 64]);
        assert_eq!(uncompressed_point(Curve::P256, &raw).unwrap(), raw);
        let der = OctetStringRef::new(&raw).unwrap().to_der().unwrap();
        assert_eq!(uncompressed_point(Curve::P256, &der).unwrap(), raw);
        // P-521: a long-form DER length.
        let mut raw = vec![0x04];
        raw.extend_from_slice(&[9; 132]);
        let der = OctetStringRef::new(&raw).unwrap().to_der().unwrap();
        assert_eq!(uncompressed_point(Curve::P521, &der).unwrap(), raw);
        assert!(uncompressed_point(Curve::P384, &der).is_err());
        assert!(uncompressed_point(Curve::P256, &[0x02; 33]).is_err());
    }

    #[test]
    fn curve_oids_encode() {
        // CKA_EC_PARAMS for P-256: 06 08 2A 86 48 CE 3D 03 01 07.
        assert_eq!(
            Curve::P256.oid().to_der().unwrap(),
            [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07]
        );
    }
}
