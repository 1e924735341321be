//! Standard output for every command. `println!` panics when the reader has
//! gone (`imgate verify … | head -1`); here a failed write is an error the
//! command returns, so it exits 2 and never 0: a pipeline with `pipefail`
//! must not take a verdict it never saw for a pass. Resetting SIGPIPE to its
//! default would end the process quietly instead, but also on a vectored
//! write to a registry connection that has just closed, which must stay an
//! error naming the registry.

use std::fmt;
use std::io::Write;

/// `println!` that returns a failed write with `?` instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::out::write(::std::format_args!("{}\n", ::std::format_args!($($arg)*)))?
    };
}

/// `print!` that returns a failed write with `?` instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::write(::std::format_args!($($arg)*))?
    };
}

/// Writes and flushes, so a closed pipe is seen here, by the command, and
/// not by the exit-time flush that would drop it.
pub fn write(args: fmt::Arguments<'_>) -> anyhow::Result<()> {
    with_stdout(|stdout| stdout.write_fmt(args))
}

/// [`write`] for bytes that must reach standard output exactly as they are.
pub fn bytes(bytes: &[u8]) -> anyhow::Result<()> {
    with_stdout(|stdout| stdout.write_all(bytes))
}

fn with_stdout(
    write: impl FnOnce(&mut std::io::StdoutLock<'static>) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    write(&mut stdout)
        .and_then(|()| stdout.flush())
        .map_err(|err| anyhow::anyhow!("cannot write to standard output: {err}"))
}
