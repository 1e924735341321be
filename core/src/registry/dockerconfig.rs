//! Registry credentials from a docker config file (`config.json`): `auths`
//! entries (`auth`, `username`/`password`, `identitytoken`), and the
//! `credHelpers`/`credsStore` credential helpers (`docker-credential-<name>`).
//!
//! The file is read once when the client is built, so a malformed file is an
//! error at start-up naming the file rather than a surprise on the first 401.
//! Helpers run only when a registry actually asks for credentials.
//!
//! [`parse_auths`] applies the same rules to Kubernetes pull secrets
//! (`.dockerconfigjson`, legacy `.dockercfg`), so a credential means the
//! same thing wherever it is written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use tokio::io::AsyncWriteExt as _;

use super::{Credentials, RegistryError};
use crate::reference::DOCKER_HUB;

/// The server name Docker uses for Docker Hub in config files and helpers.
const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";
/// The user name docker config uses for an identity (refresh) token.
pub(crate) const IDENTITY_TOKEN_USER: &str = "<token>";
/// Helper output larger than this is not a credential.
const MAX_HELPER_OUTPUT: usize = 1 << 20;

/// A parsed docker config file.
#[derive(Debug, Clone, Default)]
pub(crate) struct DockerConfig {
    /// Where it was read from, for error messages.
    path: PathBuf,
    /// `auths`, keyed by normalised host.
    auths: BTreeMap<String, Credentials>,
    /// `credHelpers`, keyed by normalised host.
    helpers: BTreeMap<String, String>,
    /// `credsStore`: the helper for every other registry.
    store: Option<String>,
    /// `PATH` for finding helpers; `None` inherits the process's. Lets tests
    /// put fake helpers on a PATH without mutating the process environment.
    search_path: Option<std::ffi::OsString>,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    auths: BTreeMap<String, RawAuth>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

#[derive(Deserialize)]
struct HelperOutput {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Normalises a config key or registry name to `host[:port]`: drops the
/// scheme and any path, and maps Docker Hub's aliases to `docker.io`.
///
/// ```no_run
/// assert_eq!(imgate_core::registry::normalise_host("https://index.docker.io/v1/"), "docker.io");
/// ```
pub fn normalise_host(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_string()
        }
        _ => host,
    }
}

/// The default location: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub(crate) fn default_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".docker").join("config.json"))
}

impl DockerConfig {
    /// Reads `path`. A missing file is `Ok(None)` unless `required` (a file
    /// the user named); anything unreadable or malformed is a `Config` error.
    pub(crate) fn load(path: &Path, required: bool) -> Result<Option<Self>, RegistryError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && !required => return Ok(None),
            Err(err) => {
                return Err(RegistryError::Config(format!(
                    "cannot read docker config {}: {err}",
                    path.display()
                )))
            }
        };
        Self::parse(path, &bytes).map(Some)
    }

    /// Parses the bytes of a docker config file read from `path`.
    pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<Self, RegistryError> {
        let bad = |detail: String| {
            RegistryError::Config(format!(
                "invalid docker config {}: {detail}",
                path.display()
            ))
        };
        let raw: RawConfig = serde_json::from_slice(bytes).map_err(|e| bad(json_error(&e)))?;
        let auths = credentials_of(raw.auths).map_err(bad)?;
        let helpers = raw
            .cred_helpers
            .into_iter()
            .map(|(k, v)| (normalise_host(&k), v))
            .collect();
        Ok(DockerConfig {
            path: path.to_path_buf(),
            auths,
            helpers,
            store: raw.creds_store.filter(|s| !s.is_empty()),
            search_path: None,
        })
    }

    /// Credentials for `registry` (`host[:port]`, `docker.io` for Docker Hub):
    /// its `credHelpers` entry, else its `auths` entry, else the `credsStore`.
    pub(crate) async fn lookup(
        &self,
        registry: &str,
        timeout: Duration,
    ) -> Result<Option<Credentials>, RegistryError> {
        let host = normalise_host(registry);
        if let Some(helper) = self.helpers.get(&host) {
            return run_helper(
                helper,
                &server_name(&host),
                timeout,
                self.search_path.as_deref(),
            )
            .await;
        }
        if let Some(creds) = self.auths.get(&host) {
            return Ok(Some(creds.clone()));
        }
        if let Some(store) = &self.store {
            return run_helper(
                store,
                &server_name(&host),
                timeout,
                self.search_path.as_deref(),
            )
            .await;
        }
        Ok(None)
    }

    /// Where the config was read from.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// What is wrong with a JSON document, without quoting it: serde's message
/// can echo a value, and these files hold secrets.
fn json_error(err: &serde_json::Error) -> String {
    let what = match err.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not valid JSON",
        serde_json::error::Category::Data => "not shaped like a docker config",
        serde_json::error::Category::Eof => "truncated JSON",
    };
    format!("{what} (line {}, column {})", err.line(), err.column())
}

/// The credentials of `auths` entries, keyed by normalised host: an
/// identity token wins, then `auth` (base64 `user:password`), then
/// `username`/`password`; empty entries give none. Errors name the entry,
/// never its contents.
fn credentials_of(
    entries: BTreeMap<String, RawAuth>,
) -> Result<BTreeMap<String, Credentials>, String> {
    let mut auths = BTreeMap::new();
    for (key, entry) in entries {
        let host = normalise_host(&key);
        let creds = if let Some(token) = entry.identity_token.filter(|t| !t.is_empty()) {
            Some(Credentials {
                username: IDENTITY_TOKEN_USER.to_string(),
                password: token,
            })
        } else if let Some(auth) = entry.auth.filter(|a| !a.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|e| format!("auths.{key:?}.auth is not base64: {e}"))?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| format!("auths.{key:?}.auth is not UTF-8"))?;
            let (user, pass) = decoded
                .split_once(':')
                .ok_or_else(|| format!("auths.{key:?}.auth is not base64 of user:password"))?;
            Some(Credentials {
                username: user.to_string(),
                password: pass.to_string(),
            })
        } else {
            match (entry.username, entry.password) {
                (Some(username), Some(password)) if !username.is_empty() => {
                    Some(Credentials { username, password })
                }
                // An empty entry: Docker writes these next to a credsStore.
                _ => None,
            }
        };
        if let Some(creds) = creds {
            auths.insert(host, creds);
        }
    }
    Ok(auths)
}

/// Parses the credentials of a docker config document with the same rules
/// as `config.json`: `{"auths": {HOST: {...}}}` (a Kubernetes
/// `.dockerconfigjson`) or, when `legacy`, the bare `{HOST: {...}}` map of a
/// `.dockercfg`. Keys are normalised with [`normalise_host`]. The error
/// says what is wrong and never includes the contents.
///
/// ```no_run
/// let creds = imgate_core::registry::parse_auths(br#"{"auths": {}}"#, false).unwrap();
/// assert!(creds.is_empty());
/// ```
pub fn parse_auths(bytes: &[u8], legacy: bool) -> Result<BTreeMap<String, Credentials>, String> {
    let entries = if legacy {
        serde_json::from_slice::<BTreeMap<String, RawAuth>>(bytes)
    } else {
        serde_json::from_slice::<RawConfig>(bytes).map(|raw| raw.auths)
    };
    credentials_of(entries.map_err(|e| json_error(&e))?)
}

/// The server name a credential helper stores a registry under.
fn server_name(host: &str) -> String {
    if host == DOCKER_HUB {
        DOCKER_HUB_SERVER.to_string()
    } else {
        host.to_string()
    }
}

/// Runs `docker-credential-<helper> get` with `server` on stdin. "Not found"
/// answers are `Ok(None)` (anonymous access may still work); a helper that
/// cannot run or answers garbage is a `Config` error naming it.
async fn run_helper(
    helper: &str,
    server: &str,
    timeout: Duration,
    search_path: Option<&std::ffi::OsStr>,
) -> Result<Option<Credentials>, RegistryError> {
    let program = format!("docker-credential-{helper}");
    let err = |detail: String| {
        RegistryError::Config(format!(
            "credential helper {program} for {server}: {detail}"
        ))
    };
    let mut command = tokio::process::Command::new(&program);
    if let Some(path) = search_path {
        // std resolves the program with the child's PATH when it is set.
        command.env("PATH", path);
    }
    let mut child = command
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| err(format!("cannot run: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .await
            .map_err(|e| err(format!("cannot write to it: {e}")))?;
        // Dropping stdin closes it so the helper sees end of input.
    }
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| err(format!("no answer within {timeout:?}")))?
        .map_err(|e| err(e.to_string()))?;
    let stdout =
        String::from_utf8_lossy(&output.stdout[..output.stdout.len().min(MAX_HELPER_OUTPUT)])
            .into_owned();
    if !output.status.success() {
        // The helpers' protocol reports a missing entry this way (exit 1).
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let said = if stdout.trim().is_empty() {
            stderr.trim().to_string()
        } else {
            stdout.trim().to_string()
        };
        return Err(err(format!("failed ({}): {said}", output.status)));
    }
    let parsed: HelperOutput = serde_json::from_str(stdout.trim()).map_err(|e| {
        err(format!(
            "answered something that is not credentials JSON: {e}"
        ))
    })?;
    if parsed.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials {
        username: parsed.username,
        password: parsed.secret,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<DockerConfig, RegistryError> {
        DockerConfig::parse(Path::new("/tmp/config.json"), json.as_bytes())
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[rstest::rstest]
    #[case("https://index.docker.io/v1/", "docker.io")]
    #[case("index.docker.io", "docker.io")]
    #[case("docker.io", "docker.io")]
    #[case("registry-1.docker.io", "docker.io")]
    #[case("http://localhost:5000", "localhost:5000")]
    #[case("https://ghcr.io/v2/", "ghcr.io")]
    #[case("Registry.Example.com:443", "registry.example.com:443")]
    fn normalises_hosts(#[case] key: &str, #[case] host: &str) {
        assert_eq!(normalise_host(key), host);
    }

    #[tokio::test]
    async fn reads_auths_entries() {
        let json = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "localhost:5000": {{"username": "bob", "password": "pw:with:colons"}},
                "ghcr.io": {{"identitytoken": "refresh-me"}},
                "empty.example": {{}}
            }}}}"#,
            b64("alice:s3cret")
        );
        let config = parse(&json).unwrap();
        let t = Duration::from_secs(5);
        let hub = config.lookup("docker.io", t).await.unwrap().unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("alice", "s3cret")
        );
        let local = config.lookup("localhost:5000", t).await.unwrap().unwrap();
        assert_eq!(local.username, "bob");
        assert_eq!(local.password, "pw:with:colons");
        let ghcr = config.lookup("ghcr.io", t).await.unwrap().unwrap();
        assert_eq!(ghcr.username, IDENTITY_TOKEN_USER);
        assert_eq!(ghcr.password, "refresh-me");
        assert!(config.lookup("empty.example", t).await.unwrap().is_none());
        assert!(config.lookup("quay.io", t).await.unwrap().is_none());
    }

    #[rstest::rstest]
    #[case("not json")]
    #[case(r#"{"auths": {"x.io": {"auth": "%%%not-base64"}}}"#)]
    #[case(r#"{"auths": {"x.io": {"auth": "bm9jb2xvbg=="}}}"#)] // "nocolon"
    #[case(r#"{"auths": []}"#)]
    fn malformed_config_names_the_file(#[case] json: &str) {
        let err = parse(json).unwrap_err();
        assert!(matches!(err, RegistryError::Config(_)), "{err}");
        assert!(err.to_string().contains("/tmp/config.json"), "{err}");
    }

    #[test]
    fn pull_secret_documents_follow_the_same_rules() {
        let json = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}", "username": "other", "password": "x"}},
                "registry.hub.docker.com": {{"identitytoken": "tok", "auth": "{}"}}
            }}}}"#,
            b64("alice:s3:cret"),
            b64("bob:pw")
        );
        let creds = parse_auths(json.as_bytes(), false).unwrap();
        // Both Hub aliases land on docker.io; `auth` wins over username/password,
        // an identity token over both.
        assert_eq!(creds.len(), 1);
        assert_eq!(creds["docker.io"].username, IDENTITY_TOKEN_USER);
        let json = format!(
            r#"{{"quay.io": {{"auth": "{}", "username": "other", "password": "x", "email": "a@b"}}}}"#,
            b64("alice:s3:cret")
        );
        let creds = parse_auths(json.as_bytes(), true).unwrap();
        assert_eq!(creds["quay.io"].username, "alice");
        assert_eq!(creds["quay.io"].password, "s3:cret");
        for bad in [
            r#"{"auths": {"h": "secret-stuff"}}"#,
            r#"{"auths": {"h": {"auth": "c2VjcmV0LXN0dWZm"}}}"#,
            "{secret-stuff",
        ] {
            let err = parse_auths(bad.as_bytes(), false).unwrap_err();
            assert!(!err.contains("secret-stuff"), "{err}");
        }
    }

    #[test]
    fn missing_file_is_none_unless_required() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        assert!(DockerConfig::load(&path, false).unwrap().is_none());
        let err = DockerConfig::load(&path, true).unwrap_err();
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn credential_helpers_run_as_processes() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        // A fake helper: echoes the server it was asked about back as the user
        // name, and knows nothing about "unknown.example".
        let script = r#"#!/bin/sh
[ "$1" = get ] || exit 3
read -r server
case "$server" in
  unknown.example) echo "credentials not found in native keychain"; exit 1;;
  broken.example) echo "boom" >&2; exit 2;;
esac
printf '{"ServerURL":"%s","Username":"user-for-%s","Secret":"secret-%s"}\n' "$server" "$server" "$0"
"#;
        for name in ["imgatetest", "imgatestore"] {
            let path = dir.path().join(format!("docker-credential-{name}"));
            std::fs::write(&path, script).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut config = parse(
            r#"{"credHelpers": {"reg.example": "imgatetest", "unknown.example": "imgatetest",
                                "broken.example": "imgatetest", "missing.example": "nosuchhelperxyz"},
                "credsStore": "imgatestore"}"#,
        )
        .unwrap();
        // The helpers come first on the PATH the helper is looked up with
        // (`sh` and `printf` still come from the system directories).
        let old_path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![dir.path().to_path_buf()];
        paths.extend(std::env::split_paths(&old_path));
        config.search_path = Some(std::env::join_paths(paths).unwrap());
        let t = Duration::from_secs(10);

        let creds = config.lookup("reg.example", t).await.unwrap().unwrap();
        assert_eq!(creds.username, "user-for-reg.example");
        assert!(creds.password.ends_with("docker-credential-imgatetest"));
        // Docker Hub goes to the store under Docker's server name.
        let hub = config.lookup("docker.io", t).await.unwrap().unwrap();
        assert_eq!(hub.username, format!("user-for-{DOCKER_HUB_SERVER}"));
        assert!(hub.password.ends_with("docker-credential-imgatestore"));
        assert!(config.lookup("unknown.example", t).await.unwrap().is_none());
        let err = config.lookup("broken.example", t).await.unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
        let err = config.lookup("missing.example", t).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("docker-credential-nosuchhelperxyz"),
            "{err}"
        );
    }
}
