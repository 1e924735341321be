//! `imgate pin`: rewrite image references in Kubernetes YAML and Dockerfiles
//! to digests.
//!
//! Three phases, so that a failure anywhere touches no file: read and scan
//! every input (bad YAML or a bad reference stops here), resolve each
//! distinct reference once with bounded parallelism (any failure stops
//! here), then write. The byte-exact finding and rewriting lives in
//! `imgate_core::pin`; this module only does files, the registry and output.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use futures::stream::{self, StreamExt};
use imgate_core::pin::{self, ImageSpan};
use imgate_core::reference::ImageRef;

use super::common::RegistryArgs;
use super::Outcome;

/// Rewrite image references to `registry/repo:tag@sha256:…`.
///
/// Finds the images of Pods and of the pod templates of Deployment,
/// StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job, CronJob
/// (and `List` items): containers, initContainers, ephemeralContainers.
/// Only the image values change; comments, quoting, order, indentation and
/// line endings stay byte-for-byte. Each distinct image is resolved once.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Inputs: a directory is walked recursively for *.yaml and *.yml (sorted; hidden
entries skipped); a file is read as a Dockerfile when named Dockerfile,
Containerfile, *.Dockerfile or Dockerfile.* (or with --dockerfile), else as
YAML; `-` reads standard input.

Output: with -w each changed file is replaced atomically (same permissions);
unchanged files are not touched. Without -w the result goes to stdout: several
YAML files are printed as one stream, separated by `---` lines (ready for
`kubectl apply -f -`); several inputs that include a Dockerfile need -w.

Already pinned references (with a digest) are left alone unless --refresh.
Values with a variable (`$VAR`, `${VAR}`, `{{ }}`, e.g. FROM ${BASE}) cannot be
pinned: they are listed on stderr and left as written.

Exit status: 0 done (or --check: everything pinned), 1 --check found images to
pin, 2 error (unreadable input, invalid YAML, bad reference, registry failure);
on an error no file is written.")]
pub struct Args {
    /// Files or directories to pin; `-` reads standard input.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Write the results back to the files (atomically) instead of stdout.
    #[arg(short = 'w', long = "write", conflicts_with = "check")]
    pub write: bool,
    /// Change nothing: list every image to pin as FILE:LINE: IMAGE and exit 1 if there is any.
    #[arg(long)]
    pub check: bool,
    /// Resolve the tags of already pinned references again and update their digests.
    #[arg(long)]
    pub refresh: bool,
    /// Read every input (also `-`) as a Dockerfile.
    #[arg(long)]
    pub dockerfile: bool,
    /// How many registry lookups run at once.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub jobs: usize,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Syntax {
    Yaml,
    Dockerfile,
}

/// One input: where it comes from and how to read it.
#[derive(Debug)]
struct Input {
    /// How it is named in messages (`-` for stdin).
    label: String,
    /// The file to write back to; `None` for stdin.
    path: Option<PathBuf>,
    syntax: Syntax,
}

/// An input read and scanned.
#[derive(Debug)]
struct Scanned {
    input: Input,
    text: String,
    sites: Vec<ImageSpan>,
    /// The parsed reference of each site (`None` for templated ones).
    refs: Vec<Option<ImageRef>>,
}

pub async fn run(args: Args) -> anyhow::Result<Outcome> {
    let inputs = collect_inputs(&args)?;
    let reads_stdin = inputs.iter().any(|i| i.path.is_none());
    if reads_stdin && args.registry.password_stdin {
        bail!("`-` and --password-stdin both need standard input; pass the manifests as files");
    }
    if reads_stdin && args.write {
        bail!("-w cannot write back to standard input");
    }
    if !args.write && !args.check && inputs.len() > 1 {
        if let Some(d) = inputs.iter().find(|i| i.syntax == Syntax::Dockerfile) {
            bail!(
                "{} is a Dockerfile among several inputs: use -w to pin them in place",
                d.label
            );
        }
    }

    // Phase 1: read and scan everything.
    let mut files = Vec::with_capacity(inputs.len());
    for input in inputs {
        files.push(scan(input)?);
    }
    for file in &files {
        for site in file.sites.iter().filter(|s| s.templated) {
            eprintln!(
                "imgate: {}:{}: {} uses a variable; left as written",
                file.input.label,
                site.use_line(),
                site.image
            );
        }
    }
    if args.check && !args.refresh {
        let unpinned = report_check(&files, |_, r| r.digest.is_none().then(String::new))?;
        return Ok(if unpinned { Outcome::No } else { Outcome::Ok });
    }

    // Phase 2: resolve each distinct reference once.
    let resolved = resolve_all(&args, &files).await?;
    let new_value = |r: &ImageRef| {
        pin::resolution_query(r, args.refresh).and_then(|q| resolved.get(&q).cloned())
    };

    if args.check {
        let stale = report_check(&files, |site, r| match new_value(r) {
            Some(new) if new != site.image && r.digest.is_some() => Some(format!(" (now {new})")),
            Some(new) if new != site.image => Some(String::new()),
            _ => None,
        })?;
        return Ok(if stale { Outcome::No } else { Outcome::Ok });
    }

    // Phase 3: rewrite, then write or print.
    let mut outputs = Vec::with_capacity(files.len());
    let mut changed_sites = 0;
    for file in &files {
        let by_span: HashMap<(usize, usize), String> = file
            .sites
            .iter()
            .zip(&file.refs)
            .filter_map(|(site, r)| {
                let new = new_value(r.as_ref()?)?;
                Some(((site.span.start, site.span.end), new))
            })
            .collect();
        let text = pin::rewrite(&file.text, &file.sites, |site| {
            by_span.get(&(site.span.start, site.span.end)).cloned()
        });
        changed_sites += file
            .sites
            .iter()
            .filter(|s| {
                by_span
                    .get(&(s.span.start, s.span.end))
                    .is_some_and(|n| *n != s.image)
            })
            .map(|s| (s.span.start, s.span.end))
            .collect::<HashSet<_>>()
            .len();
        outputs.push(text);
    }

    if args.write {
        let mut written = 0;
        for (file, text) in files.iter().zip(&outputs) {
            let Some(path) = &file.input.path else {
                continue;
            };
            if *text == file.text {
                continue;
            }
            write_atomically(path, text)
                .with_context(|| format!("writing {}", file.input.label))?;
            written += 1;
        }
        eprintln!("imgate: pinned {changed_sites} image reference(s) in {written} file(s)");
    } else {
        let mut joined = String::new();
        for (i, text) in outputs.iter().enumerate() {
            if i > 0 && !starts_with_document_marker(text) {
                joined.push_str("---\n");
            }
            joined.push_str(text);
            if i + 1 < outputs.len() && !text.is_empty() && !text.ends_with('\n') {
                joined.push('\n');
            }
        }
        crate::out::bytes(joined.as_bytes())?;
    }
    Ok(Outcome::Ok)
}

/// Prints `FILE:LINE: IMAGE<suffix>` for every site (once per span) for
/// which `verdict` gives a suffix; returns whether any was printed.
fn report_check(
    files: &[Scanned],
    mut verdict: impl FnMut(&ImageSpan, &ImageRef) -> Option<String>,
) -> anyhow::Result<bool> {
    let mut any = false;
    for file in files {
        let mut seen = HashSet::new();
        for (site, r) in file.sites.iter().zip(&file.refs) {
            let Some(r) = r else { continue };
            if !seen.insert((site.span.start, site.span.end)) {
                continue;
            }
            if let Some(suffix) = verdict(site, r) {
                outln!("{}:{}: {}{suffix}", file.input.label, site.line, site.image);
                any = true;
            }
        }
    }
    Ok(any)
}

/// Resolves every reference that needs it, at most `--jobs` at a time;
/// returns query → pinned text, or one error listing every failure.
async fn resolve_all(args: &Args, files: &[Scanned]) -> anyhow::Result<HashMap<ImageRef, String>> {
    // Each query with its first use, for error messages.
    let mut queries: Vec<(ImageRef, String)> = Vec::new();
    let mut seen = HashSet::new();
    for file in files {
        for (site, r) in file.sites.iter().zip(&file.refs) {
            let Some(q) = r
                .as_ref()
                .and_then(|r| pin::resolution_query(r, args.refresh))
            else {
                continue;
            };
            if seen.insert(q.clone()) {
                let used = format!("{} at {}:{}", site.image, file.input.label, site.use_line());
                queries.push((q, used));
            }
        }
    }
    if queries.is_empty() {
        return Ok(HashMap::new());
    }
    let client = args
        .registry
        .client(queries.iter().map(|(q, _)| q.registry.as_str()))?;
    let results: Vec<_> = stream::iter(queries)
        .map(|(query, used)| {
            let client = client.clone();
            async move {
                let result = client.resolve(&query).await;
                (query, used, result)
            }
        })
        .buffer_unordered(args.jobs.max(1))
        .collect()
        .await;
    let mut pinned = HashMap::new();
    let mut failures = Vec::new();
    for (query, used, result) in results {
        match result {
            Ok(resolved) => {
                let text = pin::pinned_text(&query, &resolved.manifest.digest);
                pinned.insert(query, text);
            }
            Err(err) => failures.push(format!("cannot resolve {used}: {err}")),
        }
    }
    if !failures.is_empty() {
        failures.sort();
        bail!("{}; no file was changed", failures.join("\n"));
    }
    Ok(pinned)
}

/// Reads and scans one input; errors name the input.
fn scan(input: Input) -> anyhow::Result<Scanned> {
    let text = match &input.path {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", input.label))?
        }
        None => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading standard input")?;
            text
        }
    };
    let sites = match input.syntax {
        Syntax::Yaml => pin::find_yaml_images(&text),
        Syntax::Dockerfile => pin::find_dockerfile_images(&text),
    }
    .with_context(|| input.label.clone())?;
    let refs = sites
        .iter()
        .map(|site| match site.templated {
            true => Ok(None),
            false => site.reference().map(Some),
        })
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| input.label.clone())?;
    Ok(Scanned {
        input,
        text,
        sites,
        refs,
    })
}

/// Expands the command line into inputs: directories walked, duplicates dropped.
fn collect_inputs(args: &Args) -> anyhow::Result<Vec<Input>> {
    let mut inputs = Vec::new();
    let mut seen = HashSet::new();
    for path in &args.paths {
        if path.as_os_str() == "-" {
            let syntax = if args.dockerfile {
                Syntax::Dockerfile
            } else {
                Syntax::Yaml
            };
            inputs.push(Input {
                label: "-".to_string(),
                path: None,
                syntax,
            });
            continue;
        }
        let meta =
            std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
        let mut found = Vec::new();
        if meta.is_dir() {
            walk(path, &mut found).with_context(|| format!("reading {}", path.display()))?;
            if found.is_empty() {
                eprintln!("imgate: {}: no *.yaml or *.yml files", path.display());
            }
        } else {
            found.push(path.clone());
        }
        let explicit = !meta.is_dir();
        for file in found {
            let key = std::fs::canonicalize(&file).unwrap_or_else(|_| file.clone());
            if !seen.insert(key) {
                continue;
            }
            // Directories yield YAML only; Dockerfiles are pinned when named.
            let syntax = if explicit && (args.dockerfile || is_dockerfile_name(&file)) {
                Syntax::Dockerfile
            } else {
                Syntax::Yaml
            };
            inputs.push(Input {
                label: file.display().to_string(),
                path: Some(file),
                syntax,
            });
        }
    }
    Ok(inputs)
}

/// Collects `*.yaml`/`*.yml` under `dir`, sorted, skipping hidden entries and
/// not following symlinked directories (no cycles).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries = std::fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&path, out)?;
        } else if (kind.is_file() || (kind.is_symlink() && path.is_file())) && is_yaml_name(&path) {
            out.push(path);
        }
    }
    Ok(())
}

fn is_yaml_name(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "YAML" | "YML")
    )
}

/// `Dockerfile`, `Containerfile`, `*.Dockerfile`, `Dockerfile.*` (not `*.yaml`).
fn is_dockerfile_name(path: &Path) -> bool {
    if is_yaml_name(path) {
        return false;
    }
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let lower = name.to_ascii_lowercase();
    ["dockerfile", "containerfile"].iter().any(|base| {
        lower == *base
            || lower.ends_with(&format!(".{base}"))
            || lower.starts_with(&format!("{base}."))
    })
}

fn starts_with_document_marker(text: &str) -> bool {
    text.lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .is_some_and(|l| l == "---" || l.starts_with("--- ") || l.starts_with("---\r"))
}

/// Replaces `path` (or the file a symlink points to) with `text`: a temp
/// file in the same directory, synced, given the original permissions, then
/// renamed over the original, so readers see the old or the new file, never half.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let target = std::fs::canonicalize(path)?;
    let dir = target.parent().unwrap_or(Path::new("."));
    let permissions = std::fs::metadata(&target)?.permissions();
    let mut tmp = tempfile::Builder::new()
        .prefix(".imgate-pin-")
        .tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.as_file().set_permissions(permissions)?;
    tmp.persist(&target).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn dockerfile_names() {
        for yes in [
            "Dockerfile",
            "Containerfile",
            "app.Dockerfile",
            "Dockerfile.prod",
            "x/dockerfile",
        ] {
            assert!(is_dockerfile_name(Path::new(yes)), "{yes}");
        }
        for no in [
            "Dockerfile.yaml",
            "deploy.yml",
            "docker-compose.yaml",
            "Dockerfiles",
        ] {
            assert!(!is_dockerfile_name(Path::new(no)), "{no}");
        }
    }

    #[test]
    fn document_marker() {
        assert!(starts_with_document_marker("# c\n---\nkind: Pod\n"));
        assert!(!starts_with_document_marker("kind: Pod\n---\n"));
    }
}
