//! Scenarios: imgate's release, checked offline. The predicates it attests
//! (`scripts/release/predicates.py`: a CycloneDX SBOM, an SLSA provenance)
//! pass independent readers; the release workflows (`.github/` and
//! `.forgejo/`) pass the GitHub workflow schema and shellcheck, sign,
//! attest and verify what they pushed with real imgate commands, and are
//! what the docs say they run; deploy/ pins imgate's image by digest.

// Tests: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use imgate_tests::bin::{python, workspace_root};
use serde_json::Value;

use crate::deploy::docs::{check_invocation, imgate_invocations};
use crate::deploy::DeployTree;

const GITHUB: &str = ".github/workflows/release.yml";
const FORGEJO: &str = ".forgejo/workflows/release.yml";
const PINNED: &str = "registry.example.com/platform/imgate:0.1.0@sha256:\
                      0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn run(command: &mut Command) -> Output {
    command
        .current_dir(workspace_root())
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"))
}

fn ok(command: &mut Command) -> String {
    let out = run(command);
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn predicates(args: &[&str]) -> Command {
    let mut command = Command::new(python());
    command
        .arg(workspace_root().join("scripts/release/predicates.py"))
        .args(args);
    command
}

#[test]
fn release_predicates_are_cyclonedx_and_slsa_provenance_of_the_build() {
    let dir = tempfile::tempdir().unwrap();
    let out = |name: &str| dir.path().join(name).display().to_string();
    let head = ok(Command::new("git").args(["rev-parse", "HEAD"]))
        .trim()
        .to_string();
    let builder = "https://example.invalid/imgate/tests/release";
    for recipe in ["static", "dockerfile"] {
        let (sbom, provenance) = (
            out(&format!("{recipe}.cdx.json")),
            out(&format!("{recipe}.prov.json")),
        );
        ok(&mut predicates(&[
            "sbom", "--recipe", recipe, "--out", &sbom,
        ]));
        ok(&mut predicates(&[
            "provenance",
            "--recipe",
            recipe,
            "--image",
            PINNED,
            "--builder-id",
            builder,
            "--out",
            &provenance,
        ]));
        let summary: Value = serde_json::from_str(&ok(Command::new(python())
            .arg(workspace_root().join("tests/tests/scenarios/release/check_predicates.py"))
            .args([&sbom, &provenance])
            .arg(workspace_root().join("Cargo.lock"))
            .arg(&head)))
        .unwrap();
        let components: Vec<&str> = summary["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(summary["root"], "imgate", "{summary}");
        for shipped in [
            "imgate-core",
            "imgate-keys",
            "imgate-webhook",
            "reqwest",
            "rustls",
            "ring",
            "tokio",
            "sigstore-verify",
        ] {
            assert!(
                components.contains(&shipped),
                "{recipe}: {shipped} is in the binary: {components:?}"
            );
        }
        // Test-only crates, procedural macros and build-only crates are not.
        for absent in [
            "imgate-tests",
            "criterion",
            "rstest",
            "serde_derive",
            "clap_derive",
            "cc",
            "imgate",
        ] {
            assert!(
                !components.contains(&absent),
                "{recipe}: {absent} is not in the binary: {components:?}"
            );
        }
        assert_eq!(summary["builder"], builder);
        let external = &summary["external"];
        assert_eq!(external["image"], PINNED, "{summary}");
        let expected_recipe = if recipe == "static" {
            "scripts/build-static.sh"
        } else {
            "Dockerfile"
        };
        assert_eq!(external["recipe"], expected_recipe, "{summary}");
        assert_eq!(external["profile"], "image", "{summary}");
    }

    // Bad input: a tag is not a pushed image; a bad revision is refused.
    let tagged = run(&mut predicates(&[
        "provenance",
        "--image",
        "registry.example.com/platform/imgate:0.1.0",
        "--builder-id",
        builder,
        "--out",
        &out("x.json"),
    ]));
    assert_eq!(tagged.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&tagged.stderr).contains("by digest"),
        "{tagged:?}"
    );
    let revision = run(&mut predicates(&[
        "provenance",
        "--image",
        PINNED,
        "--builder-id",
        builder,
        "--revision",
        "main",
        "--out",
        &out("x.json"),
    ]));
    assert_eq!(revision.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&revision.stderr).contains("not a full git commit"),
        "{revision:?}"
    );
    assert!(!dir.path().join("x.json").exists());
}

/// The workflow file, parsed.
fn workflow(path: &str) -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(workspace_root().join(path)).unwrap()).unwrap()
}

/// Every `run:` script of the workflow, in order.
fn run_scripts(path: &str) -> Vec<String> {
    let workflow = workflow(path);
    let mut scripts = Vec::new();
    for (_, job) in workflow["jobs"].as_mapping().unwrap() {
        for step in job["steps"].as_sequence().unwrap() {
            if let Some(script) = step["run"].as_str() {
                scripts.push(script.to_string());
            }
        }
    }
    scripts
}

/// The `imgate` command lines of shell text, continuation lines joined.
fn imgate_commands(text: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    let mut joined = String::new();
    for line in text.lines() {
        joined.push_str(line.trim_end_matches('\\'));
        joined.push(' ');
        if !line.ends_with('\\') {
            commands.extend(imgate_invocations(std::mem::take(&mut joined).trim()));
        }
    }
    commands
}

fn workflow_commands(path: &str) -> Vec<Vec<String>> {
    run_scripts(path)
        .iter()
        .flat_map(|s| imgate_commands(s))
        .collect()
}

/// `check-jsonschema` with its vendored GitHub workflow schema.
fn schema_check(files: &[PathBuf]) -> Output {
    let checker = python().with_file_name("check-jsonschema");
    run(Command::new(&checker)
        .args(["--builtin-schema", "vendor.github-workflows"])
        .args(files))
}

/// shellcheck of a `run:` script as the runner sees it: `${{ }}`
/// expressions are replaced before bash runs.
fn shellcheck(script: &str) -> Output {
    let mut text = String::new();
    let mut rest = script;
    while let Some(start) = rest.find("${{") {
        text.push_str(&rest[..start]);
        text.push_str("GHA_EXPRESSION");
        rest = rest[start..]
            .split_once("}}")
            .map(|(_, after)| after)
            .unwrap_or("");
    }
    text.push_str(rest);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.sh");
    std::fs::write(&file, text).unwrap();
    run(Command::new("shellcheck")
        .args(["--shell=bash", "--severity=style"])
        .arg(&file))
}

#[test]
fn release_workflows_pass_the_workflow_schema_and_shellcheck() {
    let root = workspace_root();
    let out = schema_check(&[root.join(GITHUB), root.join(FORGEJO)]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The checkers fail what they should: a job without runs-on, a word split.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yml");
    std::fs::write(
        &broken,
        std::fs::read_to_string(root.join(GITHUB))
            .unwrap()
            .replace("runs-on:", "runs_on:"),
    )
    .unwrap();
    assert!(
        !schema_check(&[broken]).status.success(),
        "the schema check rejects a job without runs-on"
    );
    assert!(
        !shellcheck("rm -rf $DIR/*\n").status.success(),
        "shellcheck rejects an unquoted expansion"
    );

    for path in [GITHUB, FORGEJO] {
        let scripts = run_scripts(path);
        assert!(scripts.len() >= 5, "{path}: {scripts:?}");
        for script in scripts {
            let out = shellcheck(&script);
            assert!(
                out.status.success(),
                "{path}: shellcheck:\n{script}\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}

/// The flag's value in an imgate command line, without shell quotes.
fn flag<'a>(command: &'a [String], name: &str) -> Option<&'a str> {
    let i = command.iter().position(|w| w == name)?;
    command.get(i + 1).map(|v| v.trim_matches('"'))
}

/// Both workflows sign, attest provenance and SBOM, and end by verifying
/// both: with a key on Forgejo, keylessly on GitHub. Every command names
/// real imgate subcommands and flags.
#[test]
fn release_workflows_sign_attest_and_verify_what_they_pushed() {
    for path in [GITHUB, FORGEJO] {
        let commands = workflow_commands(path);
        for command in &commands {
            check_invocation(Path::new(path), command);
        }
        let subcommands: Vec<&str> = commands.iter().map(|c| c[0].as_str()).collect();
        assert_eq!(
            subcommands,
            [
                "sign",
                "attest",
                "attest",
                "verify",
                "verify-attestation",
                "verify-attestation"
            ],
            "{path}: {commands:?}"
        );
        let types = |sub: &str| -> Vec<(Option<&str>, Option<&str>)> {
            commands
                .iter()
                .filter(|c| c[0] == sub)
                .map(|c| (flag(c, "--type"), flag(c, "--predicate")))
                .collect()
        };
        assert_eq!(
            types("attest"),
            [
                (Some("slsaprovenance1"), Some("provenance.json")),
                (Some("cyclonedx"), Some("sbom.cdx.json"))
            ],
            "{path}"
        );
        assert_eq!(
            types("verify-attestation"),
            [(Some("slsaprovenance1"), None), (Some("cyclonedx"), None)],
            "{path}"
        );
        let signed_with = |c: &Vec<String>| flag(c, "--key").map(str::to_string);
        match path {
            GITHUB => {
                for c in &commands {
                    assert_eq!(signed_with(c), None, "{path}: keyless: {c:?}");
                    if c[0].starts_with("verify") {
                        assert_eq!(
                            flag(c, "--certificate-identity"),
                            Some("$IDENTITY"),
                            "{c:?}"
                        );
                        assert_eq!(
                            flag(c, "--certificate-oidc-issuer"),
                            Some("$ISSUER"),
                            "{c:?}"
                        );
                    }
                }
                let w = workflow(path);
                assert_eq!(
                    w["permissions"],
                    serde_yaml::from_str::<serde_yaml::Value>("{}").unwrap(),
                    "{path}: no default permissions"
                );
                let job = &w["jobs"]["image"];
                assert_eq!(
                    job["permissions"]["id-token"], "write",
                    "{path}: keyless needs the OIDC token"
                );
                assert_eq!(job["permissions"]["packages"], "write", "{path}");
                let build = run_scripts(path)
                    .into_iter()
                    .find(|s| s.contains("docker buildx build"))
                    .unwrap();
                for wanted in [
                    "--platform linux/amd64,linux/arm64",
                    "--provenance=mode=max",
                    "--sbom=true",
                    "--metadata-file metadata.json",
                ] {
                    assert!(build.contains(wanted), "{path}: buildx {wanted}");
                }
            }
            _ => {
                for c in &commands {
                    let key = signed_with(c);
                    let expected = if c[0].starts_with("verify") {
                        "env://RELEASE_PUBLIC_KEY"
                    } else {
                        "env://COSIGN_PRIVATE_KEY"
                    };
                    assert_eq!(key.as_deref(), Some(expected), "{path}: {c:?}");
                }
                assert!(
                    run_scripts(path)
                        .iter()
                        .any(|s| s.contains("scripts/build-image.sh")),
                    "{path}: built with buildah"
                );
            }
        }
    }
}

/// The fenced block after the line that names `workflow` and ends "in order:".
fn commands_in_doc(doc: &str, workflow: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(workspace_root().join(doc)).unwrap();
    let mut lines = text
        .lines()
        .skip_while(|l| !(l.contains(&format!("`{workflow}`")) && l.ends_with("in order:")));
    assert!(lines.next().is_some(), "{doc} introduces no list of {workflow}'s commands (a line naming it, ending \"in order:\")");
    let block: Vec<&str> = lines
        .skip_while(|l| !l.starts_with("```"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .collect();
    imgate_commands(&block.join("\n"))
}

#[test]
fn docs_list_the_release_workflows_commands() {
    for (doc, path) in [
        ("docs/building-imgate-image.md", GITHUB),
        ("docs/ci-recipes.md", FORGEJO),
    ] {
        let documented = commands_in_doc(doc, path);
        assert!(!documented.is_empty(), "{doc}");
        assert_eq!(
            documented,
            workflow_commands(path),
            "{doc} lists exactly the imgate commands of {path}"
        );
    }
}

/// Every image string in `value`, with where it is.
fn images<'a>(value: &'a serde_yaml::Value, at: &str, out: &mut Vec<(String, &'a str)>) {
    match value {
        serde_yaml::Value::Mapping(map) => {
            for (key, child) in map {
                let key = key.as_str().unwrap_or_default();
                match (key, child.as_str()) {
                    ("image", Some(image)) => out.push((format!("{at}.image"), image)),
                    _ => images(child, &format!("{at}.{key}"), out),
                }
            }
        }
        serde_yaml::Value::Sequence(items) => {
            for (i, child) in items.iter().enumerate() {
                images(child, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Every shipped overlay, and one with the optional trust-root refresh,
/// deploys imgate by digest, never by a tag that can move.
#[test]
fn overlays_deploy_imgate_by_digest() {
    let tree = DeployTree::new();
    let refresh = tree.overlay(
        "with-trust-root-refresh",
        "resources: [../audit]\ncomponents: [../../components/trust-root-refresh]\n",
    );
    for overlay in [
        "overlays/audit",
        "overlays/enforce",
        "overlays/cert-manager",
        refresh.as_str(),
    ] {
        let rendered = tree.render(overlay);
        let mut found = Vec::new();
        for object in &rendered.objects {
            let name = format!(
                "{}/{}",
                object["kind"].as_str().unwrap_or_default(),
                object["metadata"]["name"].as_str().unwrap_or_default()
            );
            images(object, &name, &mut found);
        }
        assert!(!found.is_empty(), "{overlay} runs imgate");
        for (at, image) in found {
            let digest = image
                .rsplit_once("@sha256:")
                .map(|(_, hex)| hex)
                .unwrap_or_default();
            assert!(
                image.starts_with("registry.example.com/imgate/imgate@")
                    && digest.len() == 64
                    && digest.bytes().all(|b| b.is_ascii_hexdigit()),
                "{overlay}: {at} is {image}, not imgate pinned by digest"
            );
        }
    }
}
