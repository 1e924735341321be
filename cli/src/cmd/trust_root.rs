//! `imgate trust-root update`: fetch Sigstore's trusted root through its TUF
//! repository (or a private instance's), verified from the embedded TUF root
//! and the metadata versions accepted before (the state directory), and write
//! it where `--trusted-root` or the policy's `trustRoot:` can use it. Exit 0
//! when written, 2 when the update failed (nothing is written).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use imgate_core::sigstore::{fetch_signing_config, fetch_trusted_root, PUBLIC_GOOD_TUF_URL};

use super::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Fetch and verify trusted_root.json through TUF.
    Update {
        /// Write the trusted root here (atomically); stdout when absent.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// The TUF repository.
        #[arg(long, value_name = "URL", default_value = PUBLIC_GOOD_TUF_URL, env = "IMGATE_TUF_URL")]
        tuf_url: String,
        /// The TUF root.json to start from (default: the public-good root
        /// embedded in imgate). Needed for a private instance.
        #[arg(long, value_name = "FILE", env = "IMGATE_TUF_ROOT")]
        tuf_root: Option<PathBuf>,
        /// Where the TUF metadata accepted so far is kept between runs
        /// (one subdirectory per repository); a repository serving older
        /// versions than those is refused as a rollback. Keep it on
        /// persistent storage only the updater can write. Default:
        /// $XDG_STATE_HOME/imgate/tuf, else ~/.local/state/imgate/tuf.
        #[arg(long, value_name = "DIR", env = "IMGATE_TUF_STATE")]
        tuf_state: Option<PathBuf>,
        /// Also fetch the signing configuration (signing_config.v0.2.json,
        /// the services `imgate sign --signing-config` uses) from the same
        /// repository and write it here (atomically).
        #[arg(long, value_name = "FILE")]
        signing_config_out: Option<PathBuf>,
    },
}

/// Largest TUF root.json read (the public-good one is ~6 KiB).
const MAX_TUF_ROOT_BYTES: u64 = 512 * 1024;

pub async fn run(args: Args) -> anyhow::Result<Outcome> {
    match args.command {
        Command::Update {
            out,
            tuf_url,
            tuf_root,
            tuf_state,
            signing_config_out,
        } => {
            let anchor = match &tuf_root {
                Some(path) => Some(read_bounded(path)?),
                None => None,
            };
            let state = match tuf_state {
                Some(dir) => dir,
                None => default_state_dir()?,
            };
            let bytes = fetch_trusted_root(&tuf_url, anchor.as_deref(), &state).await?;
            if let Some(path) = &signing_config_out {
                let config = fetch_signing_config(&tuf_url, anchor.as_deref(), &state).await?;
                write_atomically(path, &config)?;
                eprintln!(
                    "imgate: signing configuration from {tuf_url} written to {}",
                    path.display()
                );
            }
            match out {
                Some(path) => {
                    write_atomically(&path, &bytes)?;
                    eprintln!(
                        "imgate: trusted root from {tuf_url} written to {}",
                        path.display()
                    );
                }
                None => crate::out::bytes(&bytes)?,
            }
            Ok(Outcome::Ok)
        }
    }
}

/// The XDG state directory for imgate's TUF metadata.
fn default_state_dir() -> anyhow::Result<PathBuf> {
    let nonempty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let base = match (nonempty("XDG_STATE_HOME"), nonempty("HOME")) {
        (Some(state), _) => PathBuf::from(state),
        (None, Some(home)) => PathBuf::from(home).join(".local/state"),
        (None, None) => anyhow::bail!(
            "no directory for the TUF state: neither XDG_STATE_HOME nor HOME is set; \
             give --tuf-state DIR"
        ),
    };
    Ok(base.join("imgate/tuf"))
}

fn read_bounded(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open TUF root {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_TUF_ROOT_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read TUF root {}", path.display()))?;
    anyhow::ensure!(
        bytes.len() as u64 <= MAX_TUF_ROOT_BYTES,
        "TUF root {} is larger than {MAX_TUF_ROOT_BYTES} bytes",
        path.display()
    );
    Ok(bytes)
}

/// Write through a temporary file beside the destination and rename, so a
/// webhook reading the file never sees half a root. A symlink at `path` is
/// followed (the link stays, the file it names is replaced), and an existing
/// file keeps its permission bits: a root another user's webhook reads must
/// stay readable to it. A new file gets the usual 0666 less the umask.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let target = follow_links(path)?;
    let existing = match std::fs::metadata(&target) {
        Ok(meta) => Some(meta.permissions()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", target.display())),
    };
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // Created with 0666 less the umask; an existing file's bits were chosen
    // by someone on purpose, so they are set exactly.
    let mut tmp = tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    let written = || format!("cannot write {}", target.display());
    if let Some(mode) = existing {
        tmp.as_file().set_permissions(mode).with_context(written)?;
    }
    tmp.write_all(bytes).with_context(written)?;
    tmp.as_file().sync_all().with_context(written)?;
    tmp.persist(&target).with_context(written)?;
    Ok(())
}

/// Links followed before giving up, as the kernel does (`ELOOP`).
const MAX_LINKS: usize = 40;

/// The file `path` names once every symlink in its last component is
/// followed; a dangling link names the file it would create.
fn follow_links(path: &Path) -> anyhow::Result<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let next = std::fs::read_link(&current)
                    .with_context(|| format!("cannot read the link {}", current.display()))?;
                current = match current.parent() {
                    Some(dir) if next.is_relative() => dir.join(next),
                    _ => next,
                };
            }
            Ok(_) => return Ok(current),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(current),
            Err(err) => {
                return Err(err).with_context(|| format!("cannot read {}", current.display()))
            }
        }
    }
    anyhow::bail!(
        "{}: more than {MAX_LINKS} symbolic links to follow",
        path.display()
    )
}
