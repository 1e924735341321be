//! The real `imgate` binary (`$IMGATE_BIN`, built before the tests run), run
//! with a clean environment, a bounded time and optional stdin; and the Python
//! the tests run their independent checkers with.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long one `imgate` run may take before it is killed.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The Python interpreter the tests run their independent checkers with:
/// `$IMGATE_PYTHON` (the Makefile points it at the project virtualenv that
/// `scripts/install-deps.sh --with-python` fills), else `<workspace>/.venv`,
/// else `python3` from `PATH`.
pub fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("IMGATE_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = workspace_root().join(".venv/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

/// The `imgate` binary the scenarios drive: `$IMGATE_BIN`. Cargo names a
/// binary to integration tests only in its own package
/// (`CARGO_BIN_EXE_imgate` in `cli/`), and these scenarios live in
/// `imgate-tests`, so the Makefile builds the binary first and passes its
/// path. Nothing here runs `cargo build`: a test that built the binary
/// itself could build it with other features than the ones under test, and
/// would compete for the build lock with the cargo that runs it.
pub fn try_imgate_bin() -> anyhow::Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| find().map_err(|err| format!("{err:#}")))
        .clone()
        .map_err(|err| anyhow::anyhow!(err))
}

/// [`try_imgate_bin`] for tests: panics with the reason, since no test of
/// the binary can go on without it.
#[allow(clippy::panic)]
pub fn imgate_bin() -> PathBuf {
    match try_imgate_bin() {
        Ok(path) => path,
        Err(err) => panic!("{err:#}"),
    }
}

/// How to get a binary, for the error messages.
const HOW: &str = "build it with `cargo build -p imgate` and run the tests with \
    IMGATE_BIN=${CARGO_TARGET_DIR:-target}/debug/imgate (make test does both)";

fn find() -> anyhow::Result<PathBuf> {
    let Some(bin) = std::env::var_os("IMGATE_BIN") else {
        bail!("IMGATE_BIN is not set, so there is no imgate binary to test: {HOW}");
    };
    // Relative to the workspace, like CARGO_TARGET_DIR; tests run with the
    // package directory as their working directory.
    let bin = workspace_root().join(bin);
    let meta = std::fs::metadata(&bin)
        .with_context(|| format!("IMGATE_BIN={}: no such binary: {HOW}", bin.display()))?;
    if !meta.is_file() {
        bail!("IMGATE_BIN={} is not a file: {HOW}", bin.display());
    }
    Ok(bin)
}

/// Runs `imgate ARGS` with `env` added to a clean environment (no inherited
/// `IMGATE_*` or `DOCKER_CONFIG`), `stdin` fed if given, killed after
/// [`RUN_TIMEOUT`].
pub fn run_imgate<I, S>(
    args: I,
    env: &[(&str, &str)],
    stdin: Option<&[u8]>,
) -> anyhow::Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_imgate_with_timeout(args, env, stdin, RUN_TIMEOUT)
}

/// [`run_imgate`] with another time limit.
pub fn run_imgate_with_timeout<I, S>(
    args: I,
    env: &[(&str, &str)],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> anyhow::Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_bounded(imgate_command(args, env)?, stdin, timeout)
}

/// [`run_imgate`] with standard output a stream whose reader has already
/// gone, as under `imgate … | head -1` once `head` has its line: a write
/// fails with EPIPE, as on a pipe (a socket pair, since `std::io::pipe` is
/// newer than the MSRV).
pub fn run_imgate_closed_stdout<I, S>(args: I, env: &[(&str, &str)]) -> anyhow::Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let (writer, reader) =
        std::os::unix::net::UnixStream::pair().context("making a socket pair")?;
    drop(reader);
    let writer = std::os::fd::OwnedFd::from(writer);
    run_bounded_to(imgate_command(args, env)?, None, writer.into(), RUN_TIMEOUT)
}

/// The binary with `args`, without the caller's `IMGATE_*` settings and
/// Docker configuration, and with `env`.
fn imgate_command<I, S>(args: I, env: &[(&str, &str)]) -> anyhow::Result<Command>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(try_imgate_bin()?);
    command.args(args);
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("IMGATE_") || name == "DOCKER_CONFIG" {
            command.env_remove(&key);
        }
    }
    command.envs(env.iter().copied());
    Ok(command)
}

/// Runs `command` with piped output, feeding `stdin`, killing it after `timeout`.
pub fn run_bounded(
    command: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> anyhow::Result<Output> {
    run_bounded_to(command, stdin, Stdio::piped(), timeout)
}

/// [`run_bounded`] with standard output sent to `stdout` (captured only
/// when that is [`Stdio::piped`]).
fn run_bounded_to(
    mut command: Command,
    stdin: Option<&[u8]>,
    stdout: Stdio,
    timeout: Duration,
) -> anyhow::Result<Output> {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(stdout)
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {:?}", command.get_program()))?;
    // Readers and writer on threads so a full pipe never blocks the child.
    let writer = match (child.stdin.take(), stdin) {
        (Some(mut pipe), Some(bytes)) => {
            let bytes = bytes.to_vec();
            Some(std::thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            }))
        }
        _ => None,
    };
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut out);
            }
            out
        })
    };
    let stdout = read(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = read(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{:?} did not finish within {timeout:?}",
                command.get_program()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    let join = |handle: std::thread::JoinHandle<Vec<u8>>| handle.join().unwrap_or_default();
    Ok(Output {
        status,
        stdout: join(stdout),
        stderr: join(stderr),
    })
}
