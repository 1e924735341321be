//! Passwords for private keys: `IMGATE_PASSWORD`, else `COSIGN_PASSWORD`,
//! else a prompt on a terminal. Never a flag: a flag would land in shell
//! history and in `ps` output. An empty value is a valid (empty) password,
//! as in cosign.

use std::ffi::OsString;
use std::io::IsTerminal as _;

use anyhow::{bail, Context as _};
use zeroize::Zeroizing;

/// The password variable imgate reads first.
pub const PASSWORD_ENV: &str = "IMGATE_PASSWORD";
/// cosign's variable, read second so existing CI secrets keep working.
pub const COSIGN_PASSWORD_ENV: &str = "COSIGN_PASSWORD";

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
