//! imgate-keys: ECDSA P-256 key pairs in cosign's file formats; signing and
//! verifying bytes. No network, no async.
