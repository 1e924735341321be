//! Unit tests for pinning: exact spans, byte-for-byte rewrites, Dockerfiles,
//! and deterministic random round trips (so stable CI covers what the fuzz
//! targets cover).

use std::collections::HashMap;

use rstest::rstest;

use super::*;
use crate::reference::ImageRef;

const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Every workload kind, a `List`, init and ephemeral containers, comments,
/// anchors and aliases, a merge key, every quoting style, flow style, odd
/// spacing, multi-byte text before images, and `image` keys that are not
/// container images (annotations, env, unknown kinds, ConfigMaps).
const SAMPLE: &str = r#"# Ünïcödé comment ☕ before anything
apiVersion: v1
kind: Pod
metadata:
  name: plain   # trailing comment
  annotations:
    image: example.com/not-me:1
    note: "日本語 ☕"
spec:
  initContainers:
    - name: init
      image: 'example.com/single:1'   # single quoted
  containers:
  - name: app
    image: "example.com/double:1"
    env:
      - name: image
        value: example.com/env-not-me:1
      - {name: x, image: example.com/env-not-me:2}
  - {name: flow, image: example.com/flow:1}
  - {name: flowq, image: "example.com/flowq:1"}
  - name: anchored
    image: &img example.com/anchor:1
  - name: aliased
    image: *img
  - &base {name: m, image: example.com/merged:1}
  - <<: *base
    name: m2
  ephemeralContainers:
    - name: debug
      image: "example.com/esc\x3a1"


---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    metadata:
      annotations: {image: "example.com/not-me:2"}
    spec:
      containers:
        - name: web
          image:    example.com/deploy:1    # odd spacing
---
kind: List
apiVersion: v1
items:
- kind: StatefulSet
  metadata: {name: s}
  spec: {template: {spec: {containers: [{name: a, image: 'example.com/sts:1'}]}}}
- kind: DaemonSet
  metadata:
    name: d
  spec:
    template:
      spec:
        containers:
        - image: example.com/ds:1
          name: a
- kind: ReplicaSet
  spec:
    template:
      spec:
        initContainers: [{image: example.com/rs-init:1}]
        containers: [{image: example.com/rs:1}]
- kind: ReplicationController
  spec: {template: {spec: {containers: [{image: example.com/rc:1}]}}}
---
apiVersion: batch/v1
kind: Job
metadata: {name: j}
spec:
  template:
    spec:
      containers:
      - image: example.com/job:1
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: c}
spec:
  schedule: "* * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          containers:
          - image: 'it''s.example.com/cron:1'
---
kind: PodTemplate
template:
  spec:
    containers: [{image: example.com/podtemplate:1}]
---
# not workloads: left alone
kind: Widget
spec: {template: {spec: {containers: [{image: example.com/widget-not-me:1}]}}}
---
kind: ConfigMap
data:
  image: example.com/cm-not-me:1
...
"#;

/// The raw texts (as written, quotes included) imgate must find, in order,
/// with their decoded values.
const EXPECTED: &[(&str, &str)] = &[
    ("'example.com/single:1'", "example.com/single:1"),
    ("\"example.com/double:1\"", "example.com/double:1"),
    ("example.com/flow:1", "example.com/flow:1"),
    ("\"example.com/flowq:1\"", "example.com/flowq:1"),
    ("example.com/anchor:1", "example.com/anchor:1"),
    ("example.com/anchor:1", "example.com/anchor:1"),
    ("example.com/merged:1", "example.com/merged:1"),
    ("example.com/merged:1", "example.com/merged:1"),
    ("\"example.com/esc\\x3a1\"", "example.com/esc:1"),
    ("example.com/deploy:1", "example.com/deploy:1"),
    ("'example.com/sts:1'", "example.com/sts:1"),
    ("example.com/ds:1", "example.com/ds:1"),
    ("example.com/rs-init:1", "example.com/rs-init:1"),
    ("example.com/rs:1", "example.com/rs:1"),
    ("example.com/rc:1", "example.com/rc:1"),
    ("example.com/job:1", "example.com/job:1"),
    ("'it''s.example.com/cron:1'", "it's.example.com/cron:1"),
    ("example.com/podtemplate:1", "example.com/podtemplate:1"),
];

/// Byte span of the one occurrence of `needle` in `text` (asserts it is unique).
fn unique_span(text: &str, needle: &str) -> Range<usize> {
    let found: Vec<usize> = text.match_indices(needle).map(|(i, _)| i).collect();
    assert_eq!(found.len(), 1, "{needle:?} must occur once in the sample");
    found[0]..found[0] + needle.len()
}

fn pinned(image: &str) -> String {
    format!("{image}@{D}")
}

/// Replaces exactly `spans` of `text` (computed independently of the code
/// under test) with `new` texts.
fn splice(text: &str, mut edits: Vec<(Range<usize>, String)>) -> String {
    edits.sort_by_key(|(r, _)| r.start);
    edits.dedup_by_key(|(r, _)| r.start);
    let mut out = text.to_string();
    for (span, new) in edits.into_iter().rev() {
        out.replace_range(span, &new);
    }
    out
}

fn check_sample(text: &str) {
    let sites = find_yaml_images(text).unwrap();
    let found: Vec<&str> = sites.iter().map(|s| &text[s.span.clone()]).collect();
    let expected_raw: Vec<&str> = EXPECTED.iter().map(|(raw, _)| *raw).collect();
    assert_eq!(found, expected_raw, "spans cover exactly the image values");
    let values: Vec<&str> = sites.iter().map(|s| s.image.as_str()).collect();
    let expected_values: Vec<&str> = EXPECTED.iter().map(|(_, v)| *v).collect();
    assert_eq!(values, expected_values);

    let out = rewrite(text, &sites, |s| Some(pinned(&s.image)));
    let edits = EXPECTED
        .iter()
        .map(|(raw, value)| {
            let new = match raw.chars().next() {
                Some('\'') => format!("'{}'", pinned(value).replace('\'', "''")),
                Some('"') => format!("\"{}\"", pinned(value)),
                _ => pinned(value),
            };
            (unique_span(text, raw), new)
        })
        .collect();
    let expected = splice(text, edits);
    assert_eq!(
        out.as_bytes(),
        expected.as_bytes(),
        "only image values change"
    );

    // The rewritten text parses to the same sites with the pinned values.
    let again = find_yaml_images(&out).unwrap();
    let values: Vec<String> = again.iter().map(|s| s.image.clone()).collect();
    let want: Vec<String> = EXPECTED.iter().map(|(_, v)| pinned(v)).collect();
    assert_eq!(values, want);
    // Identity leaves every byte alone (escapes included).
    assert_eq!(rewrite(text, &sites, |s| Some(s.image.clone())), text);
    assert_eq!(rewrite_map(text, &sites, &HashMap::new()), text);
}

#[test]
fn sample_rewrites_only_image_values() {
    check_sample(SAMPLE);
}

#[test]
fn sample_with_crlf_rewrites_only_image_values() {
    let crlf = SAMPLE.replace('\n', "\r\n");
    check_sample(&crlf);
    let sites = find_yaml_images(&crlf).unwrap();
    let lf = find_yaml_images(SAMPLE).unwrap();
    let lines = |s: &[ImageSpan]| s.iter().map(|s| (s.line, s.column)).collect::<Vec<_>>();
    assert_eq!(
        lines(&sites),
        lines(&lf),
        "same lines and columns with CRLF"
    );
}

#[test]
fn sites_carry_line_kind_name_path_and_alias() {
    let sites = find_yaml_images(SAMPLE).unwrap();
    let single = &sites[0];
    assert_eq!((single.line, single.column), (12, 14));
    assert_eq!(single.kind, "Pod");
    assert_eq!(single.name.as_deref(), Some("plain"));
    assert_eq!(single.path, "spec.initContainers[0].image");
    assert_eq!(single.style, ScalarStyle::SingleQuoted);
    let (anchor, alias) = (&sites[4], &sites[5]);
    assert_eq!(anchor.span, alias.span, "an alias is its anchored scalar");
    assert_eq!(anchor.alias_line, None);
    assert_eq!(alias.alias_line, Some(25));
    assert_eq!(alias.use_line(), 25);
    assert_eq!(alias.line, 23);
    assert_eq!(sites[8].path, "spec.ephemeralContainers[0].image");
    assert_eq!(sites[8].style, ScalarStyle::DoubleQuoted);
    let deploy = &sites[9];
    assert_eq!(
        (deploy.kind.as_str(), deploy.name.as_deref(), deploy.line),
        ("Deployment", Some("web"), 45)
    );
    assert_eq!(deploy.path, "spec.template.spec.containers[0].image");
    let cron = &sites[16];
    assert_eq!(cron.kind, "CronJob");
    assert_eq!(
        cron.path,
        "spec.jobTemplate.spec.template.spec.containers[0].image"
    );
    assert_eq!(sites[12].path, "spec.template.spec.initContainers[0].image");
    assert!(sites.iter().all(|s| !s.templated));
}

#[rstest]
#[case::plain("image: a.io/x:1\n", "image: a.io/x:1@D\n")]
#[case::single("image: 'a.io/x:1'\n", "image: 'a.io/x:1@D'\n")]
#[case::double("image: \"a.io/x:1\"\n", "image: \"a.io/x:1@D\"\n")]
#[case::flow("{image: a.io/x:1}", "{image: a.io/x:1@D}")]
#[case::flow_tight("{image: a.io/x:1,name: b}", "{image: a.io/x:1@D,name: b}")]
#[case::comment("image: a.io/x:1 # c\n", "image: a.io/x:1@D # c\n")]
#[case::tagged("image: !!str a.io/x:1\n", "image: !!str a.io/x:1@D\n")]
#[case::no_newline("image: a.io/x:1", "image: a.io/x:1@D")]
#[case::tabs_after("image: a.io/x:1\t\n", "image: a.io/x:1@D\t\n")]
fn quoting_is_kept(#[case] container: &str, #[case] want: &str) {
    let text = format!("kind: Pod\nspec:\n  containers:\n  - {container}");
    let want = format!(
        "kind: Pod\nspec:\n  containers:\n  - {}",
        want.replace('D', D)
    );
    let sites = find_yaml_images(&text).unwrap();
    assert_eq!(sites.len(), 1, "{text}");
    assert_eq!(rewrite(&text, &sites, |s| Some(pinned(&s.image))), want);
}

#[rstest]
#[case::plain_to_quoted(ScalarStyle::Plain, "[::1]:5000/x@sha256:1", "'[::1]:5000/x@sha256:1'")]
#[case::plain_bool(ScalarStyle::Plain, "true", "'true'")]
#[case::plain_ok(ScalarStyle::Plain, "a.io/x:1@sha256:1", "a.io/x:1@sha256:1")]
#[case::single_quote(ScalarStyle::SingleQuoted, "it's", "'it''s'")]
#[case::double_escape(ScalarStyle::DoubleQuoted, "a\"b\\c", "\"a\\\"b\\\\c\"")]
#[case::word(ScalarStyle::Word, "[::1]:5000/x", "[::1]:5000/x")]
fn render_keeps_style_and_escapes(
    #[case] style: ScalarStyle,
    #[case] value: &str,
    #[case] want: &str,
) {
    assert_eq!(render(value, style), want);
}

#[rstest]
#[case::unclosed_flow("kind: Pod\nspec:\n  containers:\n  - image: [x\n", 5)]
#[case::bad_indent("kind: Pod\nspec:\n  a: 1\n b: 2\n", 4)]
#[case::tab_indent("kind: Pod\nspec:\n\tcontainers: []\n", 3)]
#[case::unknown_alias("kind: Pod\nspec: *nope\n", 2)]
fn bad_yaml_names_line(#[case] text: &str, #[case] line: usize) {
    match find_yaml_images(text) {
        Err(PinError::Yaml { line: l, .. }) => assert_eq!(l, line, "{text}"),
        other => panic!("expected a YAML error for {text:?}, got {other:?}"),
    }
}

#[test]
fn yaml_error_message_names_line_and_column() {
    let err = find_yaml_images("kind: Pod\nspec: [\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("line 3 column 1: invalid YAML"), "{msg}");
}

#[rstest]
// Block scalars are reported where their content starts (the parser's mark).
#[case::literal("image: |\n        a.io/x:1\n", "block scalar", 5)]
#[case::folded("image: >-\n        a.io/x:1\n", "block scalar", 5)]
#[case::multiline_plain("image: a.io/x:1\n        more\n", "multi-line plain scalar", 4)]
#[case::multiline_quoted("image: \"a.io/x:1\n        more\"\n", "multi-line quoted scalar", 4)]
fn unsupported_scalars_are_errors(#[case] container: &str, #[case] what: &str, #[case] at: usize) {
    let text = format!("kind: Pod\nspec:\n  containers:\n    - {container}");
    match find_yaml_images(&text) {
        Err(PinError::UnsupportedScalar { style, line, .. }) => {
            assert_eq!(style, what);
            assert_eq!(line, at);
        }
        other => panic!("expected UnsupportedScalar, got {other:?}"),
    }
}

#[test]
fn empty_and_templated_images() {
    let text = "kind: Pod\nspec:\n  containers:\n  - image:\n  - image: ~\n  - image: ${IMAGE}\n  - image: '{{ .Values.image }}'\n  - image: {nested: map}\n";
    let sites = find_yaml_images(text).unwrap();
    let images: Vec<(&str, bool)> = sites
        .iter()
        .map(|s| (s.image.as_str(), s.templated))
        .collect();
    assert_eq!(
        images,
        vec![("${IMAGE}", true), ("{{ .Values.image }}", true)]
    );
    assert_eq!(
        rewrite(text, &sites, |_| Some("a.io/x:1".into())),
        text,
        "templated values are never rewritten"
    );
}

#[test]
fn bad_reference_names_line_and_image() {
    let text = "kind: Pod\nspec:\n  containers:\n  - image: Bad/Image:1\n";
    let sites = find_yaml_images(text).unwrap();
    let err = sites[0].reference().unwrap_err();
    assert!(matches!(&err, PinError::Reference { line: 4, image, .. } if image == "Bad/Image:1"));
    assert!(err.to_string().contains("line 4"), "{err}");
}

#[rstest]
#[case::tag("nginx:1.27", false, Some("docker.io/library/nginx:1.27"))]
#[case::bare("nginx", false, Some("docker.io/library/nginx:latest"))]
#[case::pinned(&format!("nginx:1@{D}"), false, None)]
#[case::pinned_refresh(&format!("nginx:1@{D}"), true, Some("docker.io/library/nginx:1"))]
#[case::digest_only_refresh(&format!("nginx@{D}"), true, None)]
fn resolution_queries(#[case] image: &str, #[case] refresh: bool, #[case] want: Option<&str>) {
    let r = ImageRef::parse(image).unwrap();
    assert_eq!(
        resolution_query(&r, refresh)
            .map(|q| q.to_string())
            .as_deref(),
        want
    );
}

#[test]
fn pinned_text_is_fully_qualified_with_tag() {
    let q = ImageRef::parse("nginx:1.27").unwrap();
    let d = crate::digest::Digest::parse(D).unwrap();
    assert_eq!(
        pinned_text(&q, &d),
        format!("docker.io/library/nginx:1.27@{D}")
    );
}

const DOCKERFILE: &str = "# syntax=docker/dockerfile:1
ARG BASE=example.com/base:1
FROM --platform=$BUILDPLATFORM golang:1.22 AS build
RUN <<EOF
FROM not-an-instruction
EOF
FROM build AS again
FROM scratch
  # comment
FROM ${BASE}
from example.com/lower:1 as Final
FROM \\
  # a comment inside the continuation
  example.com/continued:1 \\
  AS cont
COPY --from=build /x /y
FROM Final
";

#[test]
fn dockerfile_from_lines() {
    let sites = find_dockerfile_images(DOCKERFILE).unwrap();
    let got: Vec<(&str, usize, Option<&str>, bool)> = sites
        .iter()
        .map(|s| (s.image.as_str(), s.line, s.name.as_deref(), s.templated))
        .collect();
    assert_eq!(
        got,
        vec![
            ("golang:1.22", 3, Some("build"), false),
            ("${BASE}", 10, None, true),
            ("example.com/lower:1", 11, Some("Final"), false),
            ("example.com/continued:1", 14, Some("cont"), false),
        ]
    );
    for s in &sites {
        assert_eq!(&DOCKERFILE[s.span.clone()], s.image);
    }
    assert_eq!(sites[0].column, 32);
    let out = rewrite(DOCKERFILE, &sites, |s| Some(pinned(&s.image)));
    let edits = [
        "golang:1.22",
        "example.com/lower:1",
        "example.com/continued:1",
    ]
    .iter()
    .map(|i| (unique_span(DOCKERFILE, i), pinned(i)))
    .collect();
    assert_eq!(out, splice(DOCKERFILE, edits));
}

#[test]
fn dockerfile_escape_directive_and_crlf() {
    let text =
        "# escape=`\r\nFROM `\r\n  example.com/a:1\r\nRUN echo \\\r\nFROM example.com/b:1\r\n";
    let sites = find_dockerfile_images(text).unwrap();
    let got: Vec<(&str, usize)> = sites.iter().map(|s| (s.image.as_str(), s.line)).collect();
    // With ` as escape, `\` does not continue: line 5 is an instruction.
    assert_eq!(got, vec![("example.com/a:1", 3), ("example.com/b:1", 5)]);
    let out = rewrite(text, &sites, |s| Some(pinned(&s.image)));
    assert_eq!(
        out,
        text.replace("example.com/a:1", &pinned("example.com/a:1"))
            .replace("example.com/b:1", &pinned("example.com/b:1"))
    );
}

#[test]
fn dockerfile_with_bom() {
    let sites = find_dockerfile_images("\u{feff}FROM a.io/x:1\n").unwrap();
    assert_eq!(sites.len(), 1);
    assert_eq!(sites[0].span, 8..16, "3 bytes of BOM, then `FROM `");
}

#[test]
fn dockerfile_from_without_image() {
    let err = find_dockerfile_images("FROM --platform=linux/amd64\n").unwrap_err();
    assert!(matches!(err, PinError::Dockerfile { line: 1, .. }), "{err}");
}

/// A small deterministic PRNG (xorshift64*), so the property tests below are
/// reproducible without a proptest dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Strings built from reference-shaped pieces, so many parse and the rest fail
/// in interesting places.
fn random_reference(rng: &mut Rng) -> String {
    const PIECES: &[&str] = &[
        "a",
        "nginx",
        "library",
        "Registry",
        "localhost",
        "example.com",
        ":5000",
        ":",
        "/",
        "/",
        ".",
        "_",
        "__",
        "-",
        "--",
        "@",
        "1.27",
        "latest",
        "v1_2",
        "[::1]",
        "é",
        " ",
        "x",
        "sha256:",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "A",
    ];
    let n = 1 + rng.below(8);
    (0..n).map(|_| rng.pick(PIECES)).collect()
}

#[test]
fn reference_round_trip_property() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut parsed = 0;
    for _ in 0..5000 {
        let input = random_reference(&mut rng);
        let Ok(r) = ImageRef::parse(&input) else {
            continue;
        };
        parsed += 1;
        let printed = r.to_string();
        let again = ImageRef::parse(&printed)
            .unwrap_or_else(|e| panic!("{input:?} printed as {printed:?} does not parse: {e}"));
        assert_eq!(again, r, "{input:?} -> {printed:?}");
        assert_eq!(again.to_string(), printed);
    }
    assert!(
        parsed > 500,
        "the generator should produce valid references ({parsed})"
    );
}

#[test]
fn pin_yaml_property_on_mutated_samples() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    const INSERTS: &[&str] = &[
        "\n",
        "\r\n",
        " ",
        "  ",
        "-",
        ":",
        "'",
        "\"",
        "#",
        "&a ",
        "*a",
        "[",
        "]",
        "{",
        "}",
        ",",
        "image: x\n",
        "---\n",
        "\t",
        "é",
        "\\",
        "|",
        ">",
        "!!str ",
    ];
    let mut parsed = 0;
    for _ in 0..2000 {
        let mut text = SAMPLE.to_string();
        for _ in 0..1 + rng.below(3) {
            let mut at = rng.below(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            if rng.below(2) == 0 {
                text.insert_str(at, rng.pick(INSERTS));
            } else {
                let mut end = (at + 1 + rng.below(4)).min(text.len());
                while !text.is_char_boundary(end) {
                    end += 1;
                }
                text.replace_range(at..end, "");
            }
        }
        let Ok(sites) = find_yaml_images(&text) else {
            continue;
        };
        parsed += 1;
        assert_eq!(rewrite(&text, &sites, |s| Some(s.image.clone())), text);
        for s in sites
            .iter()
            .filter(|s| s.style != ScalarStyle::DoubleQuoted)
        {
            let raw = &text[s.span.clone()];
            assert!(
                raw.contains(s.image.trim_matches('\'')) || s.image.contains('\''),
                "{raw:?} vs {:?}",
                s.image
            );
        }
        // Pinning every site and scanning again finds the same sites, pinned.
        let out = rewrite(&text, &sites, |s| Some(format!("{}@x", s.image)));
        let again = find_yaml_images(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
        let before: Vec<String> = sites
            .iter()
            .map(|s| {
                if s.templated {
                    s.image.clone()
                } else {
                    format!("{}@x", s.image)
                }
            })
            .collect();
        let after: Vec<String> = again.iter().map(|s| s.image.clone()).collect();
        assert_eq!(after, before, "{text}");
    }
    assert!(
        parsed > 200,
        "the mutations should often stay valid YAML ({parsed})"
    );
}

#[test]
fn leading_bom_is_kept() {
    let text = "\u{feff}kind: Pod\nspec:\n  containers:\n  - image: a.io/x:1\n";
    let sites = find_yaml_images(text).unwrap();
    assert_eq!(sites.len(), 1);
    assert_eq!(&text[sites[0].span.clone()], "a.io/x:1");
    assert_eq!(
        rewrite(text, &sites, |s| Some(pinned(&s.image))),
        text.replace("a.io/x:1", &pinned("a.io/x:1"))
    );
}

/// Every (workload, image field) row of the tables, written as YAML, is
/// found and pinned at exactly its value; image volumes included.
#[test]
fn every_workload_and_image_field_is_pinned() {
    use crate::workload::{example_object, WORKLOADS};
    for workload in WORKLOADS {
        for field in workload.image_fields(false) {
            let object = example_object(workload, field, "registry.example/app:1");
            let text = serde_yaml::to_string(&object).unwrap();
            let sites = find_yaml_images(&text).unwrap();
            assert_eq!(sites.len(), 1, "{} {}:\n{text}", workload.kind, field.list);
            let site = &sites[0];
            assert_eq!(&text[site.span.clone()], "registry.example/app:1");
            assert_eq!(site.kind, workload.kind);
            assert!(
                site.path
                    .ends_with(&format!("{}[0].{}", field.list, field.image.join("."))),
                "{}",
                site.path
            );
        }
    }
}

#[test]
fn image_volumes_are_pinned_and_other_volumes_are_not() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n    - name: a\n      image: example.com/a:1\n  volumes:\n    - name: cfg\n      configMap:\n        name: image\n    - name: models\n      image:\n        reference: example.com/models:v2\n        pullPolicy: IfNotPresent\n";
    let sites = find_yaml_images(text).unwrap();
    let found: Vec<(&str, &str)> = sites
        .iter()
        .map(|s| (s.image.as_str(), s.path.as_str()))
        .collect();
    assert_eq!(
        found,
        vec![
            ("example.com/a:1", "spec.containers[0].image"),
            ("example.com/models:v2", "spec.volumes[1].image.reference"),
        ]
    );
}
