//! The image as pushed: pulled back with skopeo, unpacked, and held against
//! `scripts/image/rootfs.sh`'s layout, the config `scripts/build-image.sh`
//! sets, and the Dockerfile's final stage (read here, since no Docker engine
//! runs on these machines), so the two builds cannot drift apart.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use imgate_tests::bin::workspace_root;
use imgate_tests::image::sha256_digest;
use imgate_tests::skopeo::skopeo;
use imgate_tests::Registry;
use serde_json::{json, Value};

use super::{must, IMAGE_USER};

/// A pulled and unpacked image.
pub struct Pulled {
    /// The manifest's digest.
    pub manifest_digest: String,
    /// The image config.
    pub config: Value,
    /// Manifest, config and layers as stored in the registry.
    pub compressed_bytes: u64,
    /// The unpacked files' sizes.
    pub unpacked_bytes: u64,
    /// The unpacked root filesystem.
    pub root: PathBuf,
}

/// Pulls `pinned` into an OCI layout under `dir` and unpacks its layers into
/// `dir/root`, keeping modes and owners.
pub async fn pull_and_unpack(
    registry: &Registry,
    pinned: &str,
    cert_dir: &Path,
    dir: &Path,
) -> Pulled {
    let layout = dir.join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    // skopeo refuses `repo:tag@digest`: the digest alone names it.
    let (name, digest) = pinned.rsplit_once('@').unwrap();
    let repo = name
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .map_or(name, |(repo, _)| repo);
    skopeo(&[
        "copy".into(),
        "--quiet".into(),
        "--preserve-digests".into(),
        "--src-cert-dir".into(),
        cert_dir.display().to_string(),
        format!("docker://{repo}@{digest}"),
        format!("oci:{}:image", layout.display()),
    ])
    .await
    .unwrap_or_else(|e| panic!("pulling {pinned} from {}: {e:#}", registry.host()));
    let blob = |digest: &str| {
        std::fs::read(
            layout
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest_bytes = blob(&manifest_digest);
    assert_eq!(sha256_digest(&manifest_bytes), manifest_digest);
    let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    assert_eq!(
        manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json",
        "{manifest}"
    );
    let config =
        serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    let compressed_bytes = manifest_bytes.len() as u64
        + manifest["config"]["size"].as_u64().unwrap()
        + layers
            .iter()
            .map(|l| l["size"].as_u64().unwrap())
            .sum::<u64>();

    let root = dir.join("root");
    std::fs::create_dir(&root).unwrap();
    for layer in layers {
        assert_eq!(
            layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip",
            "{layer}"
        );
        let file = layout.join("blobs/sha256").join(
            layer["digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:"),
        );
        let mut tar = Command::new("tar");
        tar.args(["--numeric-owner", "--same-owner", "-xpzf"])
            .arg(&file)
            .arg("-C")
            .arg(&root);
        must(tar, "unpacking a layer");
    }
    let unpacked_bytes = entries(&root).values().map(|e| e.size).sum();
    Pulled {
        manifest_digest,
        config,
        compressed_bytes,
        unpacked_bytes,
        root,
    }
}

/// One file of the unpacked image.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    owner: (u32, u32),
    size: u64,
}

/// Every path under `root` (relative, `/`-separated).
fn entries(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for item in std::fs::read_dir(&dir).unwrap() {
            let path = item.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let kind = if meta.is_dir() {
                stack.push(path.clone());
                "dir"
            } else if meta.is_file() {
                "file"
            } else if meta.file_type().is_symlink() {
                "symlink"
            } else {
                "other"
            };
            let name = path.strip_prefix(root).unwrap().display().to_string();
            let size = if kind == "file" { meta.len() } else { 0 };
            out.insert(
                name,
                Entry {
                    kind,
                    mode: mode(&path),
                    owner: (meta.uid(), meta.gid()),
                    size,
                },
            );
        }
    }
    out
}

/// Exactly `scripts/image/rootfs.sh`'s files, owned by root, with the static
/// binary that was built; no shell, nothing that loads libraries.
pub fn assert_runtime_layout(root: &Path, static_bin: &Path) {
    let found = entries(root);
    let expected: BTreeMap<&str, (&str, u32)> = [
        ("imgate", ("file", 0o755)),
        ("etc", ("dir", 0o755)),
        ("etc/passwd", ("file", 0o644)),
        ("etc/group", ("file", 0o644)),
        ("etc/ssl", ("dir", 0o755)),
        ("etc/ssl/certs", ("dir", 0o755)),
        ("etc/ssl/certs/ca-certificates.crt", ("file", 0o644)),
        ("tmp", ("dir", 0o1777)),
    ]
    .into_iter()
    .collect();
    let names: Vec<&str> = found.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        expected.keys().copied().collect::<Vec<_>>(),
        "the image's files"
    );
    for (name, entry) in &found {
        let (kind, mode) = expected[name.as_str()];
        assert_eq!(
            (entry.kind, entry.mode, entry.owner),
            (kind, mode, (0, 0)),
            "{name}: {entry:?}"
        );
    }
    assert_eq!(
        sha256_digest(&std::fs::read(root.join("imgate")).unwrap()),
        sha256_digest(&std::fs::read(static_bin).unwrap()),
        "the image ships the binary it was given"
    );
    let ldd = Command::new("ldd")
        .arg(root.join("imgate"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&ldd.stdout) + String::from_utf8_lossy(&ldd.stderr);
    assert!(
        said.contains("statically linked") || said.contains("not a dynamic executable"),
        "ldd: {said}"
    );

    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("nonroot:x:65532:65532:")),
        "{passwd}"
    );
    assert!(
        passwd.lines().all(|l| l.ends_with(":/sbin/nologin")),
        "no login shell: {passwd}"
    );
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    assert!(group.lines().any(|l| l == "nonroot:x:65532:"), "{group}");
    let bundle = std::fs::read_to_string(root.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
    assert!(
        bundle.matches("BEGIN CERTIFICATE").count() > 50,
        "a CA bundle"
    );

    // It runs as the image's user with an empty environment and no /lib.
    let mut version = Command::new("/usr/sbin/chroot");
    version
        .arg(format!("--userspec={IMAGE_USER}"))
        .arg(root)
        .args(["/imgate", "--version"])
        .env_clear();
    let printed = must(version, "imgate --version in the image root");
    assert_eq!(
        printed.trim(),
        format!("imgate {}", workspace_field("version"))
    );
}

/// The labels `scripts/build-image.sh` sets: Cargo.toml's version and
/// repository, git's HEAD.
fn expected_labels() -> Value {
    json!({
        "org.opencontainers.image.title": "imgate",
        "org.opencontainers.image.description": "Supply-chain gate for container images: cosign-compatible signing, verification, digest pinning and a Kubernetes admission webhook",
        "org.opencontainers.image.licenses": workspace_field("license"),
        "org.opencontainers.image.version": workspace_field("version"),
        "org.opencontainers.image.revision": git_head(),
        "org.opencontainers.image.source": workspace_field("repository"),
    })
}

/// The image config: the user, entrypoint, command, ports and labels.
pub fn assert_config(config: &Value) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    assert_eq!(
        (config["os"].as_str(), config["architecture"].as_str()),
        (Some("linux"), Some(arch)),
        "{config}"
    );
    let c = &config["config"];
    assert_eq!(c["User"], IMAGE_USER, "{config}");
    assert_eq!(c["Entrypoint"], json!(["/imgate"]), "{config}");
    assert_eq!(c["Cmd"], json!(["webhook"]), "{config}");
    assert_eq!(
        c["ExposedPorts"],
        json!({"8443/tcp": {}, "9090/tcp": {}}),
        "{config}"
    );
    assert_eq!(c["Labels"], expected_labels(), "{config}");
    assert!(
        c.get("Env").is_none() && c.get("WorkingDir").is_none(),
        "nothing else set: {config}"
    );
}

/// The Dockerfile's final stage says what the buildah image's config says,
/// and ships the same root filesystem.
pub fn assert_matches_dockerfile(config: &Value) {
    let text = std::fs::read_to_string(workspace_root().join("Dockerfile")).unwrap();
    let stages = dockerfile_stages(&text);
    let (from, last) = stages.last().unwrap();
    assert_eq!(from, "scratch", "the final stage is FROM scratch");
    let build = &stages[stages.len() - 2].1;
    assert!(
        build
            .iter()
            .any(|(k, v)| k == "RUN" && v.contains("scripts/image/rootfs.sh /rootfs ")),
        "the build stage writes the rootfs with scripts/image/rootfs.sh"
    );
    // The release passes IMGATE_REVISION; the other ARGs' defaults must be
    // Cargo.toml's.
    let mut args = BTreeMap::new();
    let mut labels = serde_json::Map::new();
    let (mut copies, mut user, mut ports, mut entrypoint, mut cmd) =
        (vec![], None, json!({}), None, None);
    for (keyword, value) in last {
        match keyword.as_str() {
            "ARG" => {
                let (name, default) = value.split_once('=').unwrap();
                args.insert(format!("${{{name}}}"), default.to_string());
            }
            "LABEL" => {
                for (k, v) in label_pairs(value) {
                    labels.insert(k, args.get(&v).cloned().unwrap_or(v).into());
                }
            }
            "COPY" => copies.push(value.clone()),
            "USER" => user = Some(value.clone()),
            "EXPOSE" => {
                for port in value.split_whitespace() {
                    let port = if port.contains('/') { port.to_string() } else { format!("{port}/tcp") };
                    ports[port] = json!({});
                }
            }
            "ENTRYPOINT" => entrypoint = Some(serde_json::from_str::<Value>(value).unwrap()),
            "CMD" => cmd = Some(serde_json::from_str::<Value>(value).unwrap()),
            other => panic!("the Dockerfile's final stage has {other} {value}: scripts/build-image.sh must set the same"),
        }
    }
    assert_eq!(
        args.get("${IMGATE_VERSION}"),
        Some(&workspace_field("version"))
    );
    assert_eq!(
        args.get("${IMGATE_SOURCE}"),
        Some(&workspace_field("repository"))
    );
    labels.insert(
        "org.opencontainers.image.revision".into(),
        git_head().into(),
    );
    let c = &config["config"];
    assert_eq!(Value::Object(labels), c["Labels"], "LABEL");
    assert_eq!(copies, ["--from=build /rootfs/ /"], "COPY: the rootfs only");
    assert_eq!(user.as_deref(), c["User"].as_str(), "USER");
    assert_eq!(ports, c["ExposedPorts"], "EXPOSE");
    assert_eq!(entrypoint.as_ref(), Some(&c["Entrypoint"]), "ENTRYPOINT");
    assert_eq!(cmd.as_ref(), Some(&c["Cmd"]), "CMD");
}

/// The stages of a Dockerfile: each FROM's image, and its instructions
/// (keyword, arguments) with continuation lines joined and comments dropped.
fn dockerfile_stages(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(trimmed);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for instruction in instructions {
        let (keyword, rest) = instruction
            .split_once(char::is_whitespace)
            .unwrap_or((&instruction, ""));
        let (keyword, rest) = (keyword.to_ascii_uppercase(), rest.trim().to_string());
        if keyword == "FROM" {
            let image = rest
                .split_whitespace()
                .find(|w| !w.starts_with("--"))
                .unwrap()
                .to_string();
            stages.push((image, Vec::new()));
        } else if let Some((_, body)) = stages.last_mut() {
            body.push((keyword, rest));
        }
    }
    stages
}

/// `k="v" k2=v2 ...` of a LABEL instruction.
fn label_pairs(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once('=')
            .unwrap_or_else(|| panic!("LABEL {text}"));
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"').unwrap();
                (&quoted[..end], &quoted[end + 1..])
            }
            None => after.split_once(char::is_whitespace).unwrap_or((after, "")),
        };
        pairs.push((key.trim().to_string(), value.to_string()));
        rest = after.trim();
    }
    pairs
}

/// A field of Cargo.toml's `[workspace.package]`.
pub fn workspace_field(name: &str) -> String {
    let text = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
    let section = text.split("[workspace.package]").nth(1).unwrap();
    section
        .lines()
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| {
            l.strip_prefix(name)?
                .trim()
                .strip_prefix('=')?
                .trim()
                .strip_prefix('"')?
                .strip_suffix('"')
        })
        .unwrap_or_else(|| panic!("no {name} in [workspace.package]"))
        .to_string()
}

/// `git rev-parse HEAD` of the workspace.
fn git_head() -> String {
    let mut git = Command::new("git");
    git.args(["rev-parse", "HEAD"]);
    must(git, "git rev-parse HEAD").trim().to_string()
}

/// The mode bits of `path` without the file type.
fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}
