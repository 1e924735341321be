//! `imgate verify-bundle`: verify a Sigstore bundle for a file or a
//! `sha256:` digest, exactly as the Sigstore conformance CLI protocol
//! describes the command (so the conformance suite can drive imgate), plus
//! anchored `-regexp` variants of the identity flags.
//!
//! Exit 0: valid. Exit 1: invalid, with the reason on stderr (this includes
//! a bundle, key or trusted root whose content is unusable). Exit 2: usage,
//! or a file that cannot be read.

use std::path::{Path, PathBuf};

use anyhow::Context;
use imgate_core::sigstore::{
    public_key_from_pem, verify_bundle_bytes, ArtifactInput, BundlePolicy, SigstoreError, TlogMode,
    TrustRoot, MAX_BUNDLE_BYTES,
};

use super::identity::IdentityArgs;
use super::Outcome;

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("signer").required(true).args(["key", "certificate_identity", "certificate_identity_regexp"]))]
pub struct Args {
    /// Use Sigstore's staging instance. imgate embeds only the production
    /// root, so this needs --trusted-root.
    #[arg(long, requires = "trusted_root")]
    pub staging: bool,
    /// The Sigstore bundle (JSON) to verify.
    #[arg(long, value_name = "FILE")]
    pub bundle: PathBuf,
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// Verify with this PEM public key instead of a certificate identity. A
    /// verified log entry is required, as cosign requires it.
    #[arg(long, value_name = "PATH_TO_KEY")]
    pub key: Option<PathBuf>,
    /// A trusted_root.json to use instead of the embedded public-good root.
    #[arg(long, value_name = "FILE", env = "IMGATE_TRUSTED_ROOT")]
    pub trusted_root: Option<PathBuf>,
    /// The artifact's path, or its digest as `sha256:<64 hex>` (a path that
    /// exists on disk is always read as a path).
    #[arg(value_name = "FILE_OR_DIGEST")]
    pub file_or_digest: String,
}

/// Largest artifact file read into memory.
const MAX_ARTIFACT_BYTES: u64 = 1 << 30;

pub async fn run(args: Args) -> anyhow::Result<Outcome> {
    tokio::task::spawn_blocking(move || verify(&args))
        .await
        .context("verification task failed")?
}

fn verify(args: &Args) -> anyhow::Result<Outcome> {
    let bundle = read(&args.bundle, MAX_BUNDLE_BYTES as u64, "bundle")?;
    let artifact_bytes;
    let artifact = match digest_input(&args.file_or_digest) {
        Some(digest) => ArtifactInput::Sha256(digest),
        None => {
            artifact_bytes = read(
                Path::new(&args.file_or_digest),
                MAX_ARTIFACT_BYTES,
                "artifact",
            )?;
            ArtifactInput::Bytes(&artifact_bytes)
        }
    };
    let root = match &args.trusted_root {
        Some(path) => {
            let bytes = read(
                path,
                imgate_core::sigstore::MAX_TRUSTED_ROOT_BYTES,
                "trusted root",
            )?;
            TrustRoot::from_json(&path.display().to_string(), &bytes)
        }
        None => TrustRoot::embedded(),
    };
    let root = match root {
        Ok(root) => root,
        Err(err) => return Ok(invalid(&err)),
    };
    let policy = match &args.key {
        Some(path) => match key_policy(path) {
            Ok(policy) => policy,
            Err(err) => return Ok(invalid(&err)),
        },
        None => match args.identity.policy()? {
            Some(identity) => BundlePolicy::Keyless(identity),
            None => anyhow::bail!("give --key or --certificate-identity(-regexp)"),
        },
    };
    match verify_bundle_bytes(&bundle, artifact, &policy, &root) {
        Ok(verified) => {
            let who = match (&verified.identity, &verified.issuer, &verified.key) {
                (Some(id), Some(iss), _) => format!("identity {id} (issuer {iss})"),
                (Some(id), None, _) => format!("identity {id}"),
                (_, _, Some(key)) => format!("key {key}"),
                _ => "an unnamed signer".to_string(),
            };
            outln!("verified: signed by {who}");
            Ok(Outcome::Ok)
        }
        Err(err) => Ok(invalid(&err)),
    }
}

fn invalid(err: &SigstoreError) -> Outcome {
    eprintln!("imgate: invalid: {err}");
    Outcome::No
}

fn key_policy(path: &Path) -> Result<BundlePolicy, SigstoreError> {
    let name = path.display().to_string();
    let pem = std::fs::read(path).map_err(|err| SigstoreError::Key {
        name: name.clone(),
        reason: err.to_string(),
    })?;
    let spki_der = public_key_from_pem(&name, &pem)?;
    Ok(BundlePolicy::Key {
        spki_der,
        name,
        tlog: TlogMode::Required,
    })
}

/// The protocol's rule: `sha256:` plus 64 hex digits, and not a path on disk.
fn digest_input(arg: &str) -> Option<[u8; 32]> {
    let hex_part = arg.strip_prefix("sha256:")?;
    if hex_part.len() != 64 || Path::new(arg).exists() {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).ok()?;
    Some(out)
}

fn read(path: &Path, limit: u64, what: &str) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open {what} {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    if bytes.len() as u64 > limit {
        anyhow::bail!(
            "{what} {} is larger than the {limit} bytes imgate reads",
            path.display()
        );
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_input_follows_the_protocol() {
        let hex64 = "a".repeat(64);
        assert!(digest_input(&format!("sha256:{hex64}")).is_some());
        assert!(digest_input(&format!("sha256:{}", "a".repeat(63))).is_none());
        assert!(digest_input(&format!("sha256:{}", "z".repeat(64))).is_none());
        assert!(digest_input(&format!("sha512:{hex64}")).is_none());
        assert!(digest_input("a.txt").is_none());
    }
}
