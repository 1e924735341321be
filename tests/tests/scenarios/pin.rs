//! Scenarios: pin. The real `imgate pin` against the real registry rewrites
//! the fixtures in `fixtures/pin/` so that only image values change (the
//! expected text is built here by replacing the exact image texts with the
//! digests the registry stored), resolves each distinct image once,
//! `--check` exits 0/1 listing FILE:LINE: IMAGE, `-w` writes in place, and
//! bad YAML or a failed resolution exits 2 naming the file and line with no
//! file touched.

// Tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime};

use imgate_tests::bin::workspace_root;
use imgate_tests::{
    run_imgate, CountingProxy, ImageBuilder, PushWith, PushedImage, Registry, Variant,
};

/// The fixture's placeholder for the registry host.
const HOST: &str = "REGISTRY_HOST";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs the binary off the async runtime's worker thread.
async fn imgate(args: Vec<String>, stdin: Option<Vec<u8>>) -> Output {
    tokio::task::spawn_blocking(move || run_imgate(&args, &[], stdin.as_deref()))
        .await
        .unwrap()
        .unwrap()
}

fn pin_args(registry_args: &[String], extra: &[&str]) -> Vec<String> {
    let mut args = vec!["pin".to_string()];
    args.extend(registry_args.iter().cloned());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A fixture with the registry host filled in.
fn fixture(name: &str, host: &str) -> String {
    let path = workspace_root().join("fixtures/pin").join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .replace(HOST, host)
}

/// The images of `sample.yaml` that must be pinned: (repo, tag), built as a
/// single image or an index.
const SAMPLE_IMAGES: &[(&str, &str, bool)] = &[
    ("team/init", "1.0", false),
    ("team/web", "v1", true),
    ("team/debug", "latest", false),
    ("team/job", "2", true),
];

async fn push_all(
    registry: &Registry,
    images: &[(&str, &str, bool)],
    label: &str,
) -> Vec<PushedImage> {
    let mut pushed = Vec::new();
    for (repo, tag, index) in images {
        let builder = ImageBuilder::new(&format!("{label}-{repo}-{tag}"));
        let image = if *index {
            builder.index()
        } else {
            builder.image()
        };
        pushed.push(
            image
                .push(registry, repo, tag, PushWith::Http)
                .await
                .unwrap(),
        );
    }
    pushed
}

/// `text` with every occurrence of each `host/repo:tag` replaced by its
/// pinned form: computed without imgate, from what the registry stored.
fn expected_pinned(text: &str, host: &str, pushed: &[PushedImage]) -> String {
    let mut out = text.to_string();
    for image in pushed {
        // The reference names the registry; the text may name a proxy in front of it.
        let (_, repo_tag) = image.reference.split_once('/').unwrap();
        let name = format!("{host}/{repo_tag}");
        out = out.replace(&name, &format!("{name}@{}", image.digest));
    }
    out
}

/// `FILE:LINE: IMAGE` for every line of `text` naming one of `images`.
fn expected_check_lines(file: &str, text: &str, images: &[String]) -> Vec<String> {
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        for image in images {
            if line.contains(image.as_str()) {
                lines.push(format!("{file}:{}: {image}", i + 1));
            }
        }
    }
    lines
}

fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn pin_manifest_changes_only_image_values_and_resolves_each_image_once() {
    let registry = Registry::start(Variant::Http).await.unwrap();
    let pushed = push_all(&registry, SAMPLE_IMAGES, "pin-stdout").await;
    // Through a counting proxy: its host is what the manifest names.
    let proxy = CountingProxy::start(&registry).await.unwrap();
    let host = proxy.host();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sample.yaml");
    let original = fixture("sample.yaml", &host);
    std::fs::write(&file, &original).unwrap();

    let output = imgate(pin_args(&proxy.cli_args(), &[file.to_str().unwrap()]), None).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let expected = expected_pinned(&original, &host, &pushed);
    assert_ne!(expected, original);
    assert_eq!(
        text(&output.stdout),
        expected,
        "only the image values change"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        original,
        "stdout mode leaves the file alone"
    );
    assert!(!text(&output.stdout).contains("not-an-image:v1@"));

    // team/web:v1 appears three times (anchor, alias, Deployment) yet each
    // distinct image costs one manifest GET.
    let gets: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET ") && r.contains("/manifests/"))
        .collect();
    for (repo, tag, _) in SAMPLE_IMAGES {
        let wanted = format!("GET /v2/{repo}/manifests/{tag}");
        assert_eq!(
            gets.iter().filter(|r| **r == wanted).count(),
            1,
            "{wanted} in {gets:?}"
        );
    }
    assert!(
        !gets.iter().any(|r| r.contains("team/pinned")),
        "already pinned: not resolved"
    );
    assert!(!gets.iter().any(|r| r.contains("not-an-image")), "{gets:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn check_lists_unpinned_then_write_then_check_passes() {
    let registry = Registry::start(Variant::Http).await.unwrap();
    let pushed = push_all(&registry, SAMPLE_IMAGES, "pin-check").await;
    let host = registry.host().to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sample.yaml");
    let original = fixture("sample.yaml", &host);
    std::fs::write(&file, &original).unwrap();
    let name = file.to_str().unwrap();

    // --check needs no registry: no registry flags given.
    let output = imgate(pin_args(&[], &["--check", name]), None).await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let images: Vec<String> = pushed.iter().map(|p| p.reference.clone()).collect();
    let listed: Vec<String> = text(&output.stdout).lines().map(str::to_string).collect();
    // The alias line is not listed: the image is written (and fixed) at the anchor.
    assert_eq!(listed, expected_check_lines(name, &original, &images));
    assert_eq!(listed.len(), 5, "{listed:?}");

    // -w keeps the file's permissions (it replaces the file by a rename).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let output = imgate(pin_args(&registry.cli_args(), &["-w", name]), None).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(output.stdout.is_empty(), "{}", text(&output.stdout));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        expected_pinned(&original, &host, &pushed)
    );
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(
        leftovers.len(),
        1,
        "no temp file left behind: {leftovers:?}"
    );

    let output = imgate(pin_args(&[], &["--check", name]), None).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stdout));
    assert!(output.stdout.is_empty());

    // Pinning a pinned file changes nothing and touches nothing.
    let before = mtime(&file);
    std::thread::sleep(Duration::from_millis(20));
    let output = imgate(pin_args(&registry.cli_args(), &["-w", name]), None).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(mtime(&file), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_yaml_exits_2_naming_file_and_line_and_touches_nothing() {
    let registry = Registry::start(Variant::Http).await.unwrap();
    push_all(&registry, SAMPLE_IMAGES, "pin-bad").await;
    let host = registry.host().to_string();
    let dir = tempfile::tempdir().unwrap();
    // The good file sorts first: it would be written if imgate wrote as it went.
    let good = dir.path().join("a-good.yaml");
    let bad = dir.path().join("b-bad.yaml");
    std::fs::write(&good, fixture("sample.yaml", &host)).unwrap();
    std::fs::write(&bad, fixture("bad.yaml", &host)).unwrap();
    let snapshot = |p: &PathBuf| (std::fs::read(p).unwrap(), mtime(p));
    let (good_before, bad_before) = (snapshot(&good), snapshot(&bad));
    std::thread::sleep(Duration::from_millis(20));

    let output = imgate(
        pin_args(&registry.cli_args(), &["-w", dir.path().to_str().unwrap()]),
        None,
    )
    .await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(bad.to_str().unwrap()),
        "names the file: {stderr}"
    );
    assert!(stderr.contains("line 8"), "names the line: {stderr}");
    assert!(stderr.contains("invalid YAML"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(snapshot(&good), good_before, "no file touched");
    assert_eq!(snapshot(&bad), bad_before);
}

#[tokio::test(flavor = "multi_thread")]
async fn resolution_failure_exits_2_naming_image_and_place_and_touches_nothing() {
    let registry = Registry::start(Variant::Http).await.unwrap();
    push_all(&registry, &[("team/web", "v1", false)], "pin-missing").await;
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pod.yaml");
    let original = format!(
        "kind: Pod\nspec:\n  containers:\n  - image: {host}/team/web:v1\n  - image: {host}/team/missing:v9\n"
    );
    std::fs::write(&file, &original).unwrap();
    let before = mtime(&file);
    std::thread::sleep(Duration::from_millis(20));

    let output = imgate(
        pin_args(&registry.cli_args(), &["-w", file.to_str().unwrap()]),
        None,
    )
    .await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{host}/team/missing:v9")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{}:5", file.display())),
        "{stderr}"
    );
    assert!(
        !stderr.contains("team/web:v1 at"),
        "only the failure is reported: {stderr}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), original);
    assert_eq!(mtime(&file), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn dockerfile_from_lines_are_pinned() {
    let registry = Registry::start(Variant::Http).await.unwrap();
    let images = [("team/build", "1", false), ("team/runtime", "1", true)];
    let pushed = push_all(&registry, &images, "pin-dockerfile").await;
    let host = registry.host().to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Dockerfile");
    let original = fixture("Dockerfile", &host);
    std::fs::write(&file, &original).unwrap();

    let output = imgate(
        pin_args(&registry.cli_args(), &["-w", file.to_str().unwrap()]),
        None,
    )
    .await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("${BASE} uses a variable"),
        "templated FROM is reported: {stderr}"
    );
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(written, expected_pinned(&original, &host, &pushed));
    assert!(written.contains("FROM build AS test\nFROM scratch\nFROM ${BASE}\n"));
    assert!(written.contains(&format!("FROM {host}/team/heredoc-not-an-image:1\n")));
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_updates_digests_only_when_asked() {
    let registry = Registry::start(Variant::Token).await.unwrap();
    let first = push_all(&registry, &[("team/app", "v1", false)], "pin-old").await;
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deploy.yml");
    let template = "kind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n      - image: \"IMAGE\"   # keep me\n";
    std::fs::write(&file, template.replace("IMAGE", &first[0].reference)).unwrap();
    let name = file.to_str().unwrap();

    let output = imgate(pin_args(&registry.cli_args(), &["-w", name]), None).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let pinned_old = template.replace("IMAGE", &first[0].pinned());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), pinned_old);

    // The tag moves to a new image.
    let second = push_all(&registry, &[("team/app", "v1", false)], "pin-new").await;
    assert_ne!(first[0].digest, second[0].digest);

    let output = imgate(pin_args(&registry.cli_args(), &["-w", name]), None).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        pinned_old,
        "pinned: left alone"
    );

    let output = imgate(
        pin_args(&registry.cli_args(), &["--check", "--refresh", name]),
        None,
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        format!(
            "{name}:6: {} (now {})\n",
            first[0].pinned(),
            second[0].pinned()
        )
    );

    let output = imgate(
        pin_args(&registry.cli_args(), &["--refresh", "-w", name]),
        None,
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        template.replace("IMAGE", &second[0].pinned())
    );
    assert!(host.starts_with("127.0.0.1:"));
}

#[tokio::test(flavor = "multi_thread")]
async fn stdin_crlf_and_directory_walk() {
    let registry = Registry::start(Variant::Http).await.unwrap();
    let pushed = push_all(&registry, SAMPLE_IMAGES, "pin-stdin").await;
    let host = registry.host().to_string();

    // CRLF through stdin: every \r\n stays.
    let crlf = fixture("sample.yaml", &host).replace('\n', "\r\n");
    let output = imgate(
        pin_args(&registry.cli_args(), &["-"]),
        Some(crlf.clone().into_bytes()),
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), expected_pinned(&crlf, &host, &pushed));

    // A directory: *.yaml and *.yml, sorted, recursively; others and hidden skipped.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let a = format!("kind: Pod\nspec: {{containers: [{{image: {host}/team/init:1.0}}]}}\n");
    let b = format!("---\nkind: Job\nspec:\n  template:\n    spec:\n      containers:\n      - image: {host}/team/job:2\n");
    std::fs::write(dir.path().join("sub/b.yml"), &b).unwrap();
    std::fs::write(dir.path().join("a.yaml"), &a).unwrap();
    std::fs::write(dir.path().join("c.txt"), &a).unwrap();
    std::fs::write(
        dir.path().join(".hidden.yaml"),
        "kind: Pod\nspec: {containers: [{image: Bad:Image}]}\n",
    )
    .unwrap();
    let output = imgate(
        pin_args(&registry.cli_args(), &[dir.path().to_str().unwrap()]),
        None,
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    // b starts with its own `---`, so no separator is added.
    let want = expected_pinned(&format!("{a}{b}"), &host, &pushed);
    assert_eq!(text(&output.stdout), want);
}
