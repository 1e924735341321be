//! `imgate resolve`.

use super::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args) -> anyhow::Result<Outcome> {
    anyhow::bail!("imgate resolve is not built yet")
}
