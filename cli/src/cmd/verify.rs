//! `imgate verify`.

use super::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args) -> anyhow::Result<Outcome> {
    anyhow::bail!("imgate verify is not built yet")
}
