//! The webhook spawner: certificates from `imgate webhook certs`, the real
//! `imgate webhook` binary on loopback ports it picks itself (read back from
//! its JSON start-up log line), and a client that trusts the emitted CA and
//! talks to `imgate.imgate-system.svc` the way the API server does (the name
//! is pinned to 127.0.0.1, so TLS checks the real service name).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject as _;

use crate::bin::{imgate_bin, run_imgate};

/// The DNS name the API server calls (`SERVICE.NAMESPACE.svc`).
pub const SERVICE_NAME: &str = "imgate.imgate-system.svc";

/// The user and group imgate's image runs as (its `USER`).
pub const IMAGE_USER: &str = "65532:65532";

/// Generates a CA and serving certificate with `imgate webhook certs` into
/// `dir` (`ca.crt`, `tls.crt`, `tls.key`); `force` overwrites (rotation).
pub fn generate_certs(dir: &Path, force: bool) -> anyhow::Result<()> {
    let dir_arg = dir.display().to_string();
    let mut args = vec!["webhook", "certs", "--out-dir", dir_arg.as_str()];
    if force {
        args.push("--force");
    }
    let out = run_imgate(&args, &[], None)?;
    if !out.status.success() {
        bail!(
            "imgate webhook certs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A client certificate and its key (PEM), as a kubeconfig's
/// `client-certificate` and `client-key`.
#[derive(Clone)]
pub struct ClientIdentity {
    /// The certificate chain, PEM.
    pub cert_pem: String,
    /// The private key, PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A running `imgate webhook`; killed when dropped.
#[derive(Debug)]
pub struct Webhook {
    child: Child,
    /// The HTTPS admission address.
    pub admission: SocketAddr,
    /// The plain-HTTP health and metrics address.
    pub metrics: SocketAddr,
    /// Directory with `ca.crt`, `tls.crt`, `tls.key`.
    pub cert_dir: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
}

/// How to start the webhook.
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    /// The policy file.
    pub policy: PathBuf,
    /// Directory with `tls.crt` and `tls.key` (and `ca.crt` for clients).
    pub cert_dir: PathBuf,
    /// Extra flags (`--deadline 2s`, `--reload-interval 200ms`, …).
    pub args: Vec<String>,
    /// Extra environment (`IMGATE_*` of the test process are never inherited).
    pub env: Vec<(String, String)>,
    /// Start with this soft limit on open files (through `prlimit`), as a
    /// container runtime might, to see what the webhook makes of it.
    pub nofile_soft: Option<u64>,
    /// Run `/imgate` of this root filesystem (an unpacked image) instead
    /// of `IMGATE_BIN`, through `chroot` as the image's user 65532 with an
    /// empty environment. `policy` and `cert_dir` are then paths inside it.
    pub root: Option<PathBuf>,
}

impl WebhookOptions {
    /// Options for `policy` with certificates in `cert_dir`.
    pub fn new(policy: &Path, cert_dir: &Path) -> Self {
        WebhookOptions {
            policy: policy.to_path_buf(),
            cert_dir: cert_dir.to_path_buf(),
            args: Vec::new(),
            env: Vec::new(),
            nofile_soft: None,
            root: None,
        }
    }

    /// Runs the webhook of the image unpacked at `root` (see [`WebhookOptions::root`]).
    pub fn in_root(mut self, root: &Path) -> Self {
        self.root = Some(root.to_path_buf());
        self
    }

    /// Where the certificates are, seen from this process.
    fn host_cert_dir(&self) -> PathBuf {
        match &self.root {
            Some(root) => root.join(self.cert_dir.strip_prefix("/").unwrap_or(&self.cert_dir)),
            None => self.cert_dir.clone(),
        }
    }

    /// Starts the webhook with a soft open-files limit of `soft`.
    pub fn nofile_soft(mut self, soft: u64) -> Self {
        self.nofile_soft = Some(soft);
        self
    }

    /// Adds flags.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The command line (without starting it).
    pub fn command(&self) -> Command {
        // chroot and prlimit exec what follows, so the child's pid stays the webhook's.
        let mut program: Vec<std::ffi::OsString> = match &self.root {
            Some(root) => vec![
                "/usr/sbin/chroot".into(),
                format!("--userspec={IMAGE_USER}").into(),
                root.into(),
                "/imgate".into(),
            ],
            None => vec![imgate_bin().into()],
        };
        if let Some(soft) = self.nofile_soft {
            program.splice(0..0, ["prlimit".into(), format!("--nofile={soft}:").into()]);
        }
        let mut command = Command::new(&program[0]);
        command.args(&program[1..]);
        if self.root.is_some() {
            // The image's process starts with what its config sets: nothing.
            command.env_clear();
        }
        command
            .args(["--log-format", "json", "webhook", "--policy"])
            .arg(&self.policy)
            .arg("--tls-cert")
            .arg(self.cert_dir.join("tls.crt"))
            .arg("--tls-key")
            .arg(self.cert_dir.join("tls.key"))
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(&self.args);
        for (key, _) in std::env::vars_os() {
            let name = key.to_string_lossy();
            if name.starts_with("IMGATE_")
                || name == "DOCKER_CONFIG"
                || name.starts_with("KUBERNETES_")
            {
                command.env_remove(&key);
            }
        }
        command.env("IMGATE_LOG", "info");
        command.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command
    }
}

impl Webhook {
    /// Starts the webhook and waits (up to 60 s) for its "listening" line.
    pub fn start(options: &WebhookOptions) -> anyhow::Result<Webhook> {
        let mut child = options
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting imgate webhook")?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<(SocketAddr, SocketAddr)>();
        if let Some(stderr) = child.stderr.take() {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(addrs) = listening_line(&line) {
                        let _ = tx.send(addrs);
                    }
                    if let Ok(mut logs) = logs.lock() {
                        logs.push(line);
                    }
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((admission, metrics)) = rx.recv_timeout(Duration::from_millis(50)) {
                return Ok(Webhook {
                    child,
                    admission,
                    metrics,
                    cert_dir: options.host_cert_dir(),
                    logs,
                });
            }
            if let Some(status) = child.try_wait()? {
                std::thread::sleep(Duration::from_millis(100));
                bail!(
                    "imgate webhook exited with {status} before listening:\n{}",
                    logs.lock().map(|l| l.join("\n")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("imgate webhook did not start within 60s");
            }
        }
    }

    /// A client trusting `ca.crt` (read now) that reaches [`SERVICE_NAME`]
    /// at this webhook's port. New connections only: no pooling, so every
    /// request does a fresh TLS handshake when `fresh` is set.
    pub fn client(&self, fresh: bool) -> anyhow::Result<reqwest::Client> {
        let ca = std::fs::read(self.cert_dir.join("ca.crt")).context("reading ca.crt")?;
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
            .resolve(SERVICE_NAME, self.admission)
            .timeout(Duration::from_secs(30));
        if fresh {
            builder = builder.pool_max_idle_per_host(0);
        }
        Ok(builder.build()?)
    }

    /// `https://imgate.imgate-system.svc:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{SERVICE_NAME}:{}{path}", self.admission.port())
    }

    /// `http://127.0.0.1:PORT/path` on the metrics port.
    pub fn metrics_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.metrics)
    }

    /// POSTs `review` to `/mutate` or `/validate`; returns the status and JSON body
    /// (or the text as a JSON string when it is not JSON).
    pub async fn post(
        &self,
        client: &reqwest::Client,
        endpoint: &str,
        review: &serde_json::Value,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let response = client
            .post(self.url(endpoint))
            .header("content-type", "application/json")
            .json(review)
            .send()
            .await
            .with_context(|| format!("POST {endpoint}"))?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        Ok((status, body))
    }

    /// GETs a path on the metrics port; returns status and body.
    pub async fn get_side(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let response = reqwest::Client::new()
            .get(self.metrics_url(path))
            .timeout(Duration::from_secs(10))
            .send()
            .await?;
        Ok((response.status().as_u16(), response.text().await?))
    }

    /// The sum of a metric's samples whose line starts with `prefix` (a
    /// name, or a name with labels: `imgate_x_total{reason="y"}`); 0 when
    /// there are none.
    pub async fn metric(&self, prefix: &str) -> anyhow::Result<f64> {
        let (_, text) = self.get_side("/metrics").await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .fold(0.0, |sum, x| sum + x))
    }

    /// Everything the webhook logged so far (JSON lines).
    pub fn logs(&self) -> String {
        self.logs.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.logs().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `/proc/<pid>/status` value in KiB: `VmRSS` (resident now) or
    /// `VmHWM` (the peak resident size so far).
    pub fn memory_kib(&self, field: &str) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {field} in {path}"))
    }

    /// CPU time (user plus system) the webhook has used so far, from
    /// `/proc/<pid>/stat` (clock ticks of 10 ms).
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let path = format!("/proc/{}/stat", self.child.id());
        let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        // Fields after the parenthesised command name: state is the first,
        // utime the 12th, stime the 13th.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let tick = |i: usize| -> anyhow::Result<u64> {
            fields
                .get(i)
                .and_then(|f| f.parse().ok())
                .with_context(|| format!("no field {i} in {path}"))
        };
        Ok(Duration::from_millis((tick(11)? + tick(12)?) * 10))
    }

    /// A raw TLS connector trusting `ca.crt`, and the name to ask for, for
    /// tests that speak HTTP by hand (slow or idle clients).
    pub fn tls_connector(
        &self,
    ) -> anyhow::Result<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )> {
        self.tls_connector_as(None, &[])
    }

    /// [`Webhook::tls_connector`] presenting `identity` (a client
    /// certificate, as the API server does with a kubeconfig) and offering
    /// `alpn` (`h2`, `http/1.1`; none: the server picks HTTP/1.1).
    pub fn tls_connector_as(
        &self,
        identity: Option<&ClientIdentity>,
        alpn: &[&[u8]],
    ) -> anyhow::Result<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )> {
        let ca = std::fs::read(self.cert_dir.join("ca.crt")).context("reading ca.crt")?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
            roots.add(cert.context("parsing ca.crt")?)?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
        let mut config = match identity {
            Some(identity) => {
                let chain =
                    rustls::pki_types::CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
                        .collect::<Result<Vec<_>, _>>()
                        .context("parsing the client certificate")?;
                let key =
                    rustls::pki_types::PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
                        .context("parsing the client key")?;
                builder.with_client_auth_cert(chain, key)?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = rustls::pki_types::ServerName::try_from(SERVICE_NAME)?;
        Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
    }

    /// [`Webhook::client`] presenting `identity` as its client certificate.
    pub fn client_as(&self, identity: &ClientIdentity) -> anyhow::Result<reqwest::Client> {
        let ca = std::fs::read(self.cert_dir.join("ca.crt")).context("reading ca.crt")?;
        let pem = format!("{}\n{}", identity.cert_pem, identity.key_pem);
        Ok(reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
            .identity(reqwest::Identity::from_pem(pem.as_bytes())?)
            .resolve(SERVICE_NAME, self.admission)
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(30))
            .build()?)
    }

    /// Sends a signal (`TERM`, `HUP`, `INT`) with `kill(1)`.
    pub fn signal(&self, name: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -{name} {} failed", self.child.id());
        }
        Ok(())
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("imgate webhook still running after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads the bound addresses from the JSON "listening" line.
fn listening_line(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let field = |name: &str| {
        value
            .get(name)
            .or_else(|| value.get("fields").and_then(|f| f.get(name)))
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse().ok())
    };
    Some((field("admission")?, field("metrics")?))
}

/// Who [`review`] says made the request.
pub const REVIEW_USER: &str = "system:serviceaccount:ci:deployer";

/// A Pod named `web` in `namespace` with one container `cN` per image.
pub fn pod(namespace: &str, images: &[&str]) -> serde_json::Value {
    let containers: Vec<serde_json::Value> = images
        .iter()
        .enumerate()
        .map(|(i, image)| serde_json::json!({"name": format!("c{i}"), "image": image}))
        .collect();
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"containers": containers}
    })
}

/// An AdmissionReview v1 of [`REVIEW_USER`] creating `object` (a Pod or a
/// Deployment) in `namespace`, as the API server sends it.
pub fn review(uid: &str, namespace: &str, object: &serde_json::Value) -> serde_json::Value {
    let kind = object["kind"].as_str().unwrap_or("Pod");
    let (group, resource) = match kind {
        "Deployment" => ("apps", "deployments"),
        _ => ("", "pods"),
    };
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": resource},
            "requestKind": {"group": group, "version": "v1", "kind": kind},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": REVIEW_USER, "groups": ["system:authenticated"]},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_listening_line() {
        let line = r#"{"timestamp":"x","level":"INFO","admission":"127.0.0.1:4443","metrics":"127.0.0.1:9091","message":"imgate webhook listening"}"#;
        let (a, m) = listening_line(line).unwrap();
        assert_eq!(a.port(), 4443);
        assert_eq!(m.port(), 9091);
        assert!(listening_line("not json").is_none());
    }
}
