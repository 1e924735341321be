//! The floor server: the webhook's serving stack without the webhook —
//! rustls with the same certificate, hyper's HTTP/1.1 with keep-alive, one
//! task per connection — answering every POST with one fixed AdmissionReview
//! response (read from a file) after reading the request body. What the
//! webhook does on top of this is its own cost, so the benchmark reports the
//! webhook's throughput as a share of this one's, measured in the same run.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use bytes::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Largest request body read (the webhook's own bound is larger; reviews here are small).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// Serves on 127.0.0.1 with a free port; prints `listening ADDR` on stdout,
/// then serves until killed.
pub fn run(cert: &Path, key: &Path, body: &Path) -> anyhow::Result<()> {
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let answer =
        Bytes::from(std::fs::read(body).with_context(|| format!("reading {}", body.display()))?);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(serve(Arc::new(config), answer))
}

async fn serve(config: Arc<rustls::ServerConfig>, answer: Bytes) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let (acceptor, answer) = (acceptor.clone(), answer.clone());
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
                    let answer = answer.clone();
                    async move {
                        let _ =
                            axum::body::to_bytes(Body::new(request.into_body()), MAX_BODY).await;
                        hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(Body::from(answer))
                    }
                },
            );
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let _ = builder
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        });
    }
}
