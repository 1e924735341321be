//! `imgate-perf`: the benchmark and the soak of the `imgate webhook` binary
//! (`IMGATE_BIN`, else `target/release/imgate`), run by `make bench` and
//! `make soak` (see `docs/performance.md`).
//!
//! ```text
//! imgate-perf bench [--delay-ms 25] [--connections 16] [--duration-s 8]
//!                   [--repeats 3] [--distinct 1000] [--warm-reviews 10000]
//!                   [--json] [--trace]
//! imgate-perf soak  [--duration 60s] [--rate 40] [--deadline-ms 3000] [--json]
//! imgate-perf floor --cert FILE --key FILE --body FILE
//! ```
//!
//! Everything runs on loopback: the real `docker-registry`, the fault
//! proxy, the webhook and the floor server; every phase is bounded in time.

mod bench;
mod cold;
mod floor;
mod lab;
mod load;
mod proc;
mod soak;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("imgate-perf: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<bool> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        bail!("usage: imgate-perf bench|soak|floor [options] (see docs/performance.md)");
    }
    let command = args.remove(0);
    let mut flags = Flags(args);
    if std::env::var_os("IMGATE_BIN").is_none() {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| imgate_tests::bin::workspace_root().join("target"));
        std::env::set_var("IMGATE_BIN", target.join("release").join("imgate"));
    }
    match command.as_str() {
        "floor" => {
            let cert = flags.path("--cert")?;
            let key = flags.path("--key")?;
            let body = flags.path("--body")?;
            flags.done()?;
            floor::run(&cert, &key, &body)?;
            Ok(true)
        }
        "bench" => {
            let defaults = bench::Settings::default();
            let settings = bench::Settings {
                delay: Duration::from_millis(
                    flags.number("--delay-ms", defaults.delay.as_millis() as u64)?,
                ),
                connections: flags.number("--connections", defaults.connections as u64)? as usize,
                duration: Duration::from_secs(
                    flags.number("--duration-s", defaults.duration.as_secs())?,
                ),
                repeats: flags.number("--repeats", defaults.repeats as u64)? as usize,
                distinct: flags.number("--distinct", defaults.distinct as u64)? as usize,
                warm_reviews: flags.number("--warm-reviews", defaults.warm_reviews)?,
                json: flags.switch("--json"),
                trace: flags.switch("--trace"),
            };
            flags.done()?;
            check_binary()?;
            let exe = std::env::current_exe().context("finding imgate-perf itself")?;
            runtime()?.block_on(bench::run(settings, &exe))?;
            Ok(true)
        }
        "soak" => {
            let duration = match flags.value("--duration")? {
                Some(text) => parse_duration(&text)?,
                None => Duration::from_secs(60),
            };
            let settings = soak::Settings {
                duration,
                rate: flags.number("--rate", 40)? as u32,
                deadline: Duration::from_millis(flags.number("--deadline-ms", 3000)?),
                json: flags.switch("--json"),
            };
            flags.done()?;
            check_binary()?;
            runtime()?.block_on(soak::run(settings))
        }
        other => bail!("unknown command {other:?}: use bench, soak or floor"),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn check_binary() -> anyhow::Result<()> {
    let bin = imgate_tests::imgate_bin();
    if !bin.is_file() {
        bail!(
            "{} does not exist: build it (cargo build --release -p imgate) or set IMGATE_BIN",
            bin.display()
        );
    }
    Ok(())
}

/// `90s`, `5m`, `1h` or a bare number of seconds; at most 24 hours.
fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: u64 = number
        .parse()
        .with_context(|| format!("{text:?} is not a duration like 90s, 5m or 1h"))?;
    let seconds = match unit {
        "s" => value,
        "m" => value * 60,
        "h" => value * 3600,
        _ => bail!("{text:?}: unknown unit {unit:?} (use s, m or h)"),
    };
    if seconds == 0 || seconds > 24 * 3600 {
        bail!("{text:?}: the soak runs between 1 second and 24 hours");
    }
    Ok(Duration::from_secs(seconds))
}

/// The remaining command-line flags.
struct Flags(Vec<String>);

impl Flags {
    fn switch(&mut self, name: &str) -> bool {
        let before = self.0.len();
        self.0.retain(|arg| arg != name);
        self.0.len() != before
    }

    fn value(&mut self, name: &str) -> anyhow::Result<Option<String>> {
        let Some(at) = self.0.iter().position(|arg| arg == name) else {
            return Ok(None);
        };
        if at + 1 >= self.0.len() {
            bail!("{name} needs a value");
        }
        let value = self.0.remove(at + 1);
        self.0.remove(at);
        Ok(Some(value))
    }

    fn number(&mut self, name: &str, default: u64) -> anyhow::Result<u64> {
        match self.value(name)? {
            Some(text) => text
                .parse()
                .with_context(|| format!("{name} {text:?} is not a whole number")),
            None => Ok(default),
        }
    }

    fn path(&mut self, name: &str) -> anyhow::Result<PathBuf> {
        match self.value(name)? {
            Some(text) => Ok(PathBuf::from(text)),
            None => bail!("{name} is required"),
        }
    }

    fn done(&self) -> anyhow::Result<()> {
        match self.0.first() {
            Some(arg) => bail!("unknown argument {arg:?}"),
            None => Ok(()),
        }
    }
}
