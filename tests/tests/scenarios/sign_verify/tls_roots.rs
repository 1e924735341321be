//! Which certificate authorities `imgate verify` trusts, against the real
//! registry over TLS: the system store is read only when a certificate is to
//! be checked (never for a plain-HTTP registry), a CA given in a file is
//! trusted even when the system store is unusable, a certificate from any
//! other CA is refused naming why, and the connection speaks HTTP/2.
//!
//! An unusable system store is made by pointing `SSL_CERT_FILE` at a PEM
//! block that is not a certificate and `SSL_CERT_DIR` at an empty
//! directory: the store is then read from those alone.

use imgate_tests::pki::TestCa;
use imgate_tests::{run_imgate, Variant};

use super::Ctx;
use crate::common::Run;

/// A PEM certificate block whose content is not a certificate.
const BROKEN_STORE: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";

/// The debug line the registry client logs when it reads the system store.
const STORE_READ: &str = "read the system certificate store";

impl Ctx {
    /// `SSL_CERT_FILE` (holding [`BROKEN_STORE`]) and `SSL_CERT_DIR` (empty)
    /// naming an unusable system store.
    fn broken_store(&self) -> (String, String) {
        let file = self.path("broken-store.pem");
        std::fs::write(&file, BROKEN_STORE).expect("write");
        let dir = self.path("empty-cert-dir");
        std::fs::create_dir_all(&dir).expect("mkdir");
        (file, dir)
    }

    /// A signed image on this registry and the public key to verify it with.
    async fn signed(&self, label: &str) -> (String, String) {
        let (key, public) = self.keys(label);
        let image = self.push(label, "team/roots", "v1").await;
        self.sign(&key, &[&image.reference]);
        (image.pinned(), public)
    }
}

/// `imgate verify --key PUB IMAGE` with exactly `registry_args` (no CA file
/// unless given), the registry client's debug log on, and `env`.
fn verify(public: &str, image: &str, registry_args: &[String], env: &[(&str, &str)]) -> Run {
    let mut args = vec![
        "verify".to_string(),
        "--key".to_string(),
        public.to_string(),
        image.to_string(),
    ];
    args.extend(registry_args.iter().cloned());
    let mut env = env.to_vec();
    env.push(("IMGATE_LOG", "info,imgate_core::registry=debug"));
    let out = run_imgate(&args, &env, None).expect("imgate runs");
    Run::from_output(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_never_reads_the_system_store() {
    let ctx = Ctx::new(Variant::Http).await;
    let (image, public) = ctx.signed("plain").await;
    let (file, dir) = ctx.broken_store();
    let broken = [
        ("SSL_CERT_FILE", file.as_str()),
        ("SSL_CERT_DIR", dir.as_str()),
    ];
    let args = ctx.registry.cli_args();

    let run = verify(&public, &image, &args, &broken);
    assert_eq!(
        run.code, 0,
        "a broken store is never read for HTTP: {run:?}"
    );
    assert!(!run.stderr.contains(STORE_READ), "{run:?}");
    // The same without the broken store: still not read.
    let run = verify(&public, &image, &args, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stderr.contains(STORE_READ), "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_reads_the_store_once_and_names_a_broken_one() {
    let ctx = Ctx::new(Variant::Tls).await;
    let (image, public) = ctx.signed("https").await;
    let (file, dir) = ctx.broken_store();
    let broken = [
        ("SSL_CERT_FILE", file.as_str()),
        ("SSL_CERT_DIR", dir.as_str()),
    ];
    let ca = ctx
        .registry
        .ca_file()
        .expect("TLS registry")
        .display()
        .to_string();
    let with_ca = vec!["--registry-ca".to_string(), ca];

    // The CA file is trusted whatever the system store holds; the store is
    // read once, though the signature tag, its listing and blob took
    // several requests.
    for env in [&[][..], &broken[..]] {
        let run = verify(&public, &image, &with_ca, env);
        assert_eq!(run.code, 0, "{env:?}: {run:?}");
        assert_eq!(
            run.stderr.matches(STORE_READ).count(),
            1,
            "{env:?}: {run:?}"
        );
    }

    // No CA file and a broken store: nothing is trusted, and the error says
    // where the store came from.
    let run = verify(&public, &image, &[], &broken);
    run.assert_one_line_error("no CA certificate to check the server's against");
    assert!(
        run.stderr.contains(&format!("SSL_CERT_FILE={file}")),
        "{run:?}"
    );
    assert!(run.stderr.contains(ctx.registry.host()), "{run:?}");

    // The registry's access log shows the requests came over HTTP/2.
    let log = ctx.registry.log_tail(400);
    let ours: Vec<&str> = log.lines().filter(|l| l.contains("\"imgate/")).collect();
    assert!(!ours.is_empty(), "no imgate request logged:\n{log}");
    assert!(
        ours.iter().all(|l| l.contains(" HTTP/2.0\"")),
        "every imgate request should use HTTP/2:\n{}",
        ours.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_an_unknown_ca_is_refused() {
    let ctx = Ctx::new(Variant::Tls).await;
    let (image, public) = ctx.signed("unknown-ca").await;
    let other = TestCa::new("some other CA").expect("CA");
    let other_file = ctx.path("other-ca.pem");
    std::fs::write(&other_file, other.cert_pem()).expect("write");
    let with_other = vec!["--registry-ca".to_string(), other_file];

    // With the system store: neither it nor the other CA vouches for it.
    let run = verify(&public, &image, &with_other, &[]);
    run.assert_one_line_error("UnknownIssuer");
    assert!(run.stderr.contains(ctx.registry.host()), "{run:?}");
    assert!(run.stdout.is_empty(), "nothing verified: {run:?}");

    // Without it: refused too, saying the system store was not usable.
    let (file, dir) = ctx.broken_store();
    let broken = [
        ("SSL_CERT_FILE", file.as_str()),
        ("SSL_CERT_DIR", dir.as_str()),
    ];
    let run = verify(&public, &image, &with_other, &broken);
    run.assert_one_line_error("UnknownIssuer");
    assert!(
        run.stderr
            .contains("only the configured CA files were trusted"),
        "{run:?}"
    );
    assert!(
        run.stderr.contains(&format!("SSL_CERT_FILE={file}")),
        "{run:?}"
    );
}
