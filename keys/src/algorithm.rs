//! Which key algorithms imgate accepts (ECDSA P-256 only, as cosign's
//! default) and friendly names for the ones it refuses, so an RSA or
//! Ed25519 key gets "unsupported key …: RSA" rather than a DER error.

use pkcs8::spki::AlgorithmIdentifierRef;
use pkcs8::ObjectIdentifier;

/// id-ecPublicKey (RFC 5480).
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// secp256r1 / prime256v1 / NIST P-256.
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");

const KNOWN: &[(&str, &str)] = &[
    ("1.2.840.113549.1.1.1", "RSA"),
    ("1.2.840.113549.1.1.10", "RSA-PSS"),
    ("1.3.101.112", "Ed25519"),
    ("1.3.101.113", "Ed448"),
    ("1.2.840.10040.4.1", "DSA"),
    ("1.3.132.0.34", "ECDSA P-384"),
    ("1.3.132.0.35", "ECDSA P-521"),
    ("1.3.132.0.10", "ECDSA secp256k1"),
];

fn describe(oid: &ObjectIdentifier) -> String {
    let dotted = oid.to_string();
    KNOWN
        .iter()
        .find(|(known, _)| *known == dotted)
        .map(|(_, name)| (*name).to_string())
        .unwrap_or_else(|| format!("algorithm {dotted}"))
}

/// `Ok` for ECDSA on P-256; otherwise a description of what the key is,
/// for `KeyError::UnsupportedKey`.
pub(crate) fn require_p256(alg: &AlgorithmIdentifierRef<'_>) -> Result<(), String> {
    if alg.oid != EC_PUBLIC_KEY {
        return Err(format!(
            "{} keys are not supported; imgate uses ECDSA P-256 keys",
            describe(&alg.oid)
        ));
    }
    match alg.parameters_oid() {
        Ok(curve) if curve == P256 => Ok(()),
        Ok(curve) => Err(format!(
            "{} keys are not supported; imgate uses ECDSA P-256 keys",
            describe(&curve)
        )),
        Err(_) => Err("elliptic-curve key without a named curve".to_string()),
    }
}
