//! Keys in the transit secrets engine of HashiCorp Vault and OpenBao,
//! named `hashivault://NAME` as in cosign, configured by the environment
//! cosign reads: `VAULT_ADDR`, `VAULT_TOKEN` (else `~/.vault-token`),
//! `TRANSIT_SECRET_ENGINE_PATH` (default `transit`), plus `VAULT_CACERT`
//! and `VAULT_NAMESPACE` as Vault's own CLI reads them.
//!
//! Endpoints (Vault API, transit): `GET /v1/MOUNT/keys/NAME` for the public
//! key of the newest version, `POST /v1/MOUNT/sign/NAME/sha2-256` with the
//! SHA-256 digest (`prehashed`) pinned to that version, and
//! `POST /v1/MOUNT/keys/NAME` with `type=ecdsa-p256` to create a key.
//!
//! The client is blocking (so this crate stays free of async); each request
//! runs on its own short-lived thread, because reqwest's blocking client
//! must not run on an async runtime's thread and the CLI calls signers from
//! one. Responses are read up to [`MAX_RESPONSE_LEN`]; the token is sent
//! only in `X-Vault-Token` and never printed. Plain `http://` is accepted
//! for loopback addresses only (a Vault dev server), never across a
//! network.

use std::io::Read as _;
use std::path::PathBuf;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::error::{KeyError, VaultError};
use crate::error_chain;
use crate::public::PublicKey;
use crate::reference::{validate_vault_key_name, HASHIVAULT_PREFIX};
use crate::signer::{finish_remote_signature, Signer};

/// Transit answers are a few kilobytes (one PEM per key version); 1 MiB
/// bounds what a broken or hostile server can make imgate buffer.
pub const MAX_RESPONSE_LEN: u64 = 1024 * 1024;
/// Bound on Vault's error text carried into a message.
const MAX_DETAIL_LEN: usize = 300;
/// The transit mount cosign assumes.
pub const DEFAULT_TRANSIT_MOUNT: &str = "transit";
/// The only key type imgate signs with.
const ECDSA_P256: &str = "ecdsa-p256";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where Vault is and how to talk to it.
pub struct VaultConfig {
    /// `VAULT_ADDR`, without a trailing slash.
    pub addr: String,
    /// `VAULT_TOKEN`.
    pub token: Zeroizing<String>,
    /// `TRANSIT_SECRET_ENGINE_PATH`, without surrounding slashes.
    pub mount: String,
    /// `VAULT_CACERT`: a PEM bundle trusted on top of the system roots.
    pub ca_file: Option<PathBuf>,
    /// `VAULT_NAMESPACE` (Vault Enterprise, HCP Vault, OpenBao namespaces).
    pub namespace: Option<String>,
}

impl std::fmt::Debug for VaultConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultConfig")
            .field("addr", &self.addr)
            .field("token", &"<redacted>")
            .field("mount", &self.mount)
            .field("ca_file", &self.ca_file)
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl VaultConfig {
    /// Reads the configuration from the process environment.
    pub fn from_env(key: &str) -> Result<VaultConfig, KeyError> {
        let home_token = || {
            let home = std::env::var_os("HOME")?;
            std::fs::read_to_string(PathBuf::from(home).join(".vault-token")).ok()
        };
        VaultConfig::from_lookup(key, &|name| std::env::var(name).ok(), &home_token)
    }

    /// Reads the configuration through `env` (tests pass their own), with
    /// `token_file` as the fallback for the token (`~/.vault-token`).
    pub fn from_lookup(
        key: &str,
        env: &dyn Fn(&str) -> Option<String>,
        token_file: &dyn Fn() -> Option<String>,
    ) -> Result<VaultConfig, KeyError> {
        let config_error = |detail: String| {
            KeyError::from(VaultError::Config {
                key: key.to_string(),
                detail,
            })
        };
        let non_empty = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let addr = non_empty("VAULT_ADDR")
            .ok_or_else(|| config_error("VAULT_ADDR is not set".to_string()))?;
        let addr = addr.trim().trim_end_matches('/').to_string();
        let url = reqwest::Url::parse(&addr)
            .map_err(|e| config_error(format!("VAULT_ADDR {addr:?} is not a URL: {e}")))?;
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&url) => {}
            "http" => {
                return Err(config_error(format!(
                    "VAULT_ADDR {addr} is plain http to another host; the token would cross \
                     the network in clear text (use https)"
                )))
            }
            other => {
                return Err(config_error(format!(
                    "VAULT_ADDR scheme {other:?} is not https"
                )))
            }
        }
        let token = non_empty("VAULT_TOKEN")
            .or_else(token_file)
            .map(|t| Zeroizing::new(t.trim().to_string()))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| KeyError::MissingSecret {
                key: key.to_string(),
                what: "Vault token",
                hint: "set VAULT_TOKEN (or log in with `vault login`, which writes ~/.vault-token)",
            })?;
        let mount = non_empty("TRANSIT_SECRET_ENGINE_PATH")
            .unwrap_or_else(|| DEFAULT_TRANSIT_MOUNT.to_string())
            .trim_matches('/')
            .to_string();
        if mount.is_empty()
            || mount.split('/').any(|seg| {
                seg.is_empty()
                    || seg == "."
                    || seg == ".."
                    || !seg
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            })
        {
            return Err(config_error(format!(
                "TRANSIT_SECRET_ENGINE_PATH {mount:?} is not a mount path"
            )));
        }
        Ok(VaultConfig {
            addr,
            token,
            mount,
            ca_file: non_empty("VAULT_CACERT").map(PathBuf::from),
            namespace: non_empty("VAULT_NAMESPACE"),
        })
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A P-256 key in Vault/OpenBao transit, pinned to the version whose public
/// key was read, so every signature matches the key printed to verifiers.
pub struct VaultSigner {
    client: Client,
    key_name: String,
    version: u64,
    public: PublicKey,
    name: String,
}

impl std::fmt::Debug for VaultSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultSigner")
            .field("key", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// `hashivault://NAME` for a valid transit key name, the name it is known by.
fn reference_name(key_name: &str) -> Result<String, KeyError> {
    let name = format!("{HASHIVAULT_PREFIX}{key_name}");
    validate_vault_key_name(key_name).map_err(|detail| KeyError::Malformed {
        key: name.clone(),
        detail,
    })?;
    Ok(name)
}

impl VaultSigner {
    /// Reads the newest version of transit key `key_name` (which must be
    /// `ecdsa-p256`).
    ///
    /// ```no_run
    /// use imgate_keys::vault::{VaultConfig, VaultSigner};
    /// let config = VaultConfig::from_env("hashivault://release").unwrap();
    /// let signer = VaultSigner::open(config, "release").unwrap();
    /// ```
    pub fn open(config: VaultConfig, key_name: &str) -> Result<VaultSigner, KeyError> {
        let name = reference_name(key_name)?;
        let client = Client {
            config,
            key: name.clone(),
        };
        let (version, public) = client.read_public_key(key_name)?;
        Ok(VaultSigner {
            client,
            key_name: key_name.to_string(),
            version,
            public,
            name,
        })
    }

    /// Creates transit key `key_name` as `cosign generate-key-pair --kms
    /// hashivault://NAME` does (type `ecdsa-p256`; an existing key is left
    /// as it is) and returns a signer for it.
    pub fn create(config: VaultConfig, key_name: &str) -> Result<VaultSigner, KeyError> {
        let name = reference_name(key_name)?;
        let client = Client { config, key: name };
        client.call(
            reqwest::Method::POST,
            &format!("keys/{key_name}"),
            Some(json!({ "type": ECDSA_P256 })),
            "creating the key",
        )?;
        VaultSigner::open(client.config, key_name)
    }

    /// The key version signatures are made with (the newest when opened).
    pub fn version(&self) -> u64 {
        self.version
    }
}

impl Signer for VaultSigner {
    fn name(&self) -> &str {
        &self.name
    }

    fn public_key(&self) -> PublicKey {
        self.public.clone()
    }

    fn sign_message(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        let digest = Sha256::digest(msg);
        let body = json!({
            "input": STANDARD.encode(digest),
            "prehashed": true,
            "hash_algorithm": "sha2-256",
            "key_version": self.version,
            "marshaling_algorithm": "asn1",
        });
        let answer = self.client.call(
            reqwest::Method::POST,
            &format!("sign/{}/sha2-256", self.key_name),
            Some(body),
            "signing",
        )?;
        let signature = answer
            .pointer("/data/signature")
            .and_then(Value::as_str)
            .ok_or_else(|| self.bad_answer("the sign answer has no data.signature"))?;
        let der = decode_vault_signature(signature, self.version)
            .map_err(|detail| self.bad_answer(&detail))?;
        finish_remote_signature(&self.public, msg, &der)
    }
}

impl VaultSigner {
    fn bad_answer(&self, detail: &str) -> KeyError {
        KeyError::RemoteSignature {
            key: self.name.clone(),
            detail: detail.to_string(),
        }
    }
}

/// Decodes `vault:vN:BASE64` and checks `N` is the version asked for.
fn decode_vault_signature(text: &str, version: u64) -> Result<Vec<u8>, String> {
    let mut parts = text.splitn(3, ':');
    let (Some("vault"), Some(v), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("the signature is not in Vault's vault:vN:... form".to_string());
    };
    let got = v
        .strip_prefix('v')
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| format!("the signature's version {v:?} is not vN"))?;
    if got != version {
        return Err(format!(
            "Vault signed with key version {got}, not version {version} whose public key was read"
        ));
    }
    STANDARD
        .decode(b64)
        .map_err(|e| format!("the signature is not base64: {e}"))
}

/// One Vault server and the key being used, for messages.
struct Client {
    config: VaultConfig,
    key: String,
}

impl Client {
    fn read_public_key(&self, key_name: &str) -> Result<(u64, PublicKey), KeyError> {
        let answer = self.call(
            reqwest::Method::GET,
            &format!("keys/{key_name}"),
            None,
            "reading the key",
        )?;
        let malformed = |detail: String| KeyError::Malformed {
            key: self.key.clone(),
            detail,
        };
        let data = answer
            .get("data")
            .ok_or_else(|| malformed("Vault's key answer has no data".to_string()))?;
        let key_type = data
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        if key_type != ECDSA_P256 {
            return Err(KeyError::UnsupportedKey {
                key: self.key.clone(),
                detail: format!(
                    "a transit key of type {key_type}; imgate signs with ecdsa-p256 keys"
                ),
            });
        }
        let version = data
            .get("latest_version")
            .and_then(Value::as_u64)
            .ok_or_else(|| malformed("Vault's key answer has no latest_version".to_string()))?;
        let pem = data
            .get("keys")
            .and_then(|keys| keys.get(version.to_string()))
            .and_then(|v| v.get("public_key"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                malformed(format!(
                    "Vault's key answer has no public key for version {version}"
                ))
            })?;
        let public = PublicKey::from_pem(pem.as_bytes(), &self.key)?;
        Ok((version, public))
    }

    /// One request to `/v1/MOUNT/PATH`, on its own thread; returns the JSON
    /// body (`null` for 204).
    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        operation: &str,
    ) -> Result<Value, KeyError> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| self.call_blocking(method, path, body, operation))
                .join()
                .unwrap_or_else(|_| {
                    Err(KeyError::from(VaultError::Config {
                        key: self.key.clone(),
                        detail: "the Vault request thread panicked".to_string(),
                    }))
                })
        })
    }

    fn call_blocking(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        operation: &str,
    ) -> Result<Value, KeyError> {
        let config = &self.config;
        let unreachable = |detail: String| {
            KeyError::from(VaultError::Unreachable {
                key: self.key.clone(),
                addr: config.addr.clone(),
                detail,
            })
        };
        let http = self.http_client()?;
        let url = format!("{}/v1/{}/{path}", config.addr, config.mount);
        let mut request = http
            .request(method, &url)
            .header("X-Vault-Token", config.token.as_str())
            .header("X-Vault-Request", "true");
        if let Some(namespace) = &config.namespace {
            request = request.header("X-Vault-Namespace", namespace);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().map_err(|e| unreachable(error_chain(&e)))?;
        let status = response.status();
        let mut bytes = Vec::new();
        response
            .take(MAX_RESPONSE_LEN + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| unreachable(format!("reading the answer: {e}")))?;
        if bytes.len() as u64 > MAX_RESPONSE_LEN {
            return Err(unreachable(format!(
                "answer larger than {MAX_RESPONSE_LEN} bytes"
            )));
        }
        let json: Value = if bytes.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(_) if !status.is_success() => Value::Null,
                Err(e) => {
                    return Err(KeyError::from(VaultError::Refused {
                        key: self.key.clone(),
                        addr: config.addr.clone(),
                        operation: operation.to_string(),
                        status: status.as_u16(),
                        detail: format!("the answer is not JSON: {e}"),
                    }))
                }
            }
        };
        if status.is_success() {
            return Ok(json);
        }
        let errors = vault_errors(&json);
        let route_missing = errors.contains("no handler for route");
        match status.as_u16() {
            403 => Err(KeyError::from(VaultError::Denied {
                key: self.key.clone(),
                addr: config.addr.clone(),
                operation: operation.to_string(),
                path: format!("{}/{path}", config.mount),
            })),
            404 if route_missing => Err(self.mount_missing()),
            404 => Err(self.key_missing()),
            400 if errors.contains("key not found") => Err(self.key_missing()),
            code => Err(KeyError::from(VaultError::Refused {
                key: self.key.clone(),
                addr: config.addr.clone(),
                operation: operation.to_string(),
                status: code,
                detail: if errors.is_empty() {
                    "no error message".to_string()
                } else {
                    errors
                },
            })),
        }
    }

    fn key_missing(&self) -> KeyError {
        KeyError::from(VaultError::KeyNotFound {
            key: self.key.clone(),
            name: self
                .key
                .strip_prefix(HASHIVAULT_PREFIX)
                .unwrap_or(&self.key)
                .to_string(),
            mount: self.config.mount.clone(),
            addr: self.config.addr.clone(),
        })
    }

    fn mount_missing(&self) -> KeyError {
        KeyError::from(VaultError::MountNotFound {
            key: self.key.clone(),
            mount: self.config.mount.clone(),
            addr: self.config.addr.clone(),
        })
    }

    fn http_client(&self) -> Result<reqwest::blocking::Client, KeyError> {
        let config_error = |detail: String| {
            KeyError::from(VaultError::Config {
                key: self.key.clone(),
                detail,
            })
        };
        let mut builder = reqwest::blocking::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // A redirect would carry the token to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .https_only(false);
        if let Some(ca) = &self.config.ca_file {
            let pem = std::fs::read(ca).map_err(|e| {
                config_error(format!("cannot read VAULT_CACERT {}: {e}", ca.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                config_error(format!(
                    "VAULT_CACERT {} is not a PEM bundle: {e}",
                    ca.display()
                ))
            })?;
            if certs.is_empty() {
                return Err(config_error(format!(
                    "VAULT_CACERT {} holds no certificate",
                    ca.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        builder.build().map_err(|e| {
            config_error(format!(
                "cannot build the HTTPS client: {}",
                error_chain(&e)
            ))
        })
    }
}

/// Vault's `{"errors":[...]}`, joined and bounded.
fn vault_errors(json: &Value) -> String {
    let mut text = json
        .get("errors")
        .and_then(Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default();
    if text.len() > MAX_DETAIL_LEN {
        let mut end = MAX_DETAIL_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text.replace(['\n', '\r'], " ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<VaultConfig, KeyError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        VaultConfig::from_lookup("hashivault://k", &|name| map.get(name).cloned(), &|| None)
    }

    #[test]
    fn configuration_comes_from_cosigns_variables() {
        let c = config(&[
            ("VAULT_ADDR", "https://vault.example:8200/"),
            ("VAULT_TOKEN", "s.secret"),
            ("TRANSIT_SECRET_ENGINE_PATH", "/ci/transit/"),
        ])
        .unwrap();
        assert_eq!(c.addr, "https://vault.example:8200");
        assert_eq!(c.mount, "ci/transit");
        assert!(!format!("{c:?}").contains("s.secret"));
        let c = config(&[
            ("VAULT_ADDR", "http://127.0.0.1:8200"),
            ("VAULT_TOKEN", "t"),
        ])
        .unwrap();
        assert_eq!(c.mount, DEFAULT_TRANSIT_MOUNT);
    }

    #[test]
    fn bad_configuration_is_named() {
        let err = config(&[("VAULT_TOKEN", "t")]).unwrap_err().to_string();
        assert!(err.contains("VAULT_ADDR is not set"), "{err}");
        let err = config(&[("VAULT_ADDR", "https://v:8200")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("VAULT_TOKEN"), "{err}");
        let err = config(&[
            ("VAULT_ADDR", "http://vault.example:8200"),
            ("VAULT_TOKEN", "t"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("clear text"), "{err}");
        let err = config(&[
            ("VAULT_ADDR", "https://v"),
            ("VAULT_TOKEN", "t"),
            ("TRANSIT_SECRET_ENGINE_PATH", "a/../sys"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("TRANSIT_SECRET_ENGINE_PATH"), "{err}");
    }

    #[test]
    fn vault_signatures_decode_and_pin_the_version() {
        assert_eq!(
            decode_vault_signature("vault:v2:AAEC", 2).unwrap(),
            vec![0, 1, 2]
        );
        assert!(decode_vault_signature("vault:v1:AAEC", 2)
            .unwrap_err()
            .contains("version 1"));
        assert!(decode_vault_signature("AAEC", 1).is_err());
        assert!(decode_vault_signature("vault:vx:AAEC", 1).is_err());
        assert!(decode_vault_signature("vault:v1:!!", 1).is_err());
    }

    #[test]
    fn vault_error_lists_are_joined_and_bounded() {
        let json = json!({"errors": ["one", "two\nlines"]});
        assert_eq!(vault_errors(&json), "one; two lines");
        let long = json!({"errors": ["x".repeat(5000)]});
        assert!(vault_errors(&long).len() <= MAX_DETAIL_LEN + 3);
        assert_eq!(vault_errors(&json!({})), "");
    }
}
