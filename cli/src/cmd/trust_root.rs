//! `imgate trust-root update`: fetch Sigstore's trusted root through its TUF
//! repository (or a private instance's), verified from the embedded TUF root,
//! and write it where `--trusted-root` or the policy's `trustRoot:` can use
//! it. Exit 0 when written, 2 when the update failed (nothing is written).

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use imgate_core::sigstore::{fetch_trusted_root, PUBLIC_GOOD_TUF_URL};

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
        } => {
            let anchor = match &tuf_root {
                Some(path) => Some(read_bounded(path)?),
                None => None,
            };
            let bytes = fetch_trusted_root(&tuf_url, anchor.as_deref()).await?;
            match out {
                Some(path) => {
                    write_atomically(&path, &bytes)?;
                    eprintln!(
                        "imgate: trusted root from {tuf_url} written to {}",
                        path.display()
                    );
                }
                None => std::io::stdout()
                    .write_all(&bytes)
                    .context("writing the trusted root to stdout")?,
            }
            Ok(Outcome::Ok)
        }
    }
}

fn read_bounded(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
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

/// Write through a temporary file in the same directory and rename, so a
/// webhook reading the file never sees half a root.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => std::path::Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
