//! The real registry: Debian's `docker-registry` (CNCF Distribution 2.8)
//! started on a free loopback port with its own temp storage, in four
//! variants (plain HTTP, TLS, TLS + htpasswd, TLS + bearer tokens), killed
//! when the [`Registry`] is dropped. Every registry has its own port, dir, CA
//! and credentials, so tests run in parallel.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use imgate_core::registry::{ClientConfig, Credentials, RegistrySettings};
use serde_json::json;

use crate::pki::TestCa;
use crate::token::{TokenServer, TokenSettings};

/// The registry executable (Debian package `docker-registry`).
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// The user name of the auth variants.
pub const USERNAME: &str = "imgate-tester";
/// The password of the auth variants.
pub const PASSWORD: &str = "pa55-w0rd:with-colon";
/// The token variant's `service` (JWT audience).
pub const TOKEN_SERVICE: &str = "imgate-test-registry";
/// The token variant's issuer.
pub const TOKEN_ISSUER: &str = "imgate-test-token-server";

/// How long a registry may take to come up before start fails.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Attempts when the port picked is taken between probing and binding.
const START_ATTEMPTS: usize = 5;

/// Which registry to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// Plain HTTP, anonymous.
    Http,
    /// HTTPS with a certificate from a CA made in the test, anonymous.
    Tls,
    /// HTTPS + htpasswd (bcrypt) basic auth.
    BasicAuth,
    /// HTTPS + bearer tokens from an in-process token server.
    Token,
}

impl Variant {
    /// Every variant, for table tests.
    pub const ALL: [Variant; 4] = [
        Variant::Http,
        Variant::Tls,
        Variant::BasicAuth,
        Variant::Token,
    ];

    /// Whether the registry speaks TLS.
    pub fn is_tls(self) -> bool {
        !matches!(self, Variant::Http)
    }

    /// Whether the registry requires credentials.
    pub fn has_auth(self) -> bool {
        matches!(self, Variant::BasicAuth | Variant::Token)
    }
}

/// A running registry; killed (and its storage removed) on drop.
#[derive(Debug)]
pub struct Registry {
    /// The variant running.
    pub variant: Variant,
    host: String,
    // Before `dir`: fields drop in order, so the process dies before its storage goes.
    process: Process,
    ca_file: Option<PathBuf>,
    cert_dir: Option<PathBuf>,
    ca: Option<TestCa>,
    docker_config: PathBuf,
    token: Option<TokenServer>,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry of `variant` and waits until `/v2/` answers.
    pub async fn start(variant: Variant) -> anyhow::Result<Registry> {
        if !Path::new(REGISTRY_BIN).exists() {
            bail!("{REGISTRY_BIN} is missing: apt-get install -y docker-registry");
        }
        let dir = tempfile::Builder::new()
            .prefix("imgate-registry-")
            .tempdir()
            .context("creating the registry temp dir")?;
        let root = dir.path().to_path_buf();
        let storage = root.join("storage");
        std::fs::create_dir(&storage)?;

        let mut config = json!({
            "version": 0.1,
            "log": {"level": "info", "formatter": "text"},
            "storage": {
                "filesystem": {"rootdirectory": storage},
                "delete": {"enabled": true},
                "maintenance": {"uploadpurging": {"enabled": false}},
            },
            "http": {
                "secret": "imgate-test-secret",
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
        });

        let (mut ca, mut ca_file, mut cert_dir, mut token) = (None, None, None, None);
        if variant.is_tls() {
            let test_ca = TestCa::new("imgate test registry CA")?;
            let server = test_ca.server_cert()?;
            let (cert, key) = server.write_to(&root, "server")?;
            config["http"]["tls"] = json!({"certificate": cert, "key": key});
            let file = root.join("ca.pem");
            std::fs::write(&file, test_ca.cert_pem())?;
            // skopeo's --cert-dir wants a directory of `*.crt` CA files.
            let certs = root.join("certs.d");
            std::fs::create_dir(&certs)?;
            std::fs::write(certs.join("ca.crt"), test_ca.cert_pem())?;
            if variant == Variant::Token {
                let settings = TokenSettings {
                    service: TOKEN_SERVICE.to_string(),
                    issuer: TOKEN_ISSUER.to_string(),
                    username: USERNAME.to_string(),
                    password: PASSWORD.to_string(),
                    anonymous_pull: false,
                };
                let server_task = TokenServer::start(settings, &test_ca, &server).await?;
                config["auth"] = json!({"token": {
                    "realm": server_task.realm(),
                    "service": TOKEN_SERVICE,
                    "issuer": TOKEN_ISSUER,
                    "rootcertbundle": file,
                }});
                token = Some(server_task);
            }
            ca = Some(test_ca);
            ca_file = Some(file);
            cert_dir = Some(certs);
        }
        if variant == Variant::BasicAuth {
            let htpasswd = root.join("htpasswd");
            std::fs::write(&htpasswd, htpasswd_line(USERNAME, PASSWORD)?)?;
            config["auth"] = json!({"htpasswd": {"realm": "imgate-test", "path": htpasswd}});
        }

        let docker_config = root.join("docker-config.json");
        let log = root.join("registry.log");
        let scheme = if variant.is_tls() { "https" } else { "http" };
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let host = format!("127.0.0.1:{port}");
            config["http"]["addr"] = json!(host);
            // YAML is a superset of JSON, so the registry reads this as is.
            let config_file = root.join("config.yml");
            std::fs::write(&config_file, serde_json::to_vec_pretty(&config)?)?;
            let mut process = Process::spawn(&config_file, &log)?;
            let url = format!("{scheme}://{host}/v2/");
            match process.wait_ready(&host, &url, ca_file.as_deref()).await {
                Ok(()) => {
                    let registry = Registry {
                        variant,
                        host,
                        process,
                        ca_file,
                        cert_dir,
                        ca,
                        docker_config,
                        token,
                        dir,
                    };
                    match registry.credentials() {
                        Some((user, password)) => {
                            registry.write_docker_config(&registry.docker_config, user, password)?
                        }
                        None => std::fs::write(&registry.docker_config, b"{\"auths\":{}}")?,
                    }
                    return Ok(registry);
                }
                Err(err) => {
                    let retry = process.log_tail(20).contains("address already in use");
                    last_error = Some(err);
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("docker-registry did not start")))
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.variant.is_tls() {
            "https"
        } else {
            "http"
        }
    }

    /// The URL of `path` (starting with `/`) on this registry.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme(), self.host, path)
    }

    /// The CA certificate file (PEM) of the TLS variants.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// The test CA itself (TLS variants), e.g. to issue more certificates.
    pub fn ca(&self) -> Option<&TestCa> {
        self.ca.as_ref()
    }

    /// The user and password of the auth variants.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.variant.has_auth().then_some((USERNAME, PASSWORD))
    }

    /// The token server of the `Token` variant.
    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token.as_ref()
    }

    /// The docker `config.json` the harness wrote (credentials for the auth
    /// variants, an empty `auths` otherwise, so the user's own is never read).
    pub fn docker_config(&self) -> &Path {
        &self.docker_config
    }

    /// A scratch directory that lives as long as the registry.
    pub fn scratch_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a docker config at `file` with `username`/`password` for this registry.
    pub fn write_docker_config(
        &self,
        file: &Path,
        username: &str,
        password: &str,
    ) -> anyhow::Result<()> {
        let auth = STANDARD.encode(format!("{username}:{password}"));
        let config = json!({"auths": {self.host.clone(): {"auth": auth}}});
        std::fs::write(file, serde_json::to_vec_pretty(&config)?)
            .with_context(|| format!("writing {}", file.display()))
    }

    /// An `imgate_core` client configuration for this registry: HTTP allowed
    /// for the `Http` variant, the CA for TLS ones (also as an extra CA, since
    /// the token realm is another port), credentials set, no docker config.
    pub fn client_config(&self) -> ClientConfig {
        client_config_for(
            &self.host,
            self.variant.is_tls(),
            self.ca_file.as_deref(),
            self.credentials(),
        )
    }

    /// The `imgate` flags for this registry: `--allow-http-registry HOST` or
    /// `--registry-ca FILE`, and `--docker-config FILE` (credentials).
    pub fn cli_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        match &self.ca_file {
            Some(ca) => {
                args.push("--registry-ca".to_string());
                args.push(ca.display().to_string());
            }
            None => {
                args.push("--allow-http-registry".to_string());
                args.push(self.host.clone());
            }
        }
        args.push("--docker-config".to_string());
        args.push(self.docker_config.display().to_string());
        args
    }

    /// skopeo flags for commands reading one image (`inspect`): TLS and credentials.
    pub fn skopeo_args(&self) -> Vec<String> {
        self.skopeo_flags("")
    }

    /// skopeo flags for the destination of `skopeo copy`.
    pub fn skopeo_dest_args(&self) -> Vec<String> {
        self.skopeo_flags("dest-")
    }

    fn skopeo_flags(&self, prefix: &str) -> Vec<String> {
        let mut args = Vec::new();
        match &self.cert_dir {
            Some(dir) => {
                args.push(format!("--{prefix}cert-dir"));
                args.push(dir.display().to_string());
            }
            None => args.push(format!("--{prefix}tls-verify=false")),
        }
        if let Some((user, password)) = self.credentials() {
            args.push(format!("--{prefix}creds"));
            args.push(format!("{user}:{password}"));
        }
        args
    }

    /// A reqwest client that trusts this registry (no credentials attached).
    pub fn http_client(&self) -> anyhow::Result<reqwest::Client> {
        trusting_client(self.ca_file.as_deref())
    }

    /// The last `lines` lines of the registry's log (stdout and stderr).
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    /// Whether the registry process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.process.child.try_wait(), Ok(None))
    }
}

/// The `docker-registry` child process; killed and reaped on drop.
#[derive(Debug)]
struct Process {
    child: Child,
    log: PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    fn spawn(config_file: &Path, log: &Path) -> anyhow::Result<Process> {
        let log_file = std::fs::File::create(log)?;
        let mut command = Command::new(REGISTRY_BIN);
        command
            .arg("serve")
            .arg(config_file)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        // Distribution overrides its config from REGISTRY_* variables.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("REGISTRY_") {
                command.env_remove(key);
            }
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {REGISTRY_BIN}"))?;
        Ok(Process {
            child,
            log: log.to_path_buf(),
        })
    }

    /// Waits until the registry logged that it listens and `url` (`/v2/`) answers.
    async fn wait_ready(&mut self, host: &str, url: &str, ca: Option<&Path>) -> anyhow::Result<()> {
        let client = trusting_client(ca)?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "docker-registry exited ({status}) before serving:\n{}",
                    self.log_tail(20)
                );
            }
            // The log line proves it is *our* process on the port, not
            // whoever took the port after we released it.
            if self.log_tail(50).contains("listening on") {
                if let Ok(response) = client.get(url).send().await {
                    let status = response.status().as_u16();
                    if status == 200 || status == 401 {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "docker-registry on {host} did not answer /v2/ within {START_TIMEOUT:?}:\n{}",
                    self.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// A reqwest client trusting `ca` (if any) on top of the system roots; no redirects.
pub(crate) fn trusting_client(ca: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    Ok(trusting_builder(ca)?.build()?)
}

/// The builder behind [`trusting_client`].
pub(crate) fn trusting_builder(ca: Option<&Path>) -> anyhow::Result<reqwest::ClientBuilder> {
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
    }
    Ok(builder)
}

/// A free port on 127.0.0.1 (bound and released; callers retry on collision).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// An htpasswd line with a bcrypt hash, made by `htpasswd` (apache2-utils).
fn htpasswd_line(user: &str, password: &str) -> anyhow::Result<String> {
    let output = Command::new("htpasswd")
        .args(["-nbB", "-C", "5", user, password])
        .output()
        .context("running htpasswd (apt-get install -y apache2-utils)")?;
    if !output.status.success() {
        bail!(
            "htpasswd failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let line = String::from_utf8(output.stdout)?;
    Ok(format!("{}\n", line.trim()))
}

/// The client configuration for a registry at `host` (or a proxy in front of
/// one): HTTP unless `tls`, the CA (also as an extra CA, since a token realm
/// is on another port), credentials, no docker config.
pub(crate) fn client_config_for(
    host: &str,
    tls: bool,
    ca_file: Option<&Path>,
    credentials: Option<(&str, &str)>,
) -> ClientConfig {
    let mut config = ClientConfig {
        use_docker_config: false,
        request_timeout: Duration::from_secs(10),
        ..ClientConfig::default()
    };
    let ca_file = ca_file.map(Path::to_path_buf);
    config.registries.insert(
        host.to_string(),
        RegistrySettings {
            http: !tls,
            ca_file: ca_file.clone(),
        },
    );
    config.extra_ca_files.extend(ca_file);
    if let Some((username, password)) = credentials {
        config.credentials.insert(
            host.to_string(),
            Credentials {
                username: username.to_string(),
                password: password.to_string(),
            },
        );
    }
    config
}
