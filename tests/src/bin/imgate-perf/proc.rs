//! Process CPU time and resident memory from `/proc` (Linux only), the
//! numbers behind "CPU µs per review" and "RSS".

use anyhow::Context;

/// Clock ticks per second of `utime`/`stime` (`getconf CLK_TCK`, 100 if unknown).
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|ticks| *ticks > 0.0)
        .unwrap_or(100.0)
}

/// User plus system CPU seconds the process `pid` has used.
pub fn cpu_seconds(pid: u32, ticks: f64) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("{path} has no ')'"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let field = |index: usize| -> anyhow::Result<f64> {
        fields
            .get(index)
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("{path}: field {} unreadable", index + 3))
    };
    Ok((field(11)? + field(12)?) / ticks)
}

/// Resident set size of `pid` in MiB (`VmRSS`).
pub fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .with_context(|| format!("{path} has no VmRSS"))?;
    Ok(kib / 1024.0)
}
