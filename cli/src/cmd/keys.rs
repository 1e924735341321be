//! `imgate keys`: generate a cosign-compatible key pair, print a public key.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use imgate_keys::vault::{VaultConfig, VaultSigner};
use imgate_keys::{KeyReference, Signer as _, SigningKey};
use zeroize::Zeroizing;

use super::common::{open_public_key, OutputFormat};
use super::password::read_password;
use super::Outcome;

/// Generate and inspect cosign-compatible key pairs.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, clap::Subcommand)]
enum KeysCommand {
    /// Write a new key pair: PREFIX.key (encrypted, mode 0600) and PREFIX.pub.
    ///
    /// The password comes from IMGATE_PASSWORD, else COSIGN_PASSWORD, else a
    /// prompt on the terminal (asked twice). An empty password is allowed.
    /// cosign reads the files, and imgate reads cosign's.
    ///
    /// With `--kms hashivault://NAME` the key is created in Vault/OpenBao
    /// transit instead (type ecdsa-p256, as cosign creates it) and only
    /// PREFIX.pub is written.
    Generate(GenerateArgs),
    /// Print the public key (PEM) of a private or public key, a key on a
    /// PKCS#11 token (`pkcs11:` URI) or in Vault/OpenBao (`hashivault://NAME`).
    ///
    /// For an encrypted private key the password comes from IMGATE_PASSWORD,
    /// else COSIGN_PASSWORD, else a terminal prompt.
    Public(PublicArgs),
}

#[derive(Debug, clap::Args)]
struct GenerateArgs {
    /// Path prefix of the files written: PREFIX.key and PREFIX.pub.
    #[arg(long, value_name = "PREFIX", default_value = "cosign")]
    output_prefix: String,
    /// Overwrite existing files.
    #[arg(long)]
    force: bool,
    /// Create the key in a key management service instead of a file:
    /// `hashivault://NAME` (Vault/OpenBao transit). Keys on PKCS#11 tokens
    /// are created with the token's own tools.
    #[arg(long, value_name = "KEYREF")]
    kms: Option<String>,
    /// How to report what was written (text goes to stderr, json to stdout).
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
}

#[derive(Debug, clap::Args)]
struct PublicArgs {
    /// The key: a path, env://VAR for a PEM in an environment variable, a
    /// pkcs11: URI, or hashivault://NAME.
    #[arg(long, value_name = "KEY")]
    key: String,
    /// Output format: the PEM, or JSON with the PEM and the key's hint.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
}

pub async fn run(args: Args) -> anyhow::Result<Outcome> {
    match args.command {
        KeysCommand::Generate(args) => generate(args),
        KeysCommand::Public(args) => public(args),
    }
}

fn generate(args: GenerateArgs) -> anyhow::Result<Outcome> {
    if let Some(kms) = &args.kms {
        return generate_in_kms(kms, &args);
    }
    let key_path = PathBuf::from(format!("{}.key", args.output_prefix));
    let pub_path = PathBuf::from(format!("{}.pub", args.output_prefix));
    // Checked before asking for a password so the user is not prompted for
    // nothing; the final write checks again atomically.
    if !args.force {
        let existing: Vec<String> = [&key_path, &pub_path]
            .into_iter()
            .filter(|p| p.symlink_metadata().is_ok())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            bail!(
                "{} already exist{}; refusing to overwrite (use --force to replace)",
                existing.join(" and "),
                if existing.len() == 1 { "s" } else { "" }
            );
        }
    }

    let password = read_password(true, &format!("the new key {}", key_path.display()))?;
    let key = SigningKey::generate().with_name(key_path.display().to_string());
    let private_pem = Zeroizing::new(key.to_cosign_pem(&password)?);
    let public = key.public_key();

    write_file(&key_path, private_pem.as_bytes(), PRIVATE_MODE, args.force)?;
    if let Err(err) = write_file(
        &pub_path,
        public.to_pem().as_bytes(),
        PUBLIC_MODE,
        args.force,
    ) {
        // Do not leave half a key pair behind.
        let _ = std::fs::remove_file(&key_path);
        return Err(err);
    }

    match args.output {
        OutputFormat::Text => {
            eprintln!("Private key written to {}", key_path.display());
            eprintln!("Public key written to {}", pub_path.display());
        }
        OutputFormat::Json => {
            let report = serde_json::json!({
                "privateKey": key_path.display().to_string(),
                "publicKey": pub_path.display().to_string(),
                "hint": public.hint(),
            });
            outln!("{report}");
        }
    }
    Ok(Outcome::Ok)
}

/// Creates the key in a KMS and writes only its public half, as cosign's
/// `generate-key-pair --kms` does.
fn generate_in_kms(kms: &str, args: &GenerateArgs) -> anyhow::Result<Outcome> {
    let name = match KeyReference::parse(kms)? {
        KeyReference::HashiVault(name) => name,
        KeyReference::Pkcs11(_) => bail!(
            "imgate does not create keys on PKCS#11 tokens: create the P-256 key pair with the \
             token's tools (e.g. pkcs11-tool --keypairgen --key-type EC:prime256v1) and print its \
             public key with `imgate keys public --key pkcs11:...`"
        ),
        KeyReference::Pem(_) => {
            bail!("--kms {kms:?} is not a KMS key reference (expected hashivault://NAME)")
        }
    };
    let pub_path = PathBuf::from(format!("{}.pub", args.output_prefix));
    if !args.force && pub_path.symlink_metadata().is_ok() {
        bail!(
            "{} already exists; refusing to overwrite (use --force to replace)",
            pub_path.display()
        );
    }
    let signer = VaultSigner::create(VaultConfig::from_env(kms)?, &name)?;
    let public = signer.public_key();
    write_file(
        &pub_path,
        public.to_pem().as_bytes(),
        PUBLIC_MODE,
        args.force,
    )?;
    match args.output {
        OutputFormat::Text => {
            eprintln!("Key {kms} (version {}) is in Vault", signer.version());
            eprintln!("Public key written to {}", pub_path.display());
        }
        OutputFormat::Json => {
            let report = serde_json::json!({
                "key": kms,
                "version": signer.version(),
                "publicKey": pub_path.display().to_string(),
                "hint": public.hint(),
            });
            outln!("{report}");
        }
    }
    Ok(Outcome::Ok)
}

/// Mode of the private key file (cosign writes 0600 too).
const PRIVATE_MODE: u32 = 0o600;
/// Mode of the public key file.
const PUBLIC_MODE: u32 = 0o644;

/// Writes `bytes` to `path` through a temporary file in the same directory
/// and a rename, so a reader never sees a partial key and the private key
/// never exists with wider permissions, even for a moment.
fn write_file(path: &Path, bytes: &[u8], mode: u32, overwrite: bool) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let context = || format!("writing {}", path.display());
    let mut tmp = tempfile::Builder::new()
        .prefix(".imgate-key-")
        .tempfile_in(dir)
        .with_context(context)?;
    set_mode(tmp.as_file(), mode).with_context(context)?;
    tmp.write_all(bytes).with_context(context)?;
    tmp.as_file().sync_all().with_context(context)?;
    if overwrite {
        tmp.persist(path)
            .map_err(|e| e.error)
            .with_context(context)?;
    } else {
        tmp.persist_noclobber(path).map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow::anyhow!(
                    "{} already exists; refusing to overwrite (use --force to replace)",
                    path.display()
                )
            } else {
                anyhow::Error::new(e.error).context(context())
            }
        })?;
    }
    Ok(())
}

#[cfg(unix)]
fn set_mode(file: &std::fs::File, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_file: &std::fs::File, _mode: u32) -> std::io::Result<()> {
    // No POSIX modes; the temporary file is private to the user already.
    Ok(())
}

fn public(args: PublicArgs) -> anyhow::Result<Outcome> {
    let public = open_public_key(&args.key)?;
    match args.output {
        OutputFormat::Text => out!("{}", public.to_pem()),
        OutputFormat::Json => {
            let report = serde_json::json!({
                "key": public.name(),
                "publicKey": public.to_pem(),
                "hint": public.hint(),
            });
            outln!("{report}");
        }
    }
    Ok(Outcome::Ok)
}
