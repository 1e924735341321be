//! What the benchmark and the soak share: the real registry behind the
//! fault proxy (over TLS with HTTP/2, or plain HTTP/1.1), a signing key, signed and unsigned test images, a policy,
//! webhook certificates, and the real `imgate webhook` process with its
//! JSON log written to a file (as a container runtime would collect it).

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use imgate_core::registry::RegistryClient;
use imgate_core::signature::{self, Format, SignOptions};
use imgate_core::ImageRef;
use imgate_keys::SigningKey;
use imgate_tests::webhook::{generate_certs, WebhookOptions};
pub use imgate_tests::webhook::{pod, review};
use imgate_tests::{FaultProxy, Faults, Front, ImageBuilder, PushWith, Registry, Variant};
use serde_json::Value;

/// How many pushes and signatures run at once while setting up.
const SETUP_CONCURRENCY: usize = 16;

/// A registry behind a fault proxy, a key, a scratch directory.
pub struct Lab {
    pub registry: Registry,
    /// The front images are pushed, signed and named through.
    pub proxy: FaultProxy,
    /// With a TLS `proxy`: a second, plain-HTTP/1.1 proxy in front of the
    /// same registry, for comparison (images reached through it with [`Lab::via`]).
    pub plain: Option<FaultProxy>,
    key: SigningKey,
    signer: RegistryClient,
    pub dir: tempfile::TempDir,
}

impl Lab {
    /// Starts the registry and the proxy reached through `front` (no delay,
    /// no faults yet); a TLS front comes with a plain one too.
    pub async fn start(front: Front) -> anyhow::Result<Lab> {
        let registry = Registry::start(Variant::Http)
            .await
            .context("starting docker-registry (is it installed? scripts/install-deps.sh)")?;
        let proxy = FaultProxy::start_with(&registry.url(""), Faults::default(), front)?;
        let plain = match front {
            Front::Tls => Some(FaultProxy::start(&registry.url(""), Faults::default())?),
            Front::Plain => None,
        };
        let signer = RegistryClient::new(proxy.client_config())?;
        let dir = tempfile::tempdir()?;
        let key = SigningKey::generate();
        std::fs::write(dir.path().join("cosign.pub"), key.public_key().to_pem())?;
        // The CLI cases read credentials from here, never the user's own.
        std::fs::write(dir.path().join("docker-config.json"), b"{\"auths\":{}}")?;
        Ok(Lab {
            registry,
            proxy,
            plain,
            key,
            signer,
            dir,
        })
    }

    /// Pushes a distinct single-platform image as `repo:tag` (straight to the
    /// registry) and signs it through the proxy in `format` (none: unsigned).
    /// Returns `PROXY/repo:tag` and the digest.
    pub async fn push(
        &self,
        repo: &str,
        tag: &str,
        format: Option<Format>,
    ) -> anyhow::Result<(String, String)> {
        let pushed = ImageBuilder::new(&format!("perf {repo}:{tag}"))
            .image()
            .push(&self.registry, repo, tag, PushWith::Http)
            .await
            .with_context(|| format!("pushing {repo}:{tag}"))?;
        let reference = format!("{}/{repo}:{tag}", self.proxy.host());
        if let Some(format) = format {
            let image = ImageRef::parse(&format!("{reference}@{}", pushed.digest))?;
            let opts = SignOptions {
                format,
                ..SignOptions::default()
            };
            signature::sign(&self.signer, &image, &self.key, &opts)
                .await
                .with_context(|| format!("signing {reference}"))?;
        }
        Ok((reference, pushed.digest))
    }

    /// Pushes and signs (legacy) `count` distinct images `repo-N:v1`, several at once.
    pub async fn push_many(&self, repo: &str, count: usize) -> anyhow::Result<Vec<String>> {
        let pushes = futures::stream::iter(0..count)
            .map(|n| async move {
                self.push(&format!("{repo}-{n}"), "v1", Some(Format::Legacy))
                    .await
                    .map(|(reference, _)| reference)
            })
            .buffer_unordered(SETUP_CONCURRENCY);
        pushes.collect::<Vec<_>>().await.into_iter().collect()
    }

    /// The public key the images are signed with (PEM).
    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("cosign.pub")
    }

    /// `reference` (named through [`Lab::proxy`]) named through `front` instead.
    pub fn via(&self, front: &FaultProxy, reference: &str) -> String {
        let host = self.proxy.host();
        match reference.strip_prefix(host.as_str()) {
            Some(rest) => format!("{}{rest}", front.host()),
            None => reference.to_string(),
        }
    }

    /// The policy: enforce, fail closed, every front's `team/**` signed by
    /// the key (the TLS front's CA trusted, plain HTTP allowed for a plain
    /// one). `extra` is appended to the rules (the soak's reloads use it).
    pub fn policy_text(&self, extra: &str) -> String {
        let fronts: Vec<&FaultProxy> = std::iter::once(&self.proxy)
            .chain(self.plain.as_ref())
            .collect();
        let patterns: Vec<String> = fronts
            .iter()
            .map(|front| format!("\"{}/team/**\"", front.host()))
            .collect();
        let patterns = patterns.join(", ");
        let mut registries = String::new();
        for front in &fronts {
            let settings = match front.ca_file() {
                Some(ca) => format!("{{caFile: \"{}\"}}", ca.display()),
                None => "{http: true}".to_string(),
            };
            registries.push_str(&format!("  \"{}\": {settings}\n", front.host()));
        }
        format!(
            "mode: enforce\n\
             onRegistryError: deny\n\
             namespaces:\n  exclude: [kube-system, imgate-system]\n\
             trustedRegistries: [{patterns}]\n\
             registries:\n{registries}\
             rules:\n  - name: team\n    images: [{patterns}]\n    keys: [{{file: {}}}]\n{extra}",
            self.key_file().display()
        )
    }

    /// An empty docker config (no credentials) for the `imgate` CLI.
    pub fn docker_config(&self) -> PathBuf {
        self.dir.path().join("docker-config.json")
    }

    /// Writes the policy atomically (a rename, as a ConfigMap update does).
    pub fn write_policy(&self, text: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join("policy.yaml");
        let tmp = self.dir.path().join(".policy.yaml.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// Generates a CA and serving certificate into `DIR/name`.
    pub fn certs(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.dir.path().join(name);
        generate_certs(&dir, false)?;
        Ok(dir)
    }
}

/// The real `imgate webhook` (the binary of `IMGATE_BIN`); killed when dropped.
pub struct Served {
    child: Child,
    pub admission: SocketAddr,
    pub metrics: SocketAddr,
    pub log: PathBuf,
}

impl Served {
    /// Starts the webhook with its JSON log (default level) going to `log`,
    /// and waits up to 60 s for its "listening" line.
    pub fn start(
        policy: &Path,
        cert_dir: &Path,
        args: &[&str],
        log: &Path,
    ) -> anyhow::Result<Served> {
        let options = WebhookOptions::new(policy, cert_dir).args(args.iter().copied());
        let log_file = std::fs::File::create(log)?;
        let mut child = options
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .context("starting imgate webhook")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some((admission, metrics)) = text.lines().find_map(listening_line) {
                return Ok(Served {
                    child,
                    admission,
                    metrics,
                    log: log.to_path_buf(),
                });
            }
            if let Some(status) = child.try_wait()? {
                bail!("imgate webhook exited with {status} before listening:\n{text}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("imgate webhook did not start within 60s:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<(ExitStatus, Duration)> {
        let started = Instant::now();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.child.id());
        }
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok((status, started.elapsed()));
            }
            if started.elapsed() > timeout {
                bail!("imgate webhook still running {timeout:?} after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The metrics port's `/metrics` text.
    pub async fn metrics_text(&self) -> anyhow::Result<String> {
        let text = reqwest::Client::new()
            .get(format!("http://{}/metrics", self.metrics))
            .timeout(Duration::from_secs(10))
            .send()
            .await?
            .text()
            .await?;
        Ok(text)
    }

    /// The log lines written so far.
    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The bound addresses from the JSON "listening" line.
fn listening_line(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let value: Value = serde_json::from_str(line).ok()?;
    let field = |name: &str| {
        value
            .get(name)
            .or_else(|| value.get("fields").and_then(|f| f.get(name)))
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
    };
    Some((field("admission")?, field("metrics")?))
}
