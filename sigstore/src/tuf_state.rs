//! The TUF metadata a trusted-root update has accepted, kept in a directory
//! between runs, so that the versions seen once are a floor: a mirror that
//! later serves older (still unexpired) timestamp, snapshot or targets
//! metadata is refused as a rollback, and a root rotated away from (with the
//! keys it retired) is never trusted again.
//!
//! `sigstore-tuf` writes every file after verifying it and re-verifies them
//! all from the anchor on the next run; this module decides where they live
//! (one subdirectory per repository URL) and makes any failure to read or
//! write them fatal, where the crate would log it and carry on: a floor that
//! silently failed to persist protects nothing.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sigstore_tuf::cache::{FileStore, MetadataStore};

/// Largest state file read back: the largest file TUF downloads at all
/// (`sigstore-tuf`'s default target limit). The directory is the updater's
/// own; the bound only keeps a wrong mount from exhausting memory.
pub(super) const MAX_STATE_FILE_BYTES: u64 = 50_000_000;

/// The state of one TUF repository, in `<state dir>/<repository URL,
/// percent-encoded>/`.
#[derive(Debug)]
pub(super) struct StateStore {
    files: FileStore,
    dir: PathBuf,
    /// The first read or write that failed; [`StateStore::check`] reports it.
    failure: Mutex<Option<String>>,
}

impl StateStore {
    /// Opens (creating it, owner-only) the state of the repository at `url`
    /// under `state_dir`.
    pub(super) fn open(state_dir: &Path, url: &url::Url) -> Result<StateStore, String> {
        use std::os::unix::fs::DirBuilderExt as _;
        let dir = state_dir.join(directory_name(url.as_str()));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|err| {
                format!(
                    "cannot create the TUF state directory {}: {err}",
                    dir.display()
                )
            })?;
        Ok(StateStore {
            files: FileStore::new(&dir),
            dir,
            failure: Mutex::new(None),
        })
    }

    /// Where this repository's state lives.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The first failure to read or write the state, if any.
    pub(super) fn check(&self) -> Result<(), String> {
        match self.failure.lock() {
            Ok(failure) => match failure.as_ref() {
                Some(reason) => Err(reason.clone()),
                None => Ok(()),
            },
            Err(_) => Err("the TUF state lock is poisoned".to_string()),
        }
    }

    fn fail(&self, reason: String) {
        if let Ok(mut failure) = self.failure.lock() {
            failure.get_or_insert(reason);
        }
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, String> {
        let path = self.dir.join(name);
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(format!("cannot read {}: {err}", path.display())),
        };
        let mut bytes = Vec::new();
        file.take(MAX_STATE_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        if bytes.len() as u64 > MAX_STATE_FILE_BYTES {
            return Err(format!(
                "{} is larger than the {MAX_STATE_FILE_BYTES} bytes a TUF file may have",
                path.display()
            ));
        }
        Ok(Some(bytes))
    }
}

impl MetadataStore for StateStore {
    fn load(&self, name: &str) -> sigstore_tuf::Result<Option<Vec<u8>>> {
        // The crate names files itself (`timestamp.json`,
        // `root_history/3.root.json`, ...); refuse anything that could leave
        // the directory all the same.
        if Path::new(name)
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            let reason = format!("unsafe TUF state file name {name:?}");
            self.fail(reason.clone());
            return Err(sigstore_tuf::Error::Malformed(reason));
        }
        self.read(name).map_err(|reason| {
            self.fail(reason.clone());
            sigstore_tuf::Error::transport(reason)
        })
    }

    fn store(&self, name: &str, bytes: &[u8]) -> sigstore_tuf::Result<()> {
        self.files.store(name, bytes).inspect_err(|err| {
            self.fail(format!(
                "cannot write {} in the TUF state: {err}",
                self.dir.join(name).display()
            ))
        })
    }
}

/// `url` as one path segment: every byte but ASCII letters, digits and
/// `-._~` percent-encoded, so distinct repositories never share a state.
fn directory_name(url: &str) -> String {
    let mut out = String::with_capacity(url.len() * 2);
    for byte in url.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn each_repository_has_its_own_directory() {
        assert_eq!(
            directory_name("https://tuf-repo-cdn.sigstore.dev/"),
            "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev%2F"
        );
        assert_ne!(
            directory_name("https://a.example/x_y/"),
            directory_name("https://a.example/x/y/")
        );
        assert!(!directory_name("http://127.0.0.1:1/../../etc/").contains('/'));
    }

    #[test]
    fn files_round_trip_and_failures_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let url = url::Url::parse("https://tuf.example/").unwrap();
        let store = StateStore::open(dir.path(), &url).unwrap();
        assert!(store.dir().starts_with(dir.path()));
        store.store("root_history/2.root.json", b"{}").unwrap();
        assert_eq!(
            store.load("root_history/2.root.json").unwrap().unwrap(),
            b"{}"
        );
        assert_eq!(store.load("timestamp.json").unwrap(), None);
        assert!(store.check().is_ok());

        assert!(store.load("../escape.json").is_err());
        let err = store.check().unwrap_err();
        assert!(err.contains("escape.json"), "{err}");
    }

    #[test]
    fn an_unwritable_state_is_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let url = url::Url::parse("https://tuf.example/").unwrap();
        let store = StateStore::open(dir.path(), &url).unwrap();
        // A file where the root history directory belongs: no one, not even
        // root, can write under it.
        std::fs::write(store.dir().join("root_history"), b"").unwrap();
        assert!(store.store("root_history/2.root.json", b"{}").is_err());
        let err = store.check().unwrap_err();
        assert!(err.contains("2.root.json"), "{err}");
    }
}
