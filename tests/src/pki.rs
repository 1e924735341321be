//! Test PKI: a CA generated per test (rcgen, ECDSA P-256) and the certificates
//! it issues — TLS server certificates for loopback and the token server's
//! signing certificate. Nothing here is trusted outside the test that made it.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Every name under the reserved `.test` domain (RFC 6761) that the test
/// servers answer to: `registry.imgate.test` and the like.
pub const TEST_DOMAIN_WILDCARD: &str = "*.imgate.test";

/// A certificate authority made for one test.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// A certificate issued by a [`TestCa`] with its private key.
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl IssuedCert {
    /// Writes `STEM.crt` and `STEM.key` (PEM) into `dir`; returns their paths.
    pub fn write_to(&self, dir: &Path, stem: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert_pem)
            .with_context(|| format!("writing {}", cert.display()))?;
        std::fs::write(&key, &self.key_pem)
            .with_context(|| format!("writing {}", key.display()))?;
        Ok((cert, key))
    }
}

impl TestCa {
    /// Generates a new CA named `name`.
    pub fn new(name: &str) -> anyhow::Result<TestCa> {
        let key = KeyPair::generate().context("generating the CA key")?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).context("self-signing the CA")?;
        Ok(TestCa { cert, key })
    }

    /// The CA certificate, PEM (what a client adds to its roots).
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> Vec<u8> {
        self.cert.der().to_vec()
    }

    /// A TLS server certificate for `127.0.0.1`, `localhost` and
    /// [`TEST_DOMAIN_WILDCARD`], so a test can reach the server by a host
    /// name it resolves itself (`crate::dns`, or an `/etc/hosts` line).
    pub fn server_cert(&self) -> anyhow::Result<IssuedCert> {
        let mut params = CertificateParams::new(vec![
            "localhost".to_string(),
            TEST_DOMAIN_WILDCARD.to_string(),
        ])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A TLS client certificate named `name` (what the API server presents
    /// to a webhook from its AdmissionConfiguration kubeconfig).
    pub fn client_cert(&self, name: &str) -> anyhow::Result<IssuedCert> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    /// A certificate for a signing key (the token server's JWT key); no SANs.
    pub fn signing_cert(&self, name: &str) -> anyhow::Result<IssuedCert> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> anyhow::Result<IssuedCert> {
        let key = KeyPair::generate().context("generating a leaf key")?;
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .context("signing a leaf certificate")?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        })
    }
}

/// A rustls server config for `cert` (the test's in-process TLS servers).
pub fn rustls_server_config(cert: &IssuedCert) -> anyhow::Result<rustls::ServerConfig> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let certs = vec![rustls::pki_types::CertificateDer::from(
        cert.cert_der.clone(),
    )];
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_der.clone().into());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("rustls protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("loading the server certificate into rustls")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
