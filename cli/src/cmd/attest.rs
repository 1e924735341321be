//! `imgate attest`: wrap a predicate file in an in-toto statement about
//! each image's digest, sign it as a DSSE envelope, with a key or keylessly
//! (as `imgate sign` does: a Fulcio certificate for the CI's identity and a
//! Rekor entry, checked before anything is pushed), and store it the way
//! cosign does (`--format legacy`: a layer of the `.att` manifest;
//! `bundle`: a Sigstore bundle attached as an OCI referrer), keeping every
//! attestation already there. Prints each pinned reference attested.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::{bail, Context};
use imgate_core::attestation::{self, AttestOptions, EnvelopeSigner, KeySigner};

use super::common::{open_signer, parse_images, RegistryArgs};
use super::sigstore_args::SigstoreArgs;
use super::Outcome;

/// Where `imgate attest` stores the attestation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    /// cosign's `.att` tag: one DSSE envelope layer per attestation (cosign v1/v2 layout).
    Legacy,
    /// A Sigstore bundle v0.3 attached as an OCI referrer (cosign v3, GitHub's attest actions).
    Bundle,
}

impl From<FormatArg> for imgate_core::signature::Format {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Legacy => imgate_core::signature::Format::Legacy,
            FormatArg::Bundle => imgate_core::signature::Format::Bundle,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The predicate: a JSON file (for `custom` and `spdx`, any text file).
    #[arg(long, value_name = "FILE")]
    pub predicate: PathBuf,
    /// The predicate type: a URI, or cosign's short names, which map to
    /// cosign's URIs: slsaprovenance and slsaprovenance02
    /// (https://slsa.dev/provenance/v0.2), slsaprovenance1
    /// (https://slsa.dev/provenance/v1), spdx and spdxjson
    /// (https://spdx.dev/Document), cyclonedx (https://cyclonedx.org/bom),
    /// link, vuln (https://cosign.sigstore.dev/attestation/vuln/v1), openvex,
    /// custom (wraps the file as {"Data": TEXT, "Timestamp": NOW}).
    #[arg(long = "type", value_name = "TYPE", default_value = "custom")]
    pub predicate_type: String,
    /// Private key, as `imgate sign` takes it: a cosign key file or
    /// `env://VAR`, a `pkcs11:` URI, or `hashivault://NAME`. Without --key,
    /// imgate attests keylessly, as `imgate sign` signs.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Where to store the attestation; either way, attestations already
    /// there are kept.
    #[arg(long, value_enum, default_value_t = FormatArg::Legacy)]
    pub format: FormatArg,
    /// Images to attest (tags are resolved to digests first).
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
    #[command(flatten)]
    pub sigstore: SigstoreArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// The largest predicate file read: the largest blob a registry read of
/// imgate accepts.
const MAX_PREDICATE_BYTES: u64 = imgate_core::registry::MAX_BLOB_SIZE as u64;

pub async fn run(args: Args) -> anyhow::Result<Outcome> {
    // Checked before any key or registry is touched: a typo fails fast.
    imgate_core::attestation::statement::predicate_type(&args.predicate_type)
        .map_err(|err| anyhow::anyhow!("--type: {err}"))?;
    let predicate = read_predicate(&args.predicate)?;
    let images = parse_images(&args.images, "attest")?;
    // The key (or identity token) before the registry, as `imgate sign`.
    let key = args.key.as_deref().map(open_signer).transpose()?;
    let sigstore = if key.is_none() || args.sigstore.tlog_upload {
        // The legacy layout carries the Rekor entry's signed timestamp,
        // which only a Rekor v1 log gives.
        let needs_set = args.format == FormatArg::Legacy;
        Some(args.sigstore.signer(key.as_deref(), needs_set).await?)
    } else {
        args.sigstore.check_key_only()?;
        None
    };
    let key_signer = key.as_deref().map(KeySigner);
    let signer: &dyn EnvelopeSigner = match (&sigstore, &key_signer) {
        (Some(sigstore), _) => sigstore,
        (None, Some(key)) => key,
        (None, None) => bail!("no key and no keyless signer"),
    };
    let client = args
        .registry
        .client(images.iter().map(|i| i.registry.as_str()))?;
    let opts = AttestOptions {
        predicate_type: args.predicate_type.clone(),
        predicate,
        format: args.format.into(),
    };
    for image in &images {
        let pinned = client
            .resolve(image)
            .await
            .with_context(|| format!("cannot attest {image}"))?
            .pinned;
        // Every error names the image.
        let attested = attestation::attest(&client, &pinned, signer, &opts).await?;
        tracing::info!(image = %pinned, predicate_type = %attested.predicate_type, stored_in = %attested.stored_in, "attested");
        outln!("{pinned}");
    }
    Ok(Outcome::Ok)
}

fn read_predicate(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read the predicate {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_PREDICATE_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read the predicate {}", path.display()))?;
    if bytes.len() as u64 > MAX_PREDICATE_BYTES {
        anyhow::bail!(
            "the predicate {} is larger than {MAX_PREDICATE_BYTES} bytes",
            path.display()
        );
    }
    if bytes.len() as u64 > attestation::DEFAULT_MAX_STATEMENT_BYTES {
        tracing::warn!(
            "the predicate {} is over {} bytes: verifiers with the default cap \
             (limits.attestations.maxStatementBytes) will refuse it",
            path.display(),
            attestation::DEFAULT_MAX_STATEMENT_BYTES
        );
    }
    Ok(bytes)
}
