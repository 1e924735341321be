//! The Sigstore conformance suite's bundle-verification cases, run through
//! the real `imgate verify-bundle` the way the suite's harness drives a
//! client (`cli_protocol.md`): a case whose name ends in `_fail` must exit 1
//! with a reason on stderr, every other case must exit 0. All failures are
//! collected and reported together.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

const DEFAULT_IDENTITY: &str = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main";
const DEFAULT_ISSUER: &str = "https://token.actions.githubusercontent.com";

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/sigstore-conformance")
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Build the protocol's argument list for one case directory.
fn case_args(case: &Path) -> Vec<String> {
    let mut args = vec![
        "verify-bundle".to_string(),
        "--bundle".to_string(),
        case.join("bundle.sigstore.json").display().to_string(),
    ];
    let key = case.join("key.pub");
    if key.exists() {
        args.extend(["--key".to_string(), key.display().to_string()]);
    } else {
        let identity =
            read_trimmed(&case.join("identity")).unwrap_or_else(|| DEFAULT_IDENTITY.into());
        let issuer = read_trimmed(&case.join("issuer")).unwrap_or_else(|| DEFAULT_ISSUER.into());
        args.extend([
            "--certificate-identity".to_string(),
            identity,
            "--certificate-oidc-issuer".to_string(),
            issuer,
        ]);
    }
    let root = case.join("trusted_root.json");
    if root.exists() {
        args.extend(["--trusted-root".to_string(), root.display().to_string()]);
    }
    let artifact = case.join("artifact");
    let artifact = if artifact.exists() {
        artifact
    } else {
        suite_dir().join("a.txt")
    };
    args.push(artifact.display().to_string());
    args
}

#[test]
fn every_bundle_verify_case_gets_the_expected_verdict() {
    let dir = suite_dir().join("bundle-verify");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert_eq!(
        cases.len(),
        70,
        "the suite has 70 cases in {}",
        dir.display()
    );

    let mut failures = Vec::new();
    let mut expected_fail = 0;
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let must_fail = name.ends_with("_fail");
        expected_fail += usize::from(must_fail);
        let out = Command::new(env!("CARGO_BIN_EXE_imgate"))
            .args(case_args(case))
            .output()
            .unwrap();
        let code = out.status.code();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let want = if must_fail { 1 } else { 0 };
        if code != Some(want) {
            failures.push(format!(
                "{name}: exit {code:?}, want {want}; stderr: {}",
                stderr.trim()
            ));
        } else if must_fail && stderr.trim().is_empty() {
            failures.push(format!("{name}: rejected without a reason on stderr"));
        }
    }
    eprintln!(
        "conformance: {} cases ({} must fail), {} passed, {} failed",
        cases.len(),
        expected_fail,
        cases.len() - failures.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} conformance cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
