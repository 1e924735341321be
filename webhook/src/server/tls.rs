//! The webhook's TLS identity and whom it lets in: the serving certificate,
//! loaded from PEM files (a mounted Secret, written by cert-manager or
//! `imgate webhook certs`), and optionally the client CA whose
//! certificates a client must present (`--client-ca`: the API server's
//! kubeconfig for the webhook). Both are reloaded when their files change,
//! without a restart.
//!
//! The certificate lives behind a [`ResolvesServerCert`] and the client CA
//! behind a [`ClientCertVerifier`], so every new TLS handshake picks up the
//! current ones while connections already open keep theirs. A rotation that
//! leaves the files broken (half-written, key and certificate that do not
//! match, a CA file without a certificate) keeps the old ones in force: an
//! admission webhook that stops answering blocks the whole cluster.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use imgate_core::Digest;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};

/// Errors loading the serving certificate. Each names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no PEM `CERTIFICATE` block.
    #[error("no PEM certificate in {}", path.display())]
    NoCertificate {
        /// The certificate file.
        path: PathBuf,
    },
    /// The file holds no PEM private key (PKCS#8, SEC1 or PKCS#1).
    #[error("no PEM private key in {}", path.display())]
    NoKey {
        /// The key file.
        path: PathBuf,
    },
    /// The PEM text is malformed.
    #[error("malformed PEM in {}: {detail}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        detail: String,
    },
    /// The key is unusable or does not belong to the certificate.
    #[error("certificate {} and key {} are unusable together: {detail}", cert.display(), key.display())]
    Unusable {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said (unsupported key type, key mismatch, bad certificate).
        detail: String,
    },
    /// The client CA file holds no usable CA certificate.
    #[error("client CA {} is unusable: {detail}", path.display())]
    ClientCa {
        /// The CA file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The TLS configuration cannot be built.
    #[error("tls configuration")]
    Config(#[source] rustls::Error),
}

/// The crypto provider of the whole webhook: ring, and only ring (one TLS
/// provider in the dependency tree, see `deny.toml`).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and key read from files (the fingerprint that
/// notices their changes is kept beside it, in the reloader's state).
struct Loaded {
    key: Arc<CertifiedKey>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Content fingerprint of both files, so a ConfigMap/Secret update (which
/// swaps a symlink and may keep mtimes) is noticed, and an unchanged file
/// touched by a sync is not reloaded.
fn fingerprint(cert: &[u8], key: &[u8]) -> Digest {
    let mut both = Vec::with_capacity(cert.len() + key.len() + 1);
    both.extend_from_slice(cert);
    both.push(0);
    both.extend_from_slice(key);
    Digest::sha256(&both)
}

fn parse(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<Loaded, TlsError> {
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|err| TlsError::Pem {
            path: cert_path.to_path_buf(),
            detail: err.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_path_buf(),
        });
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|err| TlsError::Pem {
            path: key_path.to_path_buf(),
            detail: err.to_string(),
        })?
        .ok_or_else(|| TlsError::NoKey {
            path: key_path.to_path_buf(),
        })?;
    let unusable = |err: rustls::Error| TlsError::Unusable {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
        detail: err.to_string(),
    };
    let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(unusable)?;
    // from_der tolerates "cannot tell" for key types without a public key
    // accessor; parse the certificate anyway so garbage DER is refused here
    // and not at the first handshake.
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(err) => return Err(unusable(err)),
    }
    Ok(Loaded {
        key: Arc::new(certified),
    })
}

/// A verifier requiring a client certificate that chains to a CA in
/// `ca_pem` (one or more PEM certificates, so a rotation can trust the old
/// and the new CA at once).
fn parse_client_ca(path: &Path, ca_pem: &[u8]) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let unusable = |detail: String| TlsError::ClientCa {
        path: path.to_path_buf(),
        detail,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        let cert = cert.map_err(|err| TlsError::Pem {
            path: path.to_path_buf(),
            detail: err.to_string(),
        })?;
        roots
            .add(cert)
            .map_err(|err| unusable(format!("a certificate is not a usable CA: {err}")))?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|err| unusable(err.to_string()))
}

/// The client CA, reloaded from its file on demand (see the module docs).
#[derive(Debug)]
struct ClientCa {
    path: PathBuf,
    current: RwLock<Arc<dyn ClientCertVerifier>>,
    /// Fingerprint of the file last looked at (loaded or refused).
    seen: Mutex<Digest>,
}

impl ClientCa {
    fn load(path: &Path) -> Result<Self, TlsError> {
        let pem = read(path)?;
        Ok(ClientCa {
            path: path.to_path_buf(),
            current: RwLock::new(parse_client_ca(path, &pem)?),
            seen: Mutex::new(Digest::sha256(&pem)),
        })
    }

    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn reload(&self, force: bool) -> Reload {
        let read = read(&self.path);
        let print = match &read {
            Ok(pem) => Digest::sha256(pem),
            Err(_) => Digest::sha256(b"imgate: unreadable client CA file"),
        };
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if *seen == print && !force {
                return Reload::Unchanged;
            }
            *seen = print;
        }
        match read.and_then(|pem| parse_client_ca(&self.path, &pem)) {
            Ok(verifier) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = verifier;
                Reload::Reloaded
            }
            Err(err) => Reload::Failed(imgate_core::error_chain(&err)),
        }
    }
}

/// Delegates every check to the current client CA; each handshake takes
/// the verifier in force when it runs.
impl ClientCertVerifier for ClientCa {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The hints would have to outlive a reload; they are optional, and
        // the API server sends its one certificate whatever they say.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}

/// The outcome of one reload check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The files did not change.
    Unchanged,
    /// New files were loaded and are served to new connections.
    Reloaded,
    /// The files changed but are broken; the old certificate keeps serving.
    /// Reported once per broken content, not at every poll.
    Failed(String),
}

/// The serving certificate and the client CA, reloaded from their files
/// on demand.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// Fingerprint of the files last looked at (loaded or refused).
    seen: Mutex<Digest>,
    client_ca: Option<Arc<ClientCa>>,
}

impl ReloadingCert {
    /// Loads the certificate chain and key; fails naming the file at fault.
    #[cfg(test)]
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, TlsError> {
        Self::load_with_client_ca(cert_path, key_path, None)
    }

    /// Loads the certificate chain and key, and the client CA when given:
    /// then every client must present a certificate it signed. Fails
    /// naming the file at fault.
    pub fn load_with_client_ca(
        cert_path: &Path,
        key_path: &Path,
        client_ca: Option<&Path>,
    ) -> Result<Arc<Self>, TlsError> {
        let cert_pem = read(cert_path)?;
        let key_pem = read(key_path)?;
        let loaded = parse(cert_path, &cert_pem, key_path, &key_pem)?;
        let client_ca = client_ca.map(ClientCa::load).transpose()?.map(Arc::new);
        Ok(Arc::new(ReloadingCert {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new(loaded.key),
            seen: Mutex::new(fingerprint(&cert_pem, &key_pem)),
            client_ca,
        }))
    }

    /// Whether clients must present a certificate the client CA signed.
    pub fn requires_client_cert(&self) -> bool {
        self.client_ca.is_some()
    }

    /// The certificate file.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The certificate served to new connections.
    pub fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            // A poisoned lock only means a writer panicked mid-swap of an
            // Arc, which leaves the old value intact: keep serving it.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the files; swaps the certificate, and the client CA, where
    /// they changed and are valid. `force` reloads even when the contents
    /// look unchanged (SIGHUP). A failure of either is reported (the other
    /// may still have been swapped).
    pub fn reload(&self, force: bool) -> Reload {
        let serving = self.reload_serving(force);
        let Some(client_ca) = &self.client_ca else {
            return serving;
        };
        match (serving, client_ca.reload(force)) {
            (Reload::Failed(a), Reload::Failed(b)) => Reload::Failed(format!("{a}; {b}")),
            (Reload::Failed(error), _) | (_, Reload::Failed(error)) => Reload::Failed(error),
            (Reload::Reloaded, _) | (_, Reload::Reloaded) => Reload::Reloaded,
            (Reload::Unchanged, Reload::Unchanged) => Reload::Unchanged,
        }
    }

    fn reload_serving(&self, force: bool) -> Reload {
        let (cert_pem, key_pem) = match (read(&self.cert_path), read(&self.key_path)) {
            (Ok(c), Ok(k)) => (c, k),
            (Err(err), _) | (_, Err(err)) => {
                // A missing file mid-rotation is reported once per poll
                // streak: remember an impossible fingerprint so the next
                // good read counts as a change.
                let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
                let marker = Digest::sha256(b"imgate: unreadable certificate files");
                if *seen == marker && !force {
                    return Reload::Unchanged;
                }
                *seen = marker;
                return Reload::Failed(imgate_core::error_chain(&err));
            }
        };
        let print = fingerprint(&cert_pem, &key_pem);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if *seen == print && !force {
                return Reload::Unchanged;
            }
            *seen = print;
        }
        match parse(&self.cert_path, &cert_pem, &self.key_path, &key_pem) {
            Ok(loaded) => {
                let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
                *current = loaded.key;
                Reload::Reloaded
            }
            Err(err) => Reload::Failed(imgate_core::error_chain(&err)),
        }
    }

    /// A rustls server configuration serving this certificate (h2 and
    /// HTTP/1.1 by ALPN), requiring a client certificate the client CA
    /// signed when there is one.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?;
        let builder = match &self.client_ca {
            Some(client_ca) => builder.with_client_cert_verifier(client_ca.clone()),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn write(dir: &Path, cert: &str, key: &str) -> (PathBuf, PathBuf) {
        let c = dir.join("tls.crt");
        let k = dir.join("tls.key");
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        (c, k)
    }

    #[test]
    fn loads_and_reloads_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed("a.example");
        let (c, k) = write(dir.path(), &cert, &key);
        let tls = ReloadingCert::load(&c, &k).unwrap();
        let first = tls.current();
        assert_eq!(tls.reload(false), Reload::Unchanged);
        assert!(Arc::ptr_eq(&first, &tls.current()));

        let (cert2, key2) = self_signed("b.example");
        write(dir.path(), &cert2, &key2);
        assert_eq!(tls.reload(false), Reload::Reloaded);
        assert_ne!(first.cert[0], tls.current().cert[0]);
        assert!(tls.server_config().is_ok());
    }

    #[test]
    fn broken_rotation_keeps_the_old_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed("a.example");
        let (c, k) = write(dir.path(), &cert, &key);
        let tls = ReloadingCert::load(&c, &k).unwrap();
        let before = tls.current().cert[0].clone();

        // A key that does not belong to the certificate.
        let (_, other_key) = self_signed("b.example");
        write(dir.path(), &cert, &other_key);
        let Reload::Failed(msg) = tls.reload(false) else {
            panic!("mismatched key accepted")
        };
        assert!(msg.contains("tls.key"), "{msg}");
        assert_eq!(tls.current().cert[0], before);
        // Reported once, not at every poll.
        assert_eq!(tls.reload(false), Reload::Unchanged);

        // Garbage, then a missing file.
        write(dir.path(), "not pem", &key);
        assert!(matches!(tls.reload(false), Reload::Failed(_)));
        std::fs::remove_file(&c).unwrap();
        assert!(matches!(tls.reload(false), Reload::Failed(_)));
        assert_eq!(tls.reload(false), Reload::Unchanged);
        assert_eq!(tls.current().cert[0], before);

        // Fixed again: reloads.
        write(dir.path(), &cert, &key);
        assert_eq!(tls.reload(false), Reload::Reloaded);
    }

    fn ca_pem(name: &str) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn a_client_ca_requires_client_certificates_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed("a.example");
        let (c, k) = write(dir.path(), &cert, &key);
        assert!(!ReloadingCert::load(&c, &k).unwrap().requires_client_cert());

        let ca = dir.path().join("client-ca.crt");
        std::fs::write(&ca, ca_pem("client CA")).unwrap();
        let tls = ReloadingCert::load_with_client_ca(&c, &k, Some(&ca)).unwrap();
        assert!(tls.requires_client_cert());
        assert!(tls.server_config().is_ok());
        let hints = |tls: &ReloadingCert| tls.client_ca.as_ref().unwrap().current();
        let first = hints(&tls);
        assert_eq!(tls.reload(false), Reload::Unchanged);

        // Two CAs (a rotation in progress): reloaded.
        std::fs::write(&ca, ca_pem("old") + &ca_pem("new")).unwrap();
        assert_eq!(tls.reload(false), Reload::Reloaded);
        assert!(!Arc::ptr_eq(&first, &hints(&tls)));

        // A file without a certificate keeps the previous CAs, and says so
        // once, naming the file.
        let before = hints(&tls);
        std::fs::write(&ca, "not a certificate").unwrap();
        let Reload::Failed(msg) = tls.reload(false) else {
            panic!("an empty client CA accepted")
        };
        assert!(msg.contains("client-ca.crt"), "{msg}");
        assert_eq!(tls.reload(false), Reload::Unchanged);
        assert!(Arc::ptr_eq(&before, &hints(&tls)));
    }

    #[test]
    fn an_unusable_client_ca_fails_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed("a.example");
        let (c, k) = write(dir.path(), &cert, &key);
        let ca = dir.path().join("client-ca.crt");
        std::fs::write(&ca, "").unwrap();
        let err = ReloadingCert::load_with_client_ca(&c, &k, Some(&ca)).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate in"), "{err}");
        assert!(err.to_string().contains("client-ca.crt"), "{err}");
        let missing = dir.path().join("nope.crt");
        let err = ReloadingCert::load_with_client_ca(&c, &k, Some(&missing)).unwrap_err();
        assert!(err.to_string().contains("nope.crt"), "{err}");
    }

    #[test]
    fn startup_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed("a.example");
        let (c, k) = write(dir.path(), &cert, "");
        let err = ReloadingCert::load(&c, &k).unwrap_err();
        assert!(err.to_string().contains("no PEM private key in"), "{err}");
        assert!(err.to_string().contains("tls.key"), "{err}");

        write(dir.path(), "", &key);
        let err = ReloadingCert::load(&c, &k).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate in"), "{err}");

        let missing = dir.path().join("nope.crt");
        let err = ReloadingCert::load(&missing, &k).unwrap_err();
        assert!(err.to_string().contains("nope.crt"), "{err}");
        let _ = cert;
    }
}
