//! Building the HTTP clients: rustls (ring) trusting the system roots plus
//! the extra CA bundles the operator names, one client per distinct trust set.
//!
//! The system certificate store is read on the first certificate to check,
//! not when a client is built, and once per process (every client shares
//! it): a CLI run against a plain-HTTP registry never reads it, and the
//! webhook reads it once however many clients it builds. When the store
//! cannot be read or holds nothing usable, the operator's CA files are still
//! trusted and every other certificate is refused with an error saying why.
//!
//! Each CA file is parsed when the client is built, certificate by
//! certificate, so a bad file is a `Config` error naming it at start-up
//! rather than an anonymous TLS failure at the first request.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::RegistryError;

/// Sent with every request so registry operators can tell who is calling.
const USER_AGENT: &str = concat!("imgate/", env!("CARGO_PKG_VERSION"));
/// Redirects followed (blob downloads redirect to object storage).
const MAX_REDIRECTS: usize = 5;
/// Offered in this order: HTTP/2 lets the webhook multiplex every request to
/// a registry over one connection. reqwest sets ALPN only on TLS configs it
/// builds itself, so a preconfigured one must carry it.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Reads the certificates of a PEM bundle, checking each is a usable trust anchor.
pub(crate) fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, RegistryError> {
    let bad =
        |detail: String| RegistryError::Config(format!("CA file {}: {detail}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let mut reader = std::io::BufReader::new(pem.as_slice());
    let mut out = Vec::new();
    for cert in rustls_pemfile::certs(&mut reader) {
        let der = cert.map_err(|e| bad(format!("invalid PEM: {e}")))?;
        // rustls accepts a certificate as a root only if it parses as one.
        let mut store = RootCertStore::empty();
        store
            .add(der.clone())
            .map_err(|e| bad(format!("invalid certificate: {e}")))?;
        out.push(der);
    }
    if out.is_empty() {
        return Err(bad("no PEM certificates found".to_string()));
    }
    Ok(out)
}

/// Builds a client trusting the system roots and the certificates in `ca_files`.
pub(crate) fn build_client(
    ca_files: &[PathBuf],
    timeout: Duration,
) -> Result<reqwest::Client, RegistryError> {
    let mut extra = Vec::new();
    for path in ca_files {
        extra.extend(read_ca_file(path)?);
    }
    reqwest::Client::builder()
        .use_preconfigured_tls(tls_config(extra)?)
        .user_agent(USER_AGENT)
        // Covers connect, headers and the whole body: a registry that hangs
        // mid-body still ends in a timeout.
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        .build()
        .map_err(|e| unbuildable(&e))
}

fn unbuildable(e: &dyn std::error::Error) -> RegistryError {
    RegistryError::Config(format!(
        "cannot build the HTTP client: {}",
        crate::error_chain(e)
    ))
}

/// TLS 1.2 and 1.3 with ring, trusting the system roots (when first
/// needed) plus `extra`, offering HTTP/2 then HTTP/1.1.
fn tls_config(extra: Vec<CertificateDer<'static>>) -> Result<rustls::ClientConfig, RegistryError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(LazyRootsVerifier::new(extra, Arc::clone(&provider)));
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| unbuildable(&e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(tls)
}

/// The system certificate store as read once for the whole process.
#[derive(Debug)]
struct SystemRoots {
    store: RootCertStore,
    /// Why the store is unusable (unreadable or empty), for the error of a
    /// certificate no other CA vouches for.
    problem: Option<String>,
}

/// Read on first use; every client of the process shares it.
static SYSTEM_ROOTS: OnceLock<SystemRoots> = OnceLock::new();

fn system_roots() -> &'static SystemRoots {
    SYSTEM_ROOTS.get_or_init(load_system_roots)
}

fn load_system_roots() -> SystemRoots {
    let loaded = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    // Stores often hold a few ancient certificates rustls cannot parse;
    // skipping them is what every TLS client does.
    let (added, skipped) = store.add_parsable_certificates(loaded.certs);
    let errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
    tracing::debug!(
        added,
        skipped,
        errors = errors.len(),
        "read the system certificate store"
    );
    let problem = store.is_empty().then(|| {
        let mut why = format!(
            "the system certificate store ({}) holds no usable certificate",
            store_location()
        );
        if !errors.is_empty() {
            why.push_str(": ");
            why.push_str(&errors.join("; "));
        }
        why
    });
    if !errors.is_empty() && problem.is_none() {
        tracing::debug!(errors = %errors.join("; "), "parts of the system certificate store were unreadable");
    }
    SystemRoots { store, problem }
}

/// Where the system store was read from, as the operator would set it.
fn store_location() -> String {
    let set: Vec<String> = ["SSL_CERT_FILE", "SSL_CERT_DIR"]
        .iter()
        .filter_map(|var| {
            std::env::var_os(var).map(|v| format!("{var}={}", Path::new(&v).display()))
        })
        .collect();
    if set.is_empty() {
        "the platform's default location".to_string()
    } else {
        set.join(", ")
    }
}

/// Why a server certificate was refused when the system store was unusable.
#[derive(Debug, thiserror::Error)]
enum Untrusted {
    /// Neither the system store nor a CA file gave a single root.
    #[error(
        "no CA certificate to check the server's against: {problem}, and no CA file is configured"
    )]
    NoRoots { problem: String },
    /// Only the operator's CA files were trusted, and none vouched for it.
    #[error("{refused} (only the configured CA files were trusted: {problem})")]
    WithoutSystemRoots { refused: String, problem: String },
}

impl From<Untrusted> for rustls::Error {
    fn from(value: Untrusted) -> Self {
        // `Other` prints the message as is; a `CertificateError` would print
        // it through `Debug`.
        rustls::Error::Other(rustls::OtherError(Arc::new(value)))
    }
}

/// Checks server certificates against the system roots (read on the first
/// certificate checked) plus the operator's CA files, then as rustls' own
/// WebPKI verifier does: chain, validity, name.
#[derive(Debug)]
struct LazyRootsVerifier {
    /// The operator's CA certificates, already checked to parse as roots.
    extra: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
    /// Built on first use: WebPKI's verifier over system plus extra roots,
    /// or why there is no root at all.
    inner: OnceLock<Result<Arc<WebPkiServerVerifier>, String>>,
}

impl LazyRootsVerifier {
    fn new(extra: Vec<CertificateDer<'static>>, provider: Arc<CryptoProvider>) -> Self {
        LazyRootsVerifier {
            extra,
            provider,
            inner: OnceLock::new(),
        }
    }

    /// The first caller reads the system store (a few milliseconds of file
    /// reads, once per process) while others wait for it.
    fn inner(&self) -> &Result<Arc<WebPkiServerVerifier>, String> {
        self.inner.get_or_init(|| {
            let system = system_roots();
            let mut roots = system.store.clone();
            // Checked when the CA file was read, so none is skipped here.
            roots.add_parsable_certificates(self.extra.iter().cloned());
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&self.provider))
                .build()
                .map_err(|e| system.problem.clone().unwrap_or_else(|| e.to_string()))
        })
    }
}

impl ServerCertVerifier for LazyRootsVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verifier = match self.inner() {
            Ok(verifier) => verifier,
            Err(problem) => {
                return Err(Untrusted::NoRoots {
                    problem: problem.clone(),
                }
                .into())
            }
        };
        let result =
            verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        match (result, &system_roots().problem) {
            // Only the operator's CAs were trusted: say the system store was
            // missing, since the certificate may well have been issued by it.
            (Err(err), Some(problem)) => Err(Untrusted::WithoutSystemRoots {
                refused: err.to_string(),
                problem: problem.clone(),
            }
            .into()),
            (result, _) => result,
        }
    }

    // Handshake signatures are checked against the server's certificate
    // alone: no roots needed, so the store is not read for them.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A self-signed P-256 CA made with `openssl req -x509 -newkey ec
    /// -pkeyopt ec_paramgen_curve:prime256v1 -days 36500 -subj "/CN=imgate
    /// unit test CA"`; only parsed here (handshakes are tested against the
    /// real registry in tests/).
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBkjCCATmgAwIBAgIUM6iVz4uzAfYobgNc+pmY/JNZuVEwCgYIKoZIzj0EAwIw\n\
HjEcMBoGA1UEAwwTaW1nYXRlIHVuaXQgdGVzdCBDQTAgFw0yNjExMjMxMTM3MjZa\n\
GA8yMTI2MTAzMDExMzcyNlowHjEcMBoGA1UEAwwTaW1nYXRlIHVuaXQgdGVzdCBD\n\
QTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABNpoYg3EFVa83phjpfL/nhlaFVap\n\
Tr2bXzh4opWnh0WHHwtAupcKnxYZLwer9aeOVmsyhqPp7971a1O2iEE6Ec+jUzBR\n\
MB0GA1UdDgQWBBS+JVXyD+nP29v2FYF2UJXNiJTwYDAfBgNVHSMEGDAWgBS+JVXy\n\
D+nP29v2FYF2UJXNiJTwYDAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0cA\n\
MEQCIBFnCb53DPm6/SlT57pWJcPPXm6c7G3cIErQJ3r7NgmyAiBzx8MsoMXN2PTu\n\
IUchKPPatHp3VBxnEN3xCfTb76U1LA==\n\
-----END CERTIFICATE-----";

    #[test]
    fn reads_a_ca_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle.pem");
        // Text around the certificates is allowed, as in system bundles.
        std::fs::write(&path, format!("# our CA\n{TEST_CA}\n{TEST_CA}")).unwrap();
        assert_eq!(read_ca_file(&path).unwrap().len(), 2);
        build_client(&[path], Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn offers_http2_then_http1() {
        let tls = tls_config(Vec::new()).unwrap();
        assert_eq!(tls.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert!(tls.enable_sni);
    }

    #[test]
    fn a_refusal_without_system_roots_says_why() {
        let problem =
            "the system certificate store (SSL_CERT_FILE=/x.pem) holds no usable certificate";
        let none: rustls::Error = Untrusted::NoRoots {
            problem: problem.to_string(),
        }
        .into();
        let text = none.to_string();
        assert!(text.contains("SSL_CERT_FILE=/x.pem"), "{text}");
        assert!(text.contains("no CA file is configured"), "{text}");
        let unknown: rustls::Error = Untrusted::WithoutSystemRoots {
            refused: rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
                .to_string(),
            problem: problem.to_string(),
        }
        .into();
        let text = unknown.to_string();
        assert!(text.contains("UnknownIssuer"), "{text}");
        assert!(text.contains("only the configured CA files"), "{text}");
    }

    #[test]
    fn bad_ca_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        for path in [&missing, &empty, &garbage] {
            let err = read_ca_file(path).unwrap_err();
            assert!(matches!(err, RegistryError::Config(_)));
            assert!(
                err.to_string().contains(&path.display().to_string()),
                "{err}"
            );
            let err = build_client(std::slice::from_ref(path), Duration::from_secs(1)).unwrap_err();
            assert!(
                err.to_string().contains(&path.display().to_string()),
                "{err}"
            );
        }
    }
}
