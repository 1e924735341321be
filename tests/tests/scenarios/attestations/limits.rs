//! The caps on reading attestations, through the real binary: a statement
//! over `maxStatementBytes`, more than `maxStatements`, more than
//! `maxTotalBytes` are each a denial naming the cap (and a policy can raise
//! them); and peak memory (`/usr/bin/time -v`'s maximum resident set)
//! stays bounded under a flood of large attestations.

use std::process::Command;
use std::time::Duration;

use super::*;

/// An SBOM-like predicate of about `bytes` bytes: many small packages.
fn big_sbom(bytes: usize) -> Value {
    let packages: Vec<Value> = (0..bytes / 110)
        .map(|i| {
            json!({"name": format!("package-{i:08}"), "versionInfo": format!("1.0.{i}"),
                        "SPDXID": format!("SPDXRef-Package-{i:08}"), "licenseConcluded": "MIT"})
        })
        .collect();
    json!({"spdxVersion": "SPDX-2.3", "packages": packages})
}

/// A signed `.att` envelope of about `bytes` (a DSSE envelope holds its
/// statement in base64: a statement of 3 bytes takes 4) about `digest`.
fn big_envelope(key: &SigningKey, digest: &str, bytes: usize) -> Vec<u8> {
    let stmt = statement("https://spdx.dev/Document", digest, big_sbom(bytes / 4 * 3));
    serde_json::to_vec(&envelope(key, &stmt)).unwrap()
}

/// `imgate ARGS` under `/usr/bin/time -v`: the run, and its peak RSS in KiB.
fn run_measured(ctx: &Ctx, args: &[&str]) -> (Run, u64) {
    let mut command = Command::new("/usr/bin/time");
    command.arg("-v").arg(imgate_tests::imgate_bin());
    // A generous request timeout: the machine may be busy, and what is
    // measured here is memory, not speed.
    command
        .args(args)
        .args(ctx.registry.cli_args())
        .args(["--registry-timeout", "60s"]);
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("IMGATE_") || name == "DOCKER_CONFIG" {
            command.env_remove(&key);
        }
    }
    let out = imgate_tests::bin::run_bounded(command, None, Duration::from_secs(300))
        .expect("/usr/bin/time runs (apt package time, scripts/install-deps.sh)");
    let run = Run::from_output(&out);
    let rss = run
        .stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in {run:?}"));
    (run, rss)
}

fn unmet_messages(run: &Run) -> String {
    // /usr/bin/time appends to stderr; stdout is imgate's alone.
    run.json()[0]["unmet"].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_cap_is_a_denial_naming_it() {
    let ctx = Ctx::new(Variant::Http).await;
    let (_, public, key) = ctx.keys("ci");
    let image = ctx.push("caps", "team/app").await;
    let repo = repo_of(&image);
    let huge = big_envelope(&key, &image.digest, 12 << 20);
    ctx.push_att(
        &repo,
        &image.digest,
        &[(huge, att_annotations("https://spdx.dev/Document"))],
    )
    .await;
    let check = [
        "--type",
        "spdxjson",
        "--key",
        public.as_str(),
        image.reference.as_str(),
    ];
    let denied = ctx.assert_denied(
        &check,
        "over the attestation cap maxStatementBytes (8388608 bytes)",
    );
    assert_eq!(denied["unmet"][0]["kind"], "cap");
    assert_eq!(denied["unmet"][0]["exceeded"]["cap"], "statement_bytes");

    // A policy may raise the cap for SBOMs that need it.
    let policy = ctx.path("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "trustedRegistries: [\"{host}/**\"]\nlimits:\n  attestations: {{maxStatementBytes: 16777216}}\nrules:\n  - name: ours\n    images: [\"{host}/**\"]\n    keys: [{{file: {public}}}]\n    attestations:\n      - {{name: sbom, predicateType: spdxjson, conditions: [\"size(predicate.packages) > 80000\"]}}\n",
            host = ctx.registry.host()
        ),
    )
    .unwrap();
    ctx.assert_verified(&["--policy", &policy, &image.reference]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_under_a_flood_of_large_attestations() {
    let ctx = Ctx::new(Variant::Http).await;
    let (_, public, key) = ctx.keys("ci");

    // Within the caps: five 6 MiB SBOMs (30 MiB, under maxTotalBytes 32 MiB)
    // all read, verified and evaluated by a condition over every package.
    let within = ctx.push("flood-within", "team/within").await;
    let layers: Vec<_> = (0..5)
        .map(|i| {
            (
                big_envelope(&key, &within.digest, (6 << 20) - i * 1000),
                att_annotations("https://spdx.dev/Document"),
            )
        })
        .collect();
    ctx.push_att(&repo_of(&within), &within.digest, &layers)
        .await;
    let (run, plain_rss) = run_measured(
        &ctx,
        &[
            "verify-attestation",
            "--output",
            "json",
            "--type",
            "spdxjson",
            "--key",
            &public,
            &within.reference,
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()[0]["statements"].as_array().unwrap().len(), 5);
    let policy = ctx.path("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "trustedRegistries: [\"{host}/**\"]\nrules:\n  - name: ours\n    images: [\"{host}/**\"]\n    keys: [{{file: {public}}}]\n    attestations:\n      - name: sbom\n        predicateType: spdxjson\n        conditions: [\"predicate.packages.all(p, p.licenseConcluded != 'GPL-3.0-only')\"]\n",
            host = ctx.registry.host()
        ),
    )
    .unwrap();
    let (run, cel_rss) = run_measured(
        &ctx,
        &[
            "verify-attestation",
            "--output",
            "json",
            "--policy",
            &policy,
            &within.reference,
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);

    // A flood: 200 layers of a 6 MiB statement (1.2 GiB listed) and six of
    // them under another image (36 MiB, over maxTotalBytes): denied by the
    // caps, read no further than they allow.
    let flood = ctx.push("flood-count", "team/flood").await;
    let one = big_envelope(&key, &flood.digest, 6 << 20);
    let many: Vec<_> = (0..200)
        .map(|_| (one.clone(), att_annotations("https://spdx.dev/Document")))
        .collect();
    ctx.push_att(&repo_of(&flood), &flood.digest, &many).await;
    let (run, count_rss) = run_measured(
        &ctx,
        &[
            "verify-attestation",
            "--output",
            "json",
            "--type",
            "spdxjson",
            "--key",
            &public,
            &flood.reference,
        ],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        unmet_messages(&run).contains("over the attestation cap maxStatements (32)"),
        "{}",
        run.stdout
    );

    let total = ctx.push("flood-total", "team/total").await;
    let six: Vec<_> = (0..6)
        .map(|i| {
            (
                big_envelope(&key, &total.digest, (6 << 20) - i * 1000),
                att_annotations("https://spdx.dev/Document"),
            )
        })
        .collect();
    ctx.push_att(&repo_of(&total), &total.digest, &six).await;
    let (run, total_rss) = run_measured(
        &ctx,
        &[
            "verify-attestation",
            "--output",
            "json",
            "--type",
            "spdxjson",
            "--key",
            &public,
            &total.reference,
        ],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        unmet_messages(&run).contains("over the attestation cap maxTotalBytes (33554432 bytes)"),
        "{}",
        run.stdout
    );

    eprintln!(
        "peak RSS (KiB): 5 x 6 MiB read {plain_rss}, with a condition over every package {cel_rss}; \
         200 x 6 MiB listed {count_rss}; 6 x 6 MiB over the total {total_rss}"
    );
    // Bounds with room for a debug build: what was read (30 MiB, and the
    // JSON output of it) plus the CEL values of what a condition reads; a
    // flood refused by its count reads nothing.
    assert!(plain_rss < 256 * 1024, "{plain_rss} KiB");
    assert!(cel_rss < 1024 * 1024, "{cel_rss} KiB");
    assert!(count_rss < 64 * 1024, "{count_rss} KiB");
    assert!(total_rss < 256 * 1024, "{total_rss} KiB");
}
