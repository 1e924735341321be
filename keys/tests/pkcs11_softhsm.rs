//! `Pkcs11Signer` against a real SoftHSM2 token made in a temp dir: the
//! PIN is asked for only when needed and at most once (a wrong PIN is never
//! retried), and signatures verify with the token's public key.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::Cell;
use std::path::PathBuf;
use std::process::Command;

use imgate_keys::pkcs11::{self, Pkcs11Signer};
use imgate_keys::{KeyError, Pkcs11Error, Signer as _};
use zeroize::Zeroizing;

const MODULES: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
];
const PIN: &str = "4321-lib";

/// A fresh token with one P-256 key pair (`k`): its temp dir, its
/// `softhsm2.conf` and the key's URI.
fn token() -> (tempfile::TempDir, PathBuf, String) {
    let module = MODULES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("softhsm2 is installed (scripts/install-deps.sh)");
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let run = |program: &str, args: &[&str]| {
        let out = Command::new(program)
            .args(args)
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(out.status.success(), "{program}: {out:?}");
    };
    let label = format!("lib-{}", dir.path().file_name().unwrap().to_string_lossy());
    let label = &label[..label.len().min(32)];
    run(
        "softhsm2-util",
        &[
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            "so-1234",
            "--pin",
            PIN,
        ],
    );
    let module_text = module.display().to_string();
    run(
        "pkcs11-tool",
        &[
            "--module",
            &module_text,
            "--token-label",
            label,
            "--login",
            "--pin",
            PIN,
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--label",
            "k",
            "--id",
            "01",
        ],
    );
    let uri = format!("pkcs11:token={label};object=k?module-path={module_text}");
    (dir, conf, uri)
}

/// Tests in this file share the process environment (`SOFTHSM2_CONF`) and
/// SoftHSM2's process-wide state; they run one at a time.
static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn with_token(test: impl FnOnce(&str)) {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let (_dir, conf, uri) = token();
    // SoftHSM2 reads its configuration from the environment at
    // C_Initialize; this test process is the only reader.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    test(&uri);
}

#[test]
fn signs_and_asks_for_the_pin_once() {
    with_token(|uri| {
        let asked = Cell::new(0);
        let mut pin = |_: &str| {
            asked.set(asked.get() + 1);
            Ok(Zeroizing::new(PIN.to_string()))
        };
        let signer = Pkcs11Signer::open(uri, None, &mut pin).unwrap();
        assert_eq!(asked.get(), 1);
        let signature = signer.sign_message(b"payload").unwrap();
        signer.public_key().verify(b"payload", &signature).unwrap();
        assert!(signer.public_key().verify(b"other", &signature).is_err());
        assert!(!signer.name().contains(PIN));
    });
}

#[test]
fn a_wrong_pin_is_tried_once_and_reported() {
    with_token(|uri| {
        let asked = Cell::new(0);
        let mut pin = |_: &str| {
            asked.set(asked.get() + 1);
            Ok(Zeroizing::new("wrong".to_string()))
        };
        let err = Pkcs11Signer::open(uri, None, &mut pin).unwrap_err();
        assert_eq!(asked.get(), 1, "never retried");
        match err {
            KeyError::Pkcs11(inner) => {
                assert!(matches!(*inner, Pkcs11Error::WrongPin { .. }), "{inner}")
            }
            other => panic!("expected a wrong PIN, got {other}"),
        }
    });
}

#[test]
fn the_public_key_needs_no_pin_and_matches_the_signer() {
    with_token(|uri| {
        let mut no_pin = |_: &str| -> Result<Zeroizing<String>, KeyError> {
            panic!("the public key object is readable without a login")
        };
        let public = pkcs11::public_key(uri, None, &mut no_pin).unwrap();
        let mut pin = |_: &str| Ok(Zeroizing::new(PIN.to_string()));
        let signer = Pkcs11Signer::open(uri, None, &mut pin).unwrap();
        assert_eq!(public, signer.public_key());
    });
}

#[test]
fn a_pin_in_the_uri_is_used_without_asking() {
    with_token(|uri| {
        let with_pin = format!("{uri}&pin-value={PIN}");
        let mut no_pin =
            |_: &str| -> Result<Zeroizing<String>, KeyError> { panic!("the URI carries the PIN") };
        let signer = Pkcs11Signer::open(&with_pin, None, &mut no_pin).unwrap();
        assert!(
            signer.name().contains("pin-value=<redacted>"),
            "{}",
            signer.name()
        );
        assert!(!format!("{signer:?}").contains(PIN));
    });
}
