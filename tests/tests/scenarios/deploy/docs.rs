//! docs/ stays true: the CLI reference is what `imgate --help` prints, and
//! every `imgate` command line in the docs names real subcommands and flags.

use std::path::Path;
use std::process::Command;

use serde_yaml::Value;

use super::checks::{check_install, Tls};
use super::{imgate_bin, ok, run, s, seq, workspace_root, DeployTree};

/// docs/cli-reference.md is exactly what scripts/gen-cli-reference.sh makes
/// from the real binary's --help. Regenerate with:
/// `scripts/gen-cli-reference.sh target/debug/imgate > docs/cli-reference.md`.
#[test]
fn cli_reference_is_in_sync() {
    let root = workspace_root();
    let generated = ok(Command::new("bash")
        .arg(root.join("scripts/gen-cli-reference.sh"))
        .arg(imgate_bin()));
    let committed =
        std::fs::read_to_string(root.join("docs/cli-reference.md")).expect("docs/cli-reference.md");
    for sub in [
        "resolve",
        "pin",
        "keys generate",
        "sign",
        "policy check",
        "webhook certs",
    ] {
        assert!(
            generated.contains(&format!("## imgate {sub}\n")),
            "section imgate {sub}"
        );
    }
    assert!(
        generated == committed,
        "docs/cli-reference.md is stale; run: scripts/gen-cli-reference.sh target/debug/imgate > docs/cli-reference.md"
    );
}

/// Every `imgate ...` command line in docs/ names a real subcommand and only
/// flags that subcommand's --help lists.
#[test]
fn docs_commands_use_real_subcommands_and_flags() {
    let root = workspace_root();
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("md")
            || path.file_name().and_then(|n| n.to_str()) == Some("cli-reference.md")
        {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read doc");
        let mut in_code = false;
        let mut joined = String::new();
        for line in text.lines() {
            if line.trim_start().starts_with("```") {
                in_code = !in_code;
                continue;
            }
            if !in_code {
                continue;
            }
            // Shell continuation lines form one command.
            joined.push_str(line.trim_end_matches('\\'));
            joined.push(' ');
            if line.ends_with('\\') {
                continue;
            }
            let command = std::mem::take(&mut joined);
            for invocation in imgate_invocations(&command) {
                check_invocation(&path, &invocation);
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 10,
        "only {checked} imgate commands found in docs/"
    );
}

/// The words after each `imgate` that starts a command (line start, after a
/// pipe, `&&`, `$(`, or `run:`).
pub(crate) fn imgate_invocations(line: &str) -> Vec<Vec<String>> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut found = Vec::new();
    for (i, w) in words.iter().enumerate() {
        // `ref=$(imgate sign ...)`: the command starts after the `$(`.
        let word = w.rsplit("$(").next().unwrap_or(w).trim_start_matches('"');
        let starts = i == 0
            || w.contains("$(")
            || matches!(
                words[i - 1],
                "|" | "&&" | "||" | ";" | "run:" | "-" | "then"
            );
        if starts && (word == "imgate" || word.ends_with("/imgate")) {
            let rest: Vec<String> = words[i + 1..]
                .iter()
                .take_while(|x| !matches!(**x, "|" | "&&" | "||" | ";" | ">" | "2>" | ">>" | "#"))
                .map(|x| x.trim_end_matches(')').trim_end_matches('"').to_string())
                .collect();
            found.push(rest);
        }
    }
    found
}

#[test]
fn docs_command_parser_finds_commands() {
    let found = imgate_invocations(
        r#"ref=$(imgate sign --key env://K --buildx-metadata m.json) && target/release/imgate verify --key a.pub x | grep y"#,
    );
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(
        found[0],
        ["sign", "--key", "env://K", "--buildx-metadata", "m.json"]
    );
    assert_eq!(found[1][..3], ["verify", "--key", "a.pub"]);
    assert!(imgate_invocations("echo imgate is great").is_empty());
}

#[test]
#[should_panic(expected = "--no-such-flag is not in `imgate sign --help`")]
fn docs_command_check_rejects_unknown_flags() {
    check_invocation(
        Path::new("example.md"),
        &[
            "sign".to_string(),
            "--no-such-flag".to_string(),
            "x".to_string(),
        ],
    );
}

#[test]
#[should_panic(expected = "has no known subcommand")]
fn docs_command_check_rejects_unknown_subcommands() {
    check_invocation(
        Path::new("example.md"),
        &["sing".to_string(), "x".to_string()],
    );
}

/// `imgate WORDS` names a real subcommand and only flags its `--help` lists.
pub(crate) fn check_invocation(doc: &Path, words: &[String]) {
    if crate::common::is_pending(words) {
        return;
    }
    // Subcommand path: leading words without dashes that --help accepts.
    let mut path: Vec<String> = Vec::new();
    for w in words.iter().take_while(|w| !w.starts_with('-')) {
        let mut trial = path.clone();
        trial.push(w.clone());
        let out = run(Command::new(imgate_bin()).args(&trial).arg("--help"));
        if !out.status.success() {
            break;
        }
        // A positional argument also "succeeds" when the command takes
        // positionals; stop once --help stops changing.
        let before = run(Command::new(imgate_bin()).args(&path).arg("--help"));
        if before.stdout == out.stdout {
            break;
        }
        path = trial;
    }
    assert!(
        !path.is_empty() || words.iter().all(|w| w.starts_with("--")),
        "{}: `imgate {}` has no known subcommand",
        doc.display(),
        words.join(" ")
    );
    let help = ok(Command::new(imgate_bin()).args(&path).arg("--help"));
    for w in words.iter().filter(|w| w.starts_with("--")) {
        let flag = w.split('=').next().unwrap_or(w);
        assert!(
            help.contains(&format!("{flag} "))
                || help.contains(&format!("{flag}\n"))
                || help.contains(&format!("{flag}="))
                || help.contains(&format!("{flag},"))
                || help.contains(&format!("{flag} <")),
            "{}: `imgate {}`: {flag} is not in `imgate {} --help`",
            doc.display(),
            words.join(" "),
            path.join(" ")
        );
    }
}

/// The fenced block that follows the first line starting with `` `path` ``.
fn doc_block(doc: &str, path: &str) -> String {
    let marker = format!("`{path}`");
    let mut lines = doc.lines().skip_while(|l| !l.starts_with(&marker));
    assert!(lines.next().is_some(), "no `{path}` in the doc");
    let mut lines = lines.skip_while(|l| !l.starts_with("```"));
    lines.next();
    let mut block: String = lines
        .take_while(|l| !l.starts_with("```"))
        .collect::<Vec<_>>()
        .join("\n");
    block.push('\n');
    block
}

/// docs/quickstart-k3s.md's own overlay, files taken from the doc, renders
/// into a safe audit install, and into an enforcing one after the doc's
/// "switch to enforce" edits; its policy passes `imgate policy check` with
/// the key `imgate keys generate` made, exactly as the doc runs them.
#[test]
fn quickstart_overlay_from_the_doc() {
    let doc = std::fs::read_to_string(workspace_root().join("docs/quickstart-k3s.md"))
        .expect("quickstart");
    let kustomization = doc_block(&doc, "my-imgate/kustomization.yaml");
    let policy = doc_block(&doc, "my-imgate/policy/policy.yaml");
    let tree = DeployTree::new();
    let root = tree.dir.path();
    let mine = root.join("my-imgate");
    std::fs::create_dir_all(mine.join("policy")).expect("mkdir");
    std::fs::create_dir_all(mine.join("keys")).expect("mkdir");
    std::fs::write(mine.join("kustomization.yaml"), &kustomization).expect("write");
    std::fs::write(mine.join("policy/policy.yaml"), &policy).expect("write");
    ok(Command::new(imgate_bin())
        .args(["keys", "generate", "--output-prefix", "my-imgate/keys/ci"])
        .env("IMGATE_PASSWORD", "")
        .current_dir(root));
    ok(Command::new(imgate_bin())
        .args(["policy", "check", "my-imgate/policy/policy.yaml"])
        .current_dir(root));

    let r = tree.render("../my-imgate");
    check_install(&r, "Ignore", "audit", Tls::SelfManaged, false);
    let image = s(
        &seq(r.deployment(), "spec.template.spec.containers")[0],
        "image",
    );
    assert!(
        image.starts_with("registry.example.com/platform/imgate@sha256:"),
        "the doc's image override applies: {image}"
    );
    let keys = r.one("ConfigMap", "imgate-keys");
    let pem = keys
        .get("data")
        .and_then(|d| d.get("ci.pub"))
        .and_then(Value::as_str);
    assert!(
        pem.is_some_and(|p| p.contains("BEGIN PUBLIC KEY")),
        "ci.pub in imgate-keys"
    );

    // Step 4 of the doc: switch to enforce.
    std::fs::write(
        mine.join("kustomization.yaml"),
        kustomization.replace("../deploy/overlays/audit", "../deploy/overlays/enforce"),
    )
    .expect("write");
    std::fs::write(
        mine.join("policy/policy.yaml"),
        policy.replace("mode: audit", "mode: enforce"),
    )
    .expect("write");
    let r = tree.render("../my-imgate");
    check_install(&r, "Fail", "enforce", Tls::SelfManaged, false);
}

/// GitHub's heading anchors: lower case, punctuation dropped, spaces → `-`.
fn anchors(markdown: &str) -> Vec<String> {
    markdown
        .lines()
        .filter_map(|l| {
            l.strip_prefix('#')
                .map(|h| h.trim_start_matches('#').trim())
        })
        .map(|h| {
            h.to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == '-' || *c == ' ' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

/// Every relative link in docs/ (outside code blocks) reaches a file, and
/// its `#anchor` a heading there.
#[test]
fn docs_links_resolve() {
    let docs = workspace_root().join("docs");
    let mut links = 0;
    for entry in std::fs::read_dir(&docs).expect("docs/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read doc");
        let mut in_code = false;
        for line in text.lines() {
            if line.trim_start().starts_with("```") {
                in_code = !in_code;
            }
            if in_code {
                continue;
            }
            for (i, _) in line.match_indices("](") {
                let rest = &line[i + 2..];
                let Some(end) = rest.find(')') else { continue };
                let link = &rest[..end];
                if link.starts_with("http") {
                    continue;
                }
                links += 1;
                let (file, anchor) = link.split_once('#').unwrap_or((link, ""));
                let target = if file.is_empty() {
                    path.clone()
                } else {
                    docs.join(file)
                };
                assert!(target.exists(), "{}: broken link {link}", path.display());
                if !anchor.is_empty() {
                    let heads = anchors(&std::fs::read_to_string(&target).expect("read target"));
                    assert!(
                        heads.iter().any(|h| h == anchor),
                        "{}: no heading for {link}",
                        path.display()
                    );
                }
            }
        }
    }
    assert!(links > 20, "only {links} links checked");
}

/// docs/operations.md "Client authentication", exactly as written: its
/// script makes a client CA and the API server's certificate; the
/// kubeconfig names the webhooks' Service (as the manifests define it) and
/// those files; the admission configuration gives that kubeconfig to both
/// webhook plugins; the k3s settings name the admission configuration. The
/// real webhook, given the CA the script made, answers a review presented
/// with the API server's certificate and refuses one without.
#[test]
fn client_authentication_recipe_from_the_doc() {
    use imgate_tests::webhook::{self, ClientIdentity, Webhook, WebhookOptions};

    let doc = std::fs::read_to_string(workspace_root().join("docs/operations.md"))
        .expect("operations.md");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("make-client-certs.sh"),
        doc_block(&doc, "make-client-certs.sh"),
    )
    .expect("write script");
    ok(Command::new("bash")
        .arg("make-client-certs.sh")
        .current_dir(dir.path()));

    // The kubeconfig's user is the Service the webhooks call.
    let tree = DeployTree::new();
    let r = tree.render("overlays/enforce");
    let service = |kind| {
        let hook = r.webhook(kind);
        format!(
            "{}.{}.svc",
            s(hook, "clientConfig.service.name"),
            s(hook, "clientConfig.service.namespace")
        )
    };
    let home = "/etc/rancher/k3s/imgate";
    let kubeconfig: Value =
        serde_yaml::from_str(&doc_block(&doc, &format!("{home}/kubeconfig.yaml"))).expect("YAML");
    let users = seq(&kubeconfig, "users");
    assert_eq!(users.len(), 1, "{kubeconfig:?}");
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        assert_eq!(s(&users[0], "name"), service(kind));
    }
    assert_eq!(
        s(&users[0], "user.client-certificate"),
        format!("{home}/apiserver.crt")
    );
    assert_eq!(
        s(&users[0], "user.client-key"),
        format!("{home}/apiserver.key")
    );

    let admission: Value =
        serde_yaml::from_str(&doc_block(&doc, &format!("{home}/admission.yaml"))).expect("YAML");
    assert_eq!(s(&admission, "apiVersion"), "apiserver.config.k8s.io/v1");
    assert_eq!(s(&admission, "kind"), "AdmissionConfiguration");
    let plugins = seq(&admission, "plugins");
    let mut names: Vec<&str> = plugins.iter().map(|p| s(p, "name")).collect();
    names.sort();
    assert_eq!(
        names,
        ["MutatingAdmissionWebhook", "ValidatingAdmissionWebhook"]
    );
    for plugin in plugins {
        assert_eq!(
            s(plugin, "configuration.apiVersion"),
            "apiserver.config.k8s.io/v1"
        );
        assert_eq!(
            s(plugin, "configuration.kind"),
            "WebhookAdmissionConfiguration"
        );
        assert_eq!(
            s(plugin, "configuration.kubeConfigFile"),
            format!("{home}/kubeconfig.yaml")
        );
    }
    let flag = format!("admission-control-config-file={home}/admission.yaml");
    assert!(
        doc.contains(&format!("--kube-apiserver-arg={flag}")),
        "the k3s flag"
    );
    let k3s: Value =
        serde_yaml::from_str(&doc_block(&doc, "/etc/rancher/k3s/config.yaml")).expect("YAML");
    assert_eq!(super::strings(&k3s, "kube-apiserver-arg"), [flag]);

    // The certificates work with the real webhook.
    let serving = dir.path().join("serving");
    webhook::generate_certs(&serving, false).expect("serving certificate");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "trustedRegistries: [\"registry.example.com/**\"]\n",
    )
    .expect("policy");
    let client_ca = dir.path().join("client-ca.crt").display().to_string();
    let hook = Webhook::start(
        &WebhookOptions::new(&policy, &serving).args(["--client-ca", client_ca.as_str()]),
    )
    .expect("webhook");
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).expect("read");
    let api_server = ClientIdentity {
        cert_pem: read("apiserver.crt"),
        key_pem: read("apiserver.key"),
    };
    let review = webhook::review(
        "doc",
        "team",
        &webhook::pod("team", &["evil.example/app:1"]),
    );
    imgate_tests::block_on(async {
        let (status, body) = hook
            .post(
                &hook.client_as(&api_server).expect("client"),
                "/mutate",
                &review,
            )
            .await
            .expect("answered");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["response"]["uid"], "doc", "{body}");
        let anonymous = hook
            .post(&hook.client(true).expect("client"), "/mutate", &review)
            .await;
        assert!(anonymous.is_err(), "{anonymous:?}");
    });
}

/// Every repository path DEVELOPMENT.md names in backquotes (`core/src/…`,
/// `scripts/bench.sh`, `tests/tests/scenarios/`) exists, so the guide for
/// people changing imgate never points at a file that moved.
#[test]
fn development_md_paths_exist() {
    let root = workspace_root();
    let text = std::fs::read_to_string(root.join("DEVELOPMENT.md")).expect("DEVELOPMENT.md");
    let tops = [
        "cli/",
        "core/",
        "keys/",
        "webhook/",
        "tests/",
        "fuzz/",
        "scripts/",
        "docs/",
        "deploy/",
        "fixtures/",
    ];
    let mut checked = Vec::new();
    let mut missing = Vec::new();
    for (i, quoted) in text.split('`').enumerate() {
        // Odd pieces are inside backquotes.
        if i % 2 == 0 || !tops.iter().any(|top| quoted.starts_with(top)) {
            continue;
        }
        // `deploy*`, `core/src/…` and the like name a family, not a path.
        if quoted.contains(['*', '…', ' ', '<', '$']) {
            continue;
        }
        checked.push(quoted.to_string());
        if !root.join(quoted).exists() {
            missing.push(quoted.to_string());
        }
    }
    assert!(checked.len() >= 30, "found only {checked:?}");
    assert!(
        missing.is_empty(),
        "DEVELOPMENT.md names paths that do not exist: {missing:?}"
    );
}
