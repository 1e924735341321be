//! `imgate webhook certs`: a private CA and a serving certificate for the
//! webhook Service, written as files or as kustomize-ready manifests (a TLS
//! Secret and the `caBundle` patch for the webhook configurations).
//!
//! This is the self-managed path; clusters with cert-manager use its
//! Certificate and CA injection instead. Rotation: run again with `--force`
//! and update the Secret; the webhook reloads the files without a restart.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The webhook configuration objects' name (Mutating and Validating).
pub const WEBHOOK_CONFIGURATION: &str = "imgate";
/// The mutating webhook's name inside its configuration.
pub const MUTATE_WEBHOOK: &str = "mutate.imgate.dev";
/// The validating webhook's name inside its configuration.
pub const VALIDATE_WEBHOOK: &str = "validate.imgate.dev";
/// The Secret holding the serving certificate.
pub const TLS_SECRET: &str = "imgate-tls";

/// Errors generating or writing certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The options are unusable.
    #[error("invalid {field}: {detail}")]
    Invalid {
        /// The option at fault.
        field: &'static str,
        /// Why.
        detail: String,
    },
    /// rcgen refused to build a certificate.
    #[error("cannot generate the {what}")]
    Generate {
        /// `CA` or `serving certificate`.
        what: &'static str,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// A file to be written exists and `force` is off.
    #[error("{} exists (use --force to overwrite)", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// Writing failed.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct CertOptions {
    /// The webhook Service name.
    pub service: String,
    /// Its namespace.
    pub namespace: String,
    /// Validity of both certificates, in days.
    pub days: u32,
}

impl Default for CertOptions {
    fn default() -> Self {
        CertOptions {
            service: "imgate".into(),
            namespace: "imgate-system".into(),
            days: 365,
        }
    }
}

impl CertOptions {
    /// The names the serving certificate is valid for; the API server calls
    /// `SERVICE.NAMESPACE.svc`, the rest cover in-cluster clients and tools.
    pub fn dns_names(&self) -> Vec<String> {
        let (s, n) = (&self.service, &self.namespace);
        vec![
            format!("{s}.{n}.svc"),
            format!("{s}.{n}.svc.cluster.local"),
            format!("{s}.{n}"),
            s.clone(),
        ]
    }

    fn validate(&self) -> Result<(), CertError> {
        // DNS-1035 labels: what Kubernetes accepts for Service names, and
        // DNS-1123 for namespaces; both lower-case alphanumerics and '-'.
        for (field, value) in [("service", &self.service), ("namespace", &self.namespace)] {
            let ok = !value.is_empty()
                && value.len() <= 63
                && value
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !value.starts_with('-')
                && !value.ends_with('-');
            if !ok {
                return Err(CertError::Invalid {
                    field,
                    detail: format!(
                        "{value:?} is not a DNS label (lower-case letters, digits, '-')"
                    ),
                });
            }
        }
        if self.days == 0 || self.days > 3650 {
            return Err(CertError::Invalid {
                field: "days",
                detail: format!("{} is not between 1 and 3650", self.days),
            });
        }
        Ok(())
    }
}

/// A generated CA and serving certificate, PEM-encoded.
#[derive(Clone)]
pub struct GeneratedCerts {
    /// The CA certificate (the `caBundle`).
    pub ca_pem: String,
    /// The serving certificate (leaf only; clients trust the CA).
    pub cert_pem: String,
    /// The serving key (PKCS#8). Never printed.
    pub key_pem: String,
    /// The serving certificate's DNS names.
    pub dns_names: Vec<String>,
}

impl std::fmt::Debug for GeneratedCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedCerts")
            .field("dns_names", &self.dns_names)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Generates a P-256 CA and a serving certificate signed by it.
pub fn generate(opts: &CertOptions) -> Result<GeneratedCerts, CertError> {
    opts.validate()?;
    let now = time::OffsetDateTime::now_utc();
    // Backdate a little: nodes and the API server may run a bit behind.
    let not_before = now - time::Duration::minutes(5);
    let not_after = now + time::Duration::days(i64::from(opts.days));

    let ca_err = |source| CertError::Generate { what: "CA", source };
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(ca_err)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(ca_err)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("imgate webhook CA ({}.{})", opts.service, opts.namespace),
    );
    ca.distinguished_name = dn;
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_cert = ca.self_signed(&ca_key).map_err(ca_err)?;

    let leaf_err = |source| CertError::Generate {
        what: "serving certificate",
        source,
    };
    let dns_names = opts.dns_names();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(leaf_err)?;
    let mut leaf = CertificateParams::new(dns_names.clone()).map_err(leaf_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, dns_names[0].clone());
    leaf.distinguished_name = dn;
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).map_err(leaf_err)?;

    Ok(GeneratedCerts {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        dns_names,
    })
}

/// One file to write; `secret` files get mode 0600.
struct Output {
    name: &'static str,
    contents: String,
    secret: bool,
}

/// Writes `ca.crt`, `tls.crt` and `tls.key` (0600) into `dir`.
pub fn write_files(
    certs: &GeneratedCerts,
    dir: &Path,
    force: bool,
) -> Result<Vec<PathBuf>, CertError> {
    write_all(
        dir,
        force,
        vec![
            Output {
                name: "ca.crt",
                contents: certs.ca_pem.clone(),
                secret: false,
            },
            Output {
                name: "tls.crt",
                contents: certs.cert_pem.clone(),
                secret: false,
            },
            Output {
                name: "tls.key",
                contents: certs.key_pem.clone(),
                secret: true,
            },
        ],
    )
}

/// Writes a kustomize component into `dir`: `secret.yaml` (a
/// `kubernetes.io/tls` Secret with `ca.crt`, 0600 since it holds the key),
/// `cabundle-patch.yaml` (sets `caBundle` on both webhook configurations
/// named `imgate`) and `kustomization.yaml` listing them.
pub fn write_kustomize(
    certs: &GeneratedCerts,
    opts: &CertOptions,
    dir: &Path,
    force: bool,
) -> Result<Vec<PathBuf>, CertError> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let secret = format!(
        "# Generated by `imgate webhook certs`: the webhook's serving certificate.\n\
         # Holds a private key: keep this file out of version control (or seal it).\n\
         apiVersion: v1\n\
         kind: Secret\n\
         metadata:\n  name: {TLS_SECRET}\n  namespace: {ns}\n  \
         labels:\n    app.kubernetes.io/name: imgate\n\
         type: kubernetes.io/tls\n\
         data:\n  ca.crt: {ca}\n  tls.crt: {crt}\n  tls.key: {key}\n",
        ns = opts.namespace,
        ca = b64(&certs.ca_pem),
        crt = b64(&certs.cert_pem),
        key = b64(&certs.key_pem),
    );
    let bundle = b64(&certs.ca_pem);
    let patch = format!(
        "# Generated by `imgate webhook certs`: trust the generated CA for calls to the webhook.\n\
         apiVersion: admissionregistration.k8s.io/v1\n\
         kind: MutatingWebhookConfiguration\n\
         metadata:\n  name: {WEBHOOK_CONFIGURATION}\n\
         webhooks:\n  - name: {MUTATE_WEBHOOK}\n    clientConfig:\n      caBundle: {bundle}\n\
         ---\n\
         apiVersion: admissionregistration.k8s.io/v1\n\
         kind: ValidatingWebhookConfiguration\n\
         metadata:\n  name: {WEBHOOK_CONFIGURATION}\n\
         webhooks:\n  - name: {VALIDATE_WEBHOOK}\n    clientConfig:\n      caBundle: {bundle}\n"
    );
    let kustomization = "# Generated by `imgate webhook certs --format kustomize`.\n\
         # Use from an overlay: `components: [path/to/this/dir]`.\n\
         apiVersion: kustomize.config.k8s.io/v1alpha1\n\
         kind: Component\n\
         resources:\n  - secret.yaml\n\
         patches:\n  - path: cabundle-patch.yaml\n"
        .to_string();
    write_all(
        dir,
        force,
        vec![
            Output {
                name: "secret.yaml",
                contents: secret,
                secret: true,
            },
            Output {
                name: "cabundle-patch.yaml",
                contents: patch,
                secret: false,
            },
            Output {
                name: "kustomization.yaml",
                contents: kustomization,
                secret: false,
            },
        ],
    )
}

fn write_all(dir: &Path, force: bool, outputs: Vec<Output>) -> Result<Vec<PathBuf>, CertError> {
    // Check every target first, so a refusal leaves nothing half-written.
    if !force {
        for out in &outputs {
            let path = dir.join(out.name);
            if path.symlink_metadata().is_ok() {
                return Err(CertError::Exists { path });
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    for out in outputs {
        let path = dir.join(out.name);
        write_one(&path, out.contents.as_bytes(), out.secret).map_err(|source| {
            CertError::Write {
                path: path.clone(),
                source,
            }
        })?;
        written.push(path);
    }
    Ok(written)
}

/// Writes through a temp file and a rename, so a webhook watching the
/// directory never reads a half-written file; secret files are created 0600
/// (never world-readable, not even for an instant).
fn write_one(path: &Path, bytes: &[u8], secret: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let result = (|| {
        let mut file = options.open(&tmp)?;
        #[cfg(unix)]
        {
            // The mode above is filtered by the umask and ignored for an
            // existing file: set it explicitly.
            use std::os::unix::fs::PermissionsExt;
            let mode = if secret { 0o600 } else { 0o644 };
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn serving_certificate_chains_to_the_ca_for_the_service_name() {
        let opts = CertOptions::default();
        let certs = generate(&opts).unwrap();
        assert_eq!(certs.dns_names[0], "imgate.imgate-system.svc");
        assert!(certs
            .dns_names
            .contains(&"imgate.imgate-system.svc.cluster.local".to_string()));

        // Verify with rustls' own WebPKI verifier, as a client would.
        let ca = rustls_pemfile::certs(&mut certs.ca_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let leaf = rustls_pemfile::certs(&mut certs.cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            crate::server::tls::provider(),
        )
        .build()
        .unwrap();
        use rustls::client::danger::ServerCertVerifier;
        for name in &certs.dns_names {
            let server = rustls::pki_types::ServerName::try_from(name.clone()).unwrap();
            verifier
                .verify_server_cert(&leaf, &[], &server, &[], rustls::pki_types::UnixTime::now())
                .unwrap();
        }
        let other = rustls::pki_types::ServerName::try_from("evil.example").unwrap();
        assert!(verifier
            .verify_server_cert(&leaf, &[], &other, &[], rustls::pki_types::UnixTime::now())
            .is_err());
        assert!(!format!("{certs:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn files_are_private_and_never_overwritten_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let certs = generate(&CertOptions::default()).unwrap();
        let written = write_files(&certs, dir.path(), false).unwrap();
        assert_eq!(written.len(), 3);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("tls.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = generate(&CertOptions::default()).unwrap();
        let err = write_files(&again, dir.path(), false).unwrap_err();
        assert!(err.to_string().contains("exists"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("tls.crt")).unwrap(),
            certs.cert_pem
        );
        write_files(&again, dir.path(), true).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("tls.crt")).unwrap(),
            again.cert_pem
        );
        // The result loads as the webhook's serving certificate.
        crate::server::tls::ReloadingCert::load(
            &dir.path().join("tls.crt"),
            &dir.path().join("tls.key"),
        )
        .unwrap();
    }

    #[test]
    fn kustomize_output_names_the_secret_and_both_webhooks() {
        let dir = tempfile::tempdir().unwrap();
        let opts = CertOptions {
            service: "gate".into(),
            namespace: "sec".into(),
            days: 30,
        };
        let certs = generate(&opts).unwrap();
        write_kustomize(&certs, &opts, dir.path(), false).unwrap();
        let secret: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(dir.path().join("secret.yaml")).unwrap())
                .unwrap();
        assert_eq!(secret["type"], "kubernetes.io/tls");
        assert_eq!(secret["metadata"]["namespace"], "sec");
        let key = secret["data"]["tls.key"].as_str().unwrap();
        let key = base64::engine::general_purpose::STANDARD
            .decode(key)
            .unwrap();
        assert_eq!(key, certs.key_pem.as_bytes());
        let patch = std::fs::read_to_string(dir.path().join("cabundle-patch.yaml")).unwrap();
        let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&patch)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        assert_eq!(docs.len(), 2);
        let bundle = base64::engine::general_purpose::STANDARD.encode(&certs.ca_pem);
        for (doc, hook) in docs.iter().zip([MUTATE_WEBHOOK, VALIDATE_WEBHOOK]) {
            assert_eq!(doc["metadata"]["name"], "imgate");
            assert_eq!(doc["webhooks"][0]["name"], hook);
            assert_eq!(
                doc["webhooks"][0]["clientConfig"]["caBundle"],
                bundle.as_str()
            );
        }
    }

    #[test]
    fn bad_options_are_refused() {
        for opts in [
            CertOptions {
                service: "Bad_Name".into(),
                ..CertOptions::default()
            },
            CertOptions {
                days: 0,
                ..CertOptions::default()
            },
        ] {
            assert!(matches!(generate(&opts), Err(CertError::Invalid { .. })));
        }
    }
}
