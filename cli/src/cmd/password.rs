//! Passwords for private keys: `IMGATE_PASSWORD`, else `COSIGN_PASSWORD`,
//! else a prompt on a terminal. Never a flag: a flag would land in shell
//! history and in `ps` output. An empty value is a valid (empty) password,
//! as in cosign.
//!
//! PKCS#11 PINs follow the same rule: `pin-source=FILE` in the URI,
//! `IMGATE_PKCS11_PIN` / `COSIGN_PKCS11_PIN`, or a prompt; `pin-value=` in
//! the URI works (cosign accepts it) but is warned about.

use std::ffi::OsString;
use std::io::IsTerminal as _;

use anyhow::{bail, Context as _};
use imgate_keys::KeyError;
use zeroize::Zeroizing;

/// The password variable imgate reads first.
pub const PASSWORD_ENV: &str = "IMGATE_PASSWORD";
/// cosign's variable, read second so existing CI secrets keep working.
pub const COSIGN_PASSWORD_ENV: &str = "COSIGN_PASSWORD";

/// The PKCS#11 PIN variable imgate reads first.
pub const PKCS11_PIN_ENV: &str = "IMGATE_PKCS11_PIN";
/// cosign's PIN variable, read second.
pub const COSIGN_PKCS11_PIN_ENV: &str = "COSIGN_PKCS11_PIN";
/// The PKCS#11 module variable imgate reads first (when the URI has no
/// `module-path`).
pub const PKCS11_MODULE_ENV: &str = "IMGATE_PKCS11_MODULE_PATH";
/// cosign's module variable, read second.
pub const COSIGN_PKCS11_MODULE_ENV: &str = "COSIGN_PKCS11_MODULE_PATH";

/// The PKCS#11 module named by the environment, if any.
pub fn pkcs11_module_from_env() -> Option<std::path::PathBuf> {
    [PKCS11_MODULE_ENV, COSIGN_PKCS11_MODULE_ENV]
        .into_iter()
        .filter_map(std::env::var_os)
        .find(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
}

/// Reads the user PIN of PKCS#11 token `token` for key `key` (the URI
/// without its PIN) when the URI carries none.
pub fn read_pkcs11_pin(key: &str, token: &str) -> Result<Zeroizing<String>, KeyError> {
    read_pkcs11_pin_with(&ProcessSource, key, token)
}

pub(crate) fn read_pkcs11_pin_with(
    source: &dyn PasswordSource,
    key: &str,
    token: &str,
) -> Result<Zeroizing<String>, KeyError> {
    for name in [PKCS11_PIN_ENV, COSIGN_PKCS11_PIN_ENV] {
        if let Some(value) = source.env(name) {
            tracing::debug!(variable = name, "PKCS#11 PIN from the environment");
            let value = Zeroizing::new(value.into_encoded_bytes());
            return String::from_utf8(value.to_vec())
                .map(Zeroizing::new)
                .map_err(|_| KeyError::MissingSecret {
                    key: key.to_string(),
                    what: "PIN",
                    hint: "the PIN variable is not UTF-8",
                });
        }
    }
    if !source.is_terminal() {
        return Err(KeyError::MissingSecret {
            key: key.to_string(),
            what: "PIN",
            hint: "set IMGATE_PKCS11_PIN (or COSIGN_PKCS11_PIN), add pin-source=FILE to the \
                   URI, or run on a terminal to be prompted",
        });
    }
    source
        .prompt(&format!("Enter PIN for PKCS#11 token {token:?}: "))
        .map_err(|_| KeyError::MissingSecret {
            key: key.to_string(),
            what: "PIN",
            hint: "reading it from the terminal failed",
        })
}

/// Reads the password for a private key. `purpose` names the key in the
/// prompt and errors (e.g. `cosign.key`, `the new key cosign.key`). With
/// `confirm`, a prompted password is asked twice and must match (a new key).
pub fn read_password(confirm: bool, purpose: &str) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    read_password_with(&ProcessSource, confirm, purpose)
}

/// Where a password can come from. The process implementation reads the
/// environment and the terminal; tests substitute their own, so they never
/// touch the process environment or need a terminal.
pub(crate) trait PasswordSource {
    fn env(&self, name: &str) -> Option<OsString>;
    fn is_terminal(&self) -> bool;
    fn prompt(&self, prompt: &str) -> std::io::Result<Zeroizing<String>>;
}

struct ProcessSource;

impl PasswordSource for ProcessSource {
    fn env(&self, name: &str) -> Option<OsString> {
        std::env::var_os(name)
    }

    fn is_terminal(&self) -> bool {
        std::io::stdin().is_terminal()
    }

    fn prompt(&self, prompt: &str) -> std::io::Result<Zeroizing<String>> {
        // rpassword reads from the controlling terminal with echo off.
        rpassword::prompt_password(prompt).map(Zeroizing::new)
    }
}

pub(crate) fn read_password_with(
    source: &dyn PasswordSource,
    confirm: bool,
    purpose: &str,
) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    for name in [PASSWORD_ENV, COSIGN_PASSWORD_ENV] {
        if let Some(value) = source.env(name) {
            tracing::debug!(variable = name, "key password from the environment");
            return Ok(Zeroizing::new(value.into_encoded_bytes()));
        }
    }
    if !source.is_terminal() {
        bail!(
            "no password for {purpose}: set {PASSWORD_ENV} (or {COSIGN_PASSWORD_ENV}); \
             standard input is not a terminal to prompt on (an empty value means an empty password)"
        );
    }
    let first = source
        .prompt(&format!("Enter password for {purpose}: "))
        .with_context(|| format!("reading the password for {purpose} from the terminal"))?;
    if confirm {
        let second = source
            .prompt(&format!("Enter password for {purpose} again: "))
            .with_context(|| format!("reading the password for {purpose} from the terminal"))?;
        if *first != *second {
            bail!("the passwords for {purpose} do not match");
        }
    }
    Ok(Zeroizing::new(first.as_bytes().to_vec()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Default)]
    struct Fake {
        env: BTreeMap<&'static str, &'static str>,
        terminal: bool,
        answers: RefCell<Vec<&'static str>>,
        prompts: RefCell<Vec<String>>,
    }

    impl PasswordSource for Fake {
        fn env(&self, name: &str) -> Option<OsString> {
            self.env.get(name).map(OsString::from)
        }
        fn is_terminal(&self) -> bool {
            self.terminal
        }
        fn prompt(&self, prompt: &str) -> std::io::Result<Zeroizing<String>> {
            self.prompts.borrow_mut().push(prompt.to_string());
            let answer = self.answers.borrow_mut().remove(0);
            Ok(Zeroizing::new(answer.to_string()))
        }
    }

    #[test]
    fn pkcs11_pin_comes_from_the_environment_then_the_terminal() {
        let fake = Fake {
            env: BTreeMap::from([(PKCS11_PIN_ENV, "1234"), (COSIGN_PKCS11_PIN_ENV, "9")]),
            terminal: true,
            ..Fake::default()
        };
        assert_eq!(
            read_pkcs11_pin_with(&fake, "pkcs11:object=k", "ci")
                .unwrap()
                .as_str(),
            "1234"
        );
        assert!(fake.prompts.borrow().is_empty());
        let fake = Fake {
            terminal: true,
            answers: RefCell::new(vec!["5678"]),
            ..Fake::default()
        };
        assert_eq!(
            read_pkcs11_pin_with(&fake, "pkcs11:object=k", "ci")
                .unwrap()
                .as_str(),
            "5678"
        );
        assert!(fake.prompts.borrow()[0].contains("\"ci\""));
        let err = read_pkcs11_pin_with(&Fake::default(), "pkcs11:object=k", "ci").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("pkcs11:object=k") && msg.contains("IMGATE_PKCS11_PIN"),
            "{msg}"
        );
    }

    #[test]
    fn imgate_password_wins_over_cosign_password() {
        let fake = Fake {
            env: BTreeMap::from([(PASSWORD_ENV, "a"), (COSIGN_PASSWORD_ENV, "b")]),
            ..Fake::default()
        };
        assert_eq!(&read_password_with(&fake, true, "k").unwrap()[..], b"a");
        let fake = Fake {
            env: BTreeMap::from([(COSIGN_PASSWORD_ENV, "b")]),
            ..Fake::default()
        };
        assert_eq!(&read_password_with(&fake, true, "k").unwrap()[..], b"b");
    }

    #[test]
    fn empty_variable_is_an_empty_password_not_a_prompt() {
        let fake = Fake {
            env: BTreeMap::from([(PASSWORD_ENV, "")]),
            terminal: true,
            ..Fake::default()
        };
        assert!(read_password_with(&fake, false, "k").unwrap().is_empty());
        assert!(fake.prompts.borrow().is_empty());
    }

    #[test]
    fn no_variable_and_no_terminal_says_what_to_set() {
        let err = read_password_with(&Fake::default(), false, "cosign.key").unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("cosign.key") && msg.contains("IMGATE_PASSWORD"),
            "{msg}"
        );
    }

    #[test]
    fn terminal_prompt_asks_twice_when_confirming_and_checks_the_match() {
        let fake = Fake {
            terminal: true,
            answers: RefCell::new(vec!["pw", "pw"]),
            ..Fake::default()
        };
        assert_eq!(
            &read_password_with(&fake, true, "new.key").unwrap()[..],
            b"pw"
        );
        assert_eq!(fake.prompts.borrow().len(), 2);
        assert!(fake.prompts.borrow()[0].contains("new.key"));

        let fake = Fake {
            terminal: true,
            answers: RefCell::new(vec!["pw", "pW"]),
            ..Fake::default()
        };
        let err = read_password_with(&fake, true, "new.key").unwrap_err();
        assert!(err.to_string().contains("do not match"), "{err}");

        let fake = Fake {
            terminal: true,
            answers: RefCell::new(vec!["once"]),
            ..Fake::default()
        };
        assert_eq!(&read_password_with(&fake, false, "k").unwrap()[..], b"once");
        assert_eq!(fake.prompts.borrow().len(), 1);
    }
}
