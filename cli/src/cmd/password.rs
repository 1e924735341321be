//! Passwords for private keys: IMGATE_PASSWORD, else COSIGN_PASSWORD, else a terminal prompt (owned by the keys work).
