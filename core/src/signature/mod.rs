//! cosign signature formats (legacy `.sig` tag and Sigstore bundle), signing and verification (owned by the signature work).
