//! Making a signature with Sigstore evidence, the way cosign 3 does:
//!
//! - **keyless**: a fresh P-256 key in memory, a Fulcio certificate for it
//!   (proof of possession over the identity token's subject), the
//!   signature, an RFC 3161 timestamp where the signing configuration names
//!   a timestamp authority, and a Rekor entry. The key is generated per
//!   signer and reused while its certificate has time left; it is never
//!   written anywhere and its `Debug` is redacted.
//! - **a key with its signature logged** (`--tlog-upload`): the same Rekor
//!   entry and timestamp for a signature by any [`Signer`] (a key file, a
//!   PKCS#11 token, Vault transit).
//!
//! [`SigstoreSigner::sign`] signs raw bytes ([`Payload::Message`]) or a DSSE
//! envelope ([`Payload::Dsse`], e.g. an in-toto statement), so the same call
//! serves image signatures in both formats and attestations. Before it
//! returns, what it made is verified by imgate's own verifier against the
//! same trusted root (the **self-check**): a certificate for another
//! identity, a log entry for another body, a timestamp from an untrusted
//! authority or outside the certificate's validity fail the signing there,
//! before anything is pushed.

use std::sync::Arc;

use base64::Engine as _;
use imgate_keys::{Signer, SigningKey};
use sha2::{Digest as _, Sha256};
use sigstore_verify::bundle::{BundleV03, VerificationMaterialV03};
use sigstore_verify::types::{
    DerCertificate, DsseEnvelope, DsseSignature, HashAlgorithm, KeyId, MessageDigest,
    MessageSignature, PayloadBytes, SignatureBytes, SignatureContent, TimestampToken,
    TransparencyLogEntry,
};

use super::fulcio::{request_certificate, SigningCertificate};
use super::rekor_upload::{pem, upload, Entry, Verifier};
use super::services::{ServiceClient, ServiceOptions};
use super::sign_error::{Service, SigningError};
use super::signing_config::{Endpoints, SigningConfig};
use super::token::IdentityToken;
use super::{
    verify_bundle_bytes, ArtifactInput, BundlePolicy, IdentityPolicy, TlogMode, TrustRoot,
};

/// A certificate with less time left than this is replaced before signing,
/// so the log entry and timestamp still fall inside its validity.
const CERTIFICATE_MARGIN_SECONDS: i64 = 120;

/// What to sign.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// These bytes, signed as they are (a simple-signing payload, a blob):
    /// a message-signature bundle, logged as `hashedrekord`.
    Message(&'a [u8]),
    /// A DSSE envelope over `payload` of type `payload_type` (an in-toto
    /// statement is `application/vnd.in-toto+json`): logged as `dsse`
    /// (Rekor v1) or as the `hashedrekord` of its PAE (Rekor v2).
    Dsse {
        /// The DSSE payload type.
        payload_type: &'a str,
        /// The payload bytes.
        payload: &'a [u8],
    },
}

/// A signature with its Sigstore evidence, in both shapes imgate writes.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The Sigstore bundle v0.3 (JSON): what `--format bundle` attaches.
    pub bundle: Vec<u8>,
    /// The pieces of cosign's legacy `.sig` layer annotations.
    pub legacy: LegacyEvidence,
}

/// cosign's legacy layer annotations for one signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyEvidence {
    /// `dev.cosignproject.cosign/signature`: base64 DER signature.
    pub signature_b64: String,
    /// `dev.sigstore.cosign/certificate`: the leaf, PEM (keyless).
    pub certificate_pem: Option<String>,
    /// `dev.sigstore.cosign/chain`: what Fulcio sent after the leaf, PEM.
    pub chain_pem: Option<String>,
    /// `dev.sigstore.cosign/bundle`: the Rekor entry with its SET (Rekor v1).
    pub rekor_bundle: Option<String>,
    /// `dev.sigstore.cosign/rfc3161timestamp`: the timestamp, as cosign writes it.
    pub rfc3161_timestamp: Option<String>,
}

/// The services of one signing run and the root that checks their work.
#[derive(Debug)]
pub struct SigningServices {
    config_name: String,
    endpoints: Endpoints,
    client: ServiceClient,
    root: Arc<TrustRoot>,
}

impl SigningServices {
    /// Pick the services from `config` (see [`SigningConfig`]): a Fulcio
    /// when `keyless`, a Rekor v1 log when `needs_set` (the legacy layout),
    /// the timestamp authority when there is one. Every URL is checked
    /// against `opts` (https, or an allowed plain-HTTP host) now, before any
    /// key is used. `root` verifies what the services return.
    pub fn new(
        config: &SigningConfig,
        keyless: bool,
        needs_set: bool,
        root: Arc<TrustRoot>,
        opts: ServiceOptions,
    ) -> Result<SigningServices, SigningError> {
        let endpoints = config.select(keyless, needs_set)?;
        let client = ServiceClient::new(opts)?;
        if let Some(url) = &endpoints.fulcio {
            client.check_url(Service::Fulcio, url)?;
        }
        client.check_url(Service::Rekor, &endpoints.rekor.0)?;
        if let Some(url) = &endpoints.tsa {
            client.check_url(Service::Tsa, url)?;
        }
        Ok(SigningServices {
            config_name: config.name().to_string(),
            endpoints,
            client,
            root,
        })
    }

    /// The services used, for logs: `(what, URL)`.
    pub fn describe(&self) -> Vec<(String, String)> {
        let mut out = vec![(
            format!("Rekor v{}", self.endpoints.rekor.1),
            self.endpoints.rekor.0.clone(),
        )];
        if let Some(url) = &self.endpoints.fulcio {
            out.insert(0, ("Fulcio".into(), url.clone()));
        }
        if let Some(url) = &self.endpoints.tsa {
            out.push(("timestamp authority".into(), url.clone()));
        }
        out
    }

    /// Find the identity token (see [`IdentityToken`] for where imgate
    /// looks), through this run's client (so GitHub Actions' endpoint obeys the same
    /// HTTPS rule and budget).
    pub async fn identity_token(
        &self,
        given: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<IdentityToken, SigningError> {
        super::token::find_identity_token(given, env, &self.client).await
    }
}

/// A fresh key and the certificate Fulcio issued for it.
struct Ephemeral {
    key: SigningKey,
    cert: SigningCertificate,
}

/// Who signs.
enum Who<'k> {
    Key(&'k dyn Signer),
    Keyless(Box<Keyless>),
}

/// A keyless signer's token, the identity its certificates must name, and
/// the current key and certificate.
struct Keyless {
    token: IdentityToken,
    expected: IdentityPolicy,
    current: tokio::sync::Mutex<Option<Arc<Ephemeral>>>,
}

/// Signs payloads and records them with the configured services.
pub struct SigstoreSigner<'k> {
    services: SigningServices,
    who: Who<'k>,
}

impl std::fmt::Debug for SigstoreSigner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = match &self.who {
            Who::Key(key) => key.name().to_string(),
            Who::Keyless(keyless) => format!("keyless ({})", keyless.token.origin()),
        };
        f.debug_struct("SigstoreSigner")
            .field("services", &self.services.describe())
            .field("who", &who)
            .finish_non_exhaustive()
    }
}

impl<'k> SigstoreSigner<'k> {
    /// A keyless signer for `token`. The certificate must name `expected`
    /// (default: the identity Fulcio derives from the token, see
    /// [`IdentityToken::expected_identity`]).
    pub fn keyless(
        services: SigningServices,
        token: IdentityToken,
        expected: Option<IdentityPolicy>,
    ) -> SigstoreSigner<'static> {
        let expected = expected.unwrap_or_else(|| token.expected_identity());
        SigstoreSigner {
            services,
            who: Who::Keyless(Box::new(Keyless {
                token,
                expected,
                current: tokio::sync::Mutex::new(None),
            })),
        }
    }

    /// A signer that signs with `key` and logs each signature.
    pub fn with_key(services: SigningServices, key: &'k dyn Signer) -> SigstoreSigner<'k> {
        SigstoreSigner {
            services,
            who: Who::Key(key),
        }
    }

    /// The identity keyless certificates must name (`None` for a key).
    pub fn expected_identity(&self) -> Option<&IdentityPolicy> {
        match &self.who {
            Who::Keyless(keyless) => Some(&keyless.expected),
            Who::Key(_) => None,
        }
    }

    /// Sign `payload`, timestamp it where configured, log it, and verify the
    /// result for `artifact` (the payload's bytes for a message; for an
    /// in-toto statement, the subject digest) before returning it.
    pub async fn sign(
        &self,
        payload: Payload<'_>,
        artifact: ArtifactInput<'_>,
    ) -> Result<Signed, SigningError> {
        let material = self.material().await?;
        let message = match payload {
            Payload::Message(bytes) => bytes.to_vec(),
            Payload::Dsse {
                payload_type,
                payload,
            } => sigstore_verify::types::pae(payload_type, payload),
        };
        let signature = material.sign(&message)?;
        let digest: [u8; 32] = Sha256::digest(&message).into();
        let (content, envelope) = match payload {
            Payload::Message(_) => (
                SignatureContent::MessageSignature(
                    MessageSignature::new(SignatureBytes::new(signature.clone()))
                        .with_message_digest(MessageDigest::new(
                            HashAlgorithm::Sha2256,
                            digest.to_vec().into(),
                        )),
                ),
                None,
            ),
            Payload::Dsse {
                payload_type,
                payload,
            } => {
                let envelope = DsseEnvelope::new(
                    payload_type,
                    PayloadBytes::new(payload.to_vec()),
                    DsseSignature::new(SignatureBytes::new(signature.clone()), KeyId::default()),
                );
                (
                    SignatureContent::DsseEnvelope(envelope.clone()),
                    Some(envelope),
                )
            }
        };
        let entry = match &envelope {
            None => Entry::Hashed {
                digest,
                signature: &signature,
            },
            Some(envelope) => Entry::Dsse {
                envelope,
                pae_digest: digest,
                signature: &signature,
            },
        };
        let endpoints = &self.services.endpoints;
        let client = &self.services.client;
        // The timestamp first, as cosign does, and checked at once: a
        // refused, untrusted or mistimed timestamp stops the signing before
        // anything reaches the public log.
        let timestamp = match &endpoints.tsa {
            Some(url) => {
                let answer = super::tsa::timestamp(client, url, &signature).await?;
                let window = material
                    .certificate()
                    .map(|cert| (cert.not_before, cert.not_after));
                super::tsa::check(url, &answer, &signature, &self.services.root, window)?;
                Some(answer)
            }
            None => None,
        };
        let (log_url, log_version) = &endpoints.rekor;
        let tlog = upload(client, (log_url, *log_version), entry, material.verifier()).await?;

        let mut bundle =
            BundleV03::new(material.bundle_material(), content).with_tlog_entry(tlog.clone());
        if let Some(ts) = &timestamp {
            bundle = bundle.with_rfc3161_timestamp(TimestampToken::new(ts.clone()));
        }
        let bundle = bundle
            .into_bundle()
            .to_json()
            .map_err(|err| SigningError::Config {
                name: "bundle".into(),
                reason: err.to_string(),
            })?;
        self.self_check(bundle.as_bytes(), artifact)?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let cert = material.certificate();
        Ok(Signed {
            bundle: bundle.into_bytes(),
            legacy: LegacyEvidence {
                signature_b64: b64.encode(&signature),
                certificate_pem: cert.map(|c| pem("CERTIFICATE", &c.leaf)),
                chain_pem: cert
                    .map(|c| c.chain.iter().map(|der| pem("CERTIFICATE", der)).collect()),
                rekor_bundle: rekor_annotation(&tlog),
                rfc3161_timestamp: timestamp.map(|ts| {
                    serde_json::json!({"SignedRFC3161Timestamp": b64.encode(ts)}).to_string()
                }),
            },
        })
    }

    /// What signs: the key, or (keyless) the current key and certificate,
    /// renewed when the certificate is about to expire.
    async fn material(&self) -> Result<Material<'k>, SigningError> {
        let keyless = match &self.who {
            Who::Key(key) => return Ok(Material::Key(*key)),
            Who::Keyless(keyless) => keyless,
        };
        let mut current = keyless.current.lock().await;
        let now = jiff::Timestamp::now().as_second();
        if let Some(eph) = current.as_ref() {
            if eph.cert.not_after - now > CERTIFICATE_MARGIN_SECONDS {
                return Ok(Material::Keyless(eph.clone()));
            }
        }
        let Some(fulcio) = &self.services.endpoints.fulcio else {
            return Err(SigningError::Config {
                name: self.services.config_name.clone(),
                reason: "no Fulcio was selected for keyless signing".into(),
            });
        };
        let key = SigningKey::generate().with_name("ephemeral key");
        let cert = request_certificate(
            &self.services.client,
            fulcio,
            &keyless.token,
            &key,
            &keyless.expected,
        )
        .await?;
        let eph = Arc::new(Ephemeral { key, cert });
        *current = Some(eph.clone());
        Ok(Material::Keyless(eph))
    }

    /// Verify the legacy `.sig` layer made of `payload` and `evidence` for
    /// the image `digest` (`sha256:…`) the way imgate reads it back, with a
    /// log entry required; what [`SigstoreSigner::sign`] checked was the
    /// bundle form of the same signature.
    pub fn check_legacy(
        &self,
        payload: &[u8],
        evidence: &LegacyEvidence,
        digest: &str,
    ) -> Result<(), SigningError> {
        let root = &self.services.root;
        let checked = match (&self.who, &evidence.certificate_pem) {
            (Who::Keyless(keyless), Some(cert)) => super::verify_legacy_keyless(
                &super::LegacyKeyless {
                    payload,
                    signature_b64: &evidence.signature_b64,
                    certificate_pem: cert,
                    chain_pem: evidence.chain_pem.as_deref(),
                    rekor_bundle: evidence.rekor_bundle.as_deref(),
                },
                digest,
                &keyless.expected,
                root,
            ),
            (Who::Key(key), None) => super::verify_legacy_key(
                payload,
                &evidence.signature_b64,
                evidence.rekor_bundle.as_deref(),
                (key.public_key().to_spki_der(), key.name()),
                TlogMode::Required,
                digest,
                root,
            ),
            _ => Err(super::SigstoreError::rejected(
                "the layer's certificate does not match how it was signed",
            )),
        };
        checked
            .map(|_| ())
            .map_err(|source| SigningError::SelfCheck {
                what: "the legacy .sig layer",
                source,
            })
    }

    /// Verify `bundle` as any verifier would, with the policy the signer
    /// stands for and a log entry required.
    fn self_check(&self, bundle: &[u8], artifact: ArtifactInput<'_>) -> Result<(), SigningError> {
        let policy = match &self.who {
            Who::Keyless(keyless) => BundlePolicy::Keyless(keyless.expected.clone()),
            Who::Key(key) => BundlePolicy::Key {
                spki_der: key.public_key().to_spki_der().to_vec(),
                name: key.name().to_string(),
                tlog: TlogMode::Required,
            },
        };
        let verified = verify_bundle_bytes(bundle, artifact, &policy, &self.services.root)
            .map_err(|source| SigningError::SelfCheck {
                what: "the Sigstore bundle",
                source,
            })?;
        if !verified.tlog_verified {
            return Err(SigningError::SelfCheck {
                what: "the Sigstore bundle",
                source: super::SigstoreError::rejected("the log entry was not verified"),
            });
        }
        Ok(())
    }
}

/// The key a signature is made with, and how verifiers learn of it.
enum Material<'k> {
    Key(&'k dyn Signer),
    Keyless(Arc<Ephemeral>),
}

impl Material<'_> {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SigningError> {
        match self {
            Material::Keyless(eph) => Ok(eph.key.sign(message)),
            Material::Key(key) => key
                .sign_message(message)
                .map_err(|source| SigningError::Key {
                    key: key.name().to_string(),
                    source,
                }),
        }
    }

    fn verifier(&self) -> Verifier {
        match self {
            Material::Keyless(eph) => Verifier::Certificate(eph.cert.leaf.clone()),
            Material::Key(key) => Verifier::Key(key.public_key().to_spki_der().to_vec()),
        }
    }

    fn bundle_material(&self) -> VerificationMaterialV03 {
        match self {
            Material::Keyless(eph) => {
                VerificationMaterialV03::Certificate(DerCertificate::new(eph.cert.leaf.clone()))
            }
            Material::Key(key) => VerificationMaterialV03::PublicKey {
                hint: key.public_key().hint(),
            },
        }
    }

    fn certificate(&self) -> Option<&SigningCertificate> {
        match self {
            Material::Keyless(eph) => Some(&eph.cert),
            Material::Key(_) => None,
        }
    }
}

/// cosign's `dev.sigstore.cosign/bundle` annotation for a Rekor v1 entry
/// with its SET; `None` for an entry without one (Rekor v2).
fn rekor_annotation(entry: &TransparencyLogEntry) -> Option<String> {
    let promise = entry.inclusion_promise.as_ref()?;
    let time = entry.integrated_time?;
    Some(
        serde_json::json!({
            "SignedEntryTimestamp": promise.signed_entry_timestamp.to_base64(),
            "Payload": {
                "body": entry.canonicalized_body.to_base64(),
                "integratedTime": time.as_second(),
                "logIndex": entry.log_index.as_i64(),
                "logID": hex::encode(entry.log_id.key_id.as_bytes()),
            },
        })
        .to_string(),
    )
}
