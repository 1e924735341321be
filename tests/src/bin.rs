//! The real `imgate` binary: built once per test process with cargo, run
//! with a clean environment, a bounded time and optional stdin.

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

/// Builds the `imgate` binary (once per process) and returns its path:
/// `$IMGATE_BIN` if set, else `cargo build -p imgate --bin imgate` into
/// `$CARGO_TARGET_DIR` (or `<workspace>/target`)`/debug/imgate`.
pub fn try_imgate_bin() -> anyhow::Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| build().map_err(|err| format!("{err:#}")))
        .clone()
        .map_err(|err| anyhow::anyhow!(err))
}

/// [`try_imgate_bin`] for tests: panics with the build error, since no test
/// of the binary can go on without it.
#[allow(clippy::panic)]
pub fn imgate_bin() -> PathBuf {
    match try_imgate_bin() {
        Ok(path) => path,
        Err(err) => panic!("cannot build the imgate binary: {err:#}"),
    }
}

fn build() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("IMGATE_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "--quiet", "-p", "imgate", "--bin", "imgate"])
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()
        .context("running cargo build -p imgate")?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
        bail!(
            "cargo build -p imgate failed:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    };
    let bin = target.join("debug").join("imgate");
    if !bin.exists() {
        bail!("cargo built imgate but {} does not exist", bin.display());
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
    let mut command = Command::new(try_imgate_bin()?);
    command.args(args);
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("IMGATE_") || name == "DOCKER_CONFIG" {
            command.env_remove(&key);
        }
    }
    command.envs(env.iter().copied());
    run_bounded(command, stdin, timeout)
}

/// Runs `command` with piped output, feeding `stdin`, killing it after `timeout`.
pub fn run_bounded(
    mut command: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> anyhow::Result<Output> {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
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
