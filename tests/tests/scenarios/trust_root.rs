//! `imgate trust-root update` (the real binary) against a TUF repository made
//! in the test and served on loopback: the private Sigstore's trusted root
//! arrives intact and verifies signatures; a changed target, metadata from a
//! stranger's root, and a root rotation are handled as TUF says; the
//! metadata accepted is remembered, so a mirror replaying older versions is
//! refused; `--out` keeps the destination's mode and links.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use imgate_core::sigstore::{verify_legacy_keyless, IdentityPolicy, LegacyKeyless, TrustRoot};
use imgate_tests::bin::run_imgate;
use imgate_tests::sigstore::{simple_signing_payload, LeafSpec, TestSigstore};
use imgate_tests::tuf::TufRepo;

const IDENTITY: &str = "release@imgate.test";
const ISSUER: &str = "https://token.imgate.test";
const DIGEST: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

struct Run {
    code: Option<i32>,
    stderr: String,
    written: Option<Vec<u8>>,
}

/// `imgate trust-root update` with a fresh TUF state.
fn update(repo: &TufRepo, anchor: &[u8]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    update_to(
        repo,
        anchor,
        &dir.path().join("trusted_root.json"),
        &dir.path().join("state"),
    )
}

/// `imgate trust-root update` from `repo`, anchored at `anchor`, writing
/// `out`, with its TUF state in `state` (given through the environment
/// twin, `IMGATE_TUF_STATE`).
fn update_to(repo: &TufRepo, anchor: &[u8], out: &Path, state: &Path) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let anchor_path = dir.path().join("root.json");
    std::fs::write(&anchor_path, anchor).unwrap();
    let output = run_imgate(
        [
            "trust-root",
            "update",
            "--tuf-url",
            &repo.url(),
            "--tuf-root",
            anchor_path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[("IMGATE_TUF_STATE", state.to_str().unwrap())],
        None,
    )
    .unwrap();
    Run {
        code: output.status.code(),
        stderr: String::from_utf8_lossy(&output.stderr).to_string(),
        written: std::fs::read(out).ok(),
    }
}

#[test]
fn update_fetches_the_private_root_and_it_verifies_signatures() {
    let sigstore = TestSigstore::new().unwrap();
    let published = sigstore.trusted_root_json();
    let repo = TufRepo::serve(published.as_bytes()).unwrap();
    let run = update(&repo, repo.first_root());
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let written = run.written.expect("the trusted root was written");
    assert_eq!(written, published.as_bytes());

    let root = TrustRoot::from_json("fetched", &written).unwrap();
    let leaf = sigstore.leaf(&LeafSpec::new(IDENTITY, ISSUER)).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let layer = sigstore.legacy_layer(
        &leaf,
        &simple_signing_payload("registry.imgate.test/app", DIGEST),
        now - 30,
    );
    let verified = verify_legacy_keyless(
        &LegacyKeyless {
            payload: &layer.payload,
            signature_b64: &layer.signature_b64,
            certificate_pem: &layer.cert_pem,
            chain_pem: Some(&layer.chain_pem),
            rekor_bundle: Some(&layer.rekor_bundle),
        },
        DIGEST,
        &IdentityPolicy::exact(IDENTITY, ISSUER),
        &root,
    )
    .unwrap();
    assert_eq!(verified.identity.as_deref(), Some(IDENTITY));
}

#[test]
fn changed_target_is_refused_and_nothing_is_written() {
    let sigstore = TestSigstore::new().unwrap();
    let published = sigstore.trusted_root_json();
    let repo = TufRepo::serve(published.as_bytes()).unwrap();
    // Same length, one URL changed: only the pinned hash can tell.
    let changed = published.replace("rekor.imgate.test", "rekor.imgate.evil");
    assert_eq!(changed.len(), published.len());
    repo.tamper("targets/trusted_root.json", changed.into_bytes())
        .unwrap();
    let run = update(&repo, repo.first_root());
    assert_eq!(run.code, Some(2), "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains("integrity check failed"),
        "{}",
        run.stderr
    );
    assert!(run.written.is_none());
}

#[test]
fn metadata_not_signed_by_the_anchor_is_refused() {
    let sigstore = TestSigstore::new().unwrap();
    let repo = TufRepo::serve(sigstore.trusted_root_json().as_bytes()).unwrap();
    let stranger = TufRepo::serve(sigstore.trusted_root_json().as_bytes()).unwrap();
    // Start from another repository's root: this one's metadata is signed by
    // keys that root does not delegate to.
    let run = update(&repo, stranger.first_root());
    assert_eq!(run.code, Some(2), "stderr: {}", run.stderr);
    assert!(run.written.is_none());
    // And the embedded public-good TUF root does not vouch for it either.
    let state = tempfile::tempdir().unwrap();
    let output = run_imgate(
        [
            "trust-root",
            "update",
            "--tuf-url",
            &repo.url(),
            "--tuf-state",
            state.path().to_str().unwrap(),
        ],
        &[],
        None,
    )
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn root_rotation_is_followed_and_new_targets_arrive() {
    let first = TestSigstore::new().unwrap();
    let mut repo = TufRepo::serve(first.trusted_root_json().as_bytes()).unwrap();
    let anchor = repo.first_root().to_vec();
    repo.rotate_root().unwrap();
    let second = TestSigstore::new().unwrap().trusted_root_json();
    repo.publish(second.as_bytes()).unwrap();
    let run = update(&repo, &anchor);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.written.unwrap(), second.as_bytes());
}

/// `--out` replaces the file's content, not its nature: an existing file
/// keeps its mode (a webhook running as another user must still read it),
/// and a symlink stays a link to the refreshed file.
#[test]
fn out_keeps_the_mode_and_writes_through_a_symlink() {
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let sigstore = TestSigstore::new().unwrap();
    let published = sigstore.trusted_root_json();
    let repo = TufRepo::serve(published.as_bytes()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.json");
    std::fs::write(&plain, b"old").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::create_dir(dir.path().join("real")).unwrap();
    let real = dir.path().join("real/trusted_root.json");
    std::fs::write(&real, b"old").unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o644)).unwrap();
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink("real/trusted_root.json", &link).unwrap();

    for out in [&plain, &link] {
        let run = update_to(&repo, repo.first_root(), out, &dir.path().join("state"));
        assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
        assert_eq!(run.written.unwrap(), published.as_bytes());
    }
    assert_eq!(mode(&plain), 0o640);
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("real/trusted_root.json")
    );
    assert_eq!(std::fs::read(&real).unwrap(), published.as_bytes());
    assert_eq!(mode(&real), 0o644);
    // Nothing but the two files and the link is left behind.
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("real"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["trusted_root.json"]);
}

/// A mirror that serves version 2, then replays version 1 (still unexpired,
/// validly signed, from before a root rotation): the second run remembers
/// version 2 and refuses, writing nothing; the mirror catching up is
/// accepted again.
#[test]
fn a_mirror_replaying_older_metadata_is_refused_as_a_rollback() {
    let first = TestSigstore::new().unwrap().trusted_root_json();
    let mut repo = TufRepo::serve(first.as_bytes()).unwrap();
    let anchor = repo.first_root().to_vec();
    let version_1 = repo.served().unwrap();
    repo.rotate_root().unwrap();
    let second = TestSigstore::new().unwrap().trusted_root_json();
    repo.publish(second.as_bytes()).unwrap();
    let version_2 = repo.served().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("trusted_root.json");
    let state = dir.path().join("state");
    let run = update_to(&repo, &anchor, &out, &state);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.written.unwrap(), second.as_bytes());

    repo.serve_again(&version_1).unwrap();
    let run = update_to(&repo, &anchor, &out, &state);
    assert_eq!(run.code, Some(2), "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains(
            "rollback refused: the repository offers timestamp version 1, older than version 2"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(state.to_str().unwrap()),
        "{}",
        run.stderr
    );
    assert_eq!(run.written.unwrap(), second.as_bytes(), "nothing written");

    // Without the memory (a new state), the replay would pass: the state is
    // what holds the floor.
    let fresh = tempfile::tempdir().unwrap();
    let run = update_to(&repo, &anchor, &fresh.path().join("t.json"), fresh.path());
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.written.unwrap(), first.as_bytes());

    // The mirror catches up and moves on: accepted with the same state.
    repo.serve_again(&version_2).unwrap();
    let third = TestSigstore::new().unwrap().trusted_root_json();
    repo.publish(third.as_bytes()).unwrap();
    let run = update_to(&repo, &anchor, &out, &state);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.written.unwrap(), third.as_bytes());
}

/// A state that cannot be kept fails the update before anything is
/// fetched or written: a floor that does not persist protects nothing.
#[test]
fn an_unusable_state_fails_the_update_and_writes_nothing() {
    let repo = TufRepo::serve(TestSigstore::new().unwrap().trusted_root_json().as_bytes()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let anchor = dir.path().join("root.json");
    std::fs::write(&anchor, repo.first_root()).unwrap();
    let not_a_dir = dir.path().join("state");
    std::fs::write(&not_a_dir, b"").unwrap();
    let out = dir.path().join("trusted_root.json");
    let output = run_imgate(
        [
            "trust-root",
            "update",
            "--tuf-url",
            &repo.url(),
            "--tuf-root",
            anchor.to_str().unwrap(),
            "--tuf-state",
            not_a_dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
        None,
    )
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("TUF state"), "{stderr}");
    assert!(!out.exists());
}
