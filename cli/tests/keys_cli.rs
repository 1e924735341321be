//! `imgate keys` through the real binary: files, modes, refusals, passwords
//! from the environment, `env://` keys, exit codes and messages.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use imgate_keys::{load_public_key, load_signing_key, KeyError};

/// The binary with no password variables inherited and no terminal.
fn imgate(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgate"));
    cmd.current_dir(dir)
        .env_remove("IMGATE_PASSWORD")
        .env_remove("COSIGN_PASSWORD")
        .stdin(Stdio::null());
    cmd
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/cosign")
        .join(name)
}

#[test]
fn generate_writes_a_cosign_key_pair_and_refuses_to_overwrite_it() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(imgate(dir.path())
        .args(["keys", "generate"])
        .env("IMGATE_PASSWORD", "s3cret"));
    assert_eq!(code, 0, "{stderr}");
    let key_path = dir.path().join("cosign.key");
    let pub_path = dir.path().join("cosign.pub");
    assert!(
        stderr.contains("cosign.key") && stderr.contains("cosign.pub"),
        "{stderr}"
    );

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "private key mode {mode:o}");
    }
    let key_text = std::fs::read_to_string(&key_path).unwrap();
    assert!(key_text.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"));
    let key = load_signing_key(key_path.to_str().unwrap(), b"s3cret").unwrap();
    let public = load_public_key(pub_path.to_str().unwrap()).unwrap();
    assert_eq!(key.public_key(), public);
    assert!(matches!(
        load_signing_key(key_path.to_str().unwrap(), b"other"),
        Err(KeyError::WrongPassword { .. })
    ));

    // Again without --force: exit 2, a clear message, files untouched.
    let pub_text = std::fs::read_to_string(&pub_path).unwrap();
    let (code, stdout, stderr) = run(imgate(dir.path())
        .args(["keys", "generate"])
        .env("IMGATE_PASSWORD", "other"));
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.starts_with("imgate: "), "{stderr}");
    assert!(
        stderr.contains("cosign.key") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
    assert_eq!(std::fs::read_to_string(&key_path).unwrap(), key_text);
    assert_eq!(std::fs::read_to_string(&pub_path).unwrap(), pub_text);

    // Only one of the pair present still refuses.
    std::fs::remove_file(&key_path).unwrap();
    let (code, _, stderr) = run(imgate(dir.path())
        .args(["keys", "generate"])
        .env("IMGATE_PASSWORD", "other"));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cosign.pub"), "{stderr}");
    assert!(!key_path.exists());

    // --force replaces both.
    let (code, _, stderr) = run(imgate(dir.path())
        .args(["keys", "generate", "--force"])
        .env("IMGATE_PASSWORD", "other"));
    assert_eq!(code, 0, "{stderr}");
    assert_ne!(std::fs::read_to_string(&pub_path).unwrap(), pub_text);
    let key = load_signing_key(key_path.to_str().unwrap(), b"other").unwrap();
    assert_eq!(
        key.public_key(),
        load_public_key(pub_path.to_str().unwrap()).unwrap()
    );
}

#[test]
fn generate_with_a_prefix_cosign_password_and_json_report() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("ci")).unwrap();
    let (code, stdout, stderr) = run(imgate(dir.path())
        .args([
            "keys",
            "generate",
            "--output-prefix",
            "ci/signer",
            "--output",
            "json",
        ])
        .env("COSIGN_PASSWORD", ""));
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["privateKey"], "ci/signer.key");
    assert_eq!(report["publicKey"], "ci/signer.pub");
    let public = load_public_key(dir.path().join("ci/signer.pub").to_str().unwrap()).unwrap();
    assert_eq!(report["hint"], public.hint());
    // COSIGN_PASSWORD="" is the empty password.
    load_signing_key(dir.path().join("ci/signer.key").to_str().unwrap(), b"").unwrap();
    // No stray temporary files.
    let names: Vec<_> = std::fs::read_dir(dir.path().join("ci"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn no_password_source_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(imgate(dir.path()).args(["keys", "generate"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("IMGATE_PASSWORD"), "{stderr}");
    assert!(!dir.path().join("cosign.key").exists());
}

#[test]
fn public_prints_the_public_key_of_private_public_and_env_keys() {
    let expected = std::fs::read_to_string(fixture("cosign-generated-empty-password.pub")).unwrap();
    let key = fixture("cosign-generated-empty-password.key");
    let dir = tempfile::tempdir().unwrap();

    // The real cosign key, empty password.
    let (code, stdout, stderr) = run(imgate(dir.path())
        .args(["keys", "public", "--key", key.to_str().unwrap()])
        .env("IMGATE_PASSWORD", ""));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim_end(), expected.trim_end());

    // A public key needs no password at all.
    let (code, stdout, stderr) = run(imgate(dir.path()).args([
        "keys",
        "public",
        "--key",
        fixture("cosign-generated-empty-password.pub")
            .to_str()
            .unwrap(),
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim_end(), expected.trim_end());

    // env://VAR holding the private key PEM.
    let (code, stdout, stderr) = run(imgate(dir.path())
        .args([
            "keys",
            "public",
            "--key",
            "env://SIGNING_KEY",
            "--output",
            "json",
        ])
        .env("SIGNING_KEY", std::fs::read_to_string(&key).unwrap())
        .env("COSIGN_PASSWORD", ""));
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        report["publicKey"].as_str().unwrap().trim_end(),
        expected.trim_end()
    );
    assert_eq!(report["key"], "env://SIGNING_KEY");
}

#[test]
fn public_key_errors_are_one_clear_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let key = fixture("cosign-generated-empty-password.key");
    let cases: Vec<(Vec<String>, Option<&str>, &str)> = vec![
        (
            vec![key.to_str().unwrap().into()],
            Some("wrong"),
            "wrong password for key",
        ),
        (
            vec!["missing.key".into()],
            Some(""),
            "key file missing.key not found",
        ),
        (
            vec!["env://IMGATE_TEST_NO_SUCH_VARIABLE".into()],
            Some(""),
            "IMGATE_TEST_NO_SUCH_VARIABLE",
        ),
        // An encrypted key and no way to get its password.
        (vec![key.to_str().unwrap().into()], None, "IMGATE_PASSWORD"),
    ];
    for (key_args, password, needle) in cases {
        let mut cmd = imgate(dir.path());
        cmd.args(["keys", "public", "--key"]).args(&key_args);
        if let Some(password) = password {
            cmd.env("IMGATE_PASSWORD", password);
        }
        let (code, stdout, stderr) = run(&mut cmd);
        assert_eq!(code, 2, "{key_args:?}: {stderr}");
        assert!(stdout.is_empty(), "{key_args:?}: {stdout}");
        assert!(stderr.contains(needle), "{key_args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{key_args:?}: {stderr}");
    }
}

/// A key written by imgate decrypts with an independent implementation of
/// cosign's format (Python: hashlib scrypt, PyNaCl secretbox, cryptography
/// PKCS#8), i.e. with the same primitives cosign uses.
/// Needs pynacl and cryptography in `$IMGATE_PYTHON` (the project virtualenv
/// `scripts/install-deps.sh --with-python` fills; the Makefile sets it).
#[test]
fn key_written_by_imgate_decrypts_with_pynacl_and_cryptography() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(imgate(dir.path())
        .args(["keys", "generate", "--output-prefix", "py"])
        .env("IMGATE_PASSWORD", "pässword with spaces"));
    assert_eq!(code, 0, "{stderr}");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../keys/tests/interop/decrypt_cosign_key.py");
    let python = std::env::var_os("IMGATE_PYTHON").unwrap_or_else(|| "python3".into());
    let run_script = |password: &str| {
        Command::new(&python)
            .arg(&script)
            .args(["py.key", "py.pub"])
            .current_dir(dir.path())
            .env("IMGATE_PASSWORD", password)
            .output()
            .expect("$IMGATE_PYTHON (or python3) is needed: scripts/install-deps.sh --with-python")
    };
    let out = run_script("pässword with spaces");
    assert!(
        out.status.success(),
        "python check failed (scripts/install-deps.sh --with-python installs pynacl and cryptography into .venv): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: "));
    // The check itself can fail: the wrong password does not decrypt.
    assert!(!run_script("wrong").status.success());
}
