//! Building the HTTP clients: rustls (ring) with the system roots plus the
//! extra CA bundles the operator names, one client per distinct trust set.
//!
//! Each CA file is parsed here, certificate by certificate, so a bad file is
//! a `Config` error naming it rather than an anonymous TLS builder failure.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::RegistryError;

/// Sent with every request so registry operators can tell who is calling.
const USER_AGENT: &str = concat!("imgate/", env!("CARGO_PKG_VERSION"));
/// Redirects followed (blob downloads redirect to object storage).
const MAX_REDIRECTS: usize = 5;

/// Reads the certificates of a PEM bundle, checking each is a usable trust anchor.
pub(crate) fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, RegistryError> {
    let bad =
        |detail: String| RegistryError::Config(format!("CA file {}: {detail}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let mut reader = std::io::BufReader::new(pem.as_slice());
    let mut out = Vec::new();
    for cert in rustls_pemfile::certs(&mut reader) {
        let der = cert.map_err(|e| bad(format!("invalid PEM: {e}")))?;
        // rustls accepts a certificate as a root only if it parses as one.
        let mut store = rustls::RootCertStore::empty();
        store
            .add(der.clone())
            .map_err(|e| bad(format!("invalid certificate: {e}")))?;
        out.push(
            reqwest::Certificate::from_der(der.as_ref())
                .map_err(|e| bad(format!("invalid certificate: {e}")))?,
        );
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
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .user_agent(USER_AGENT)
        // Covers connect, headers and the whole body: a registry that hangs
        // mid-body still ends in a timeout.
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS));
    for path in ca_files {
        for cert in read_ca_file(path)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| {
        RegistryError::Config(format!(
            "cannot build the HTTP client: {}",
            crate::error_chain(&e)
        ))
    })
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
