#!/usr/bin/env python3
"""The predicates imgate's release attests about its own image, made offline.

    predicates.py sbom --out sbom.cdx.json [--recipe static|dockerfile]
    predicates.py provenance --out provenance.json --image REF@sha256:... \
        --builder-id URI [--recipe static|dockerfile] [--revision SHA] \
        [--source URI] [--invocation-id ID] [--started-on RFC3339] \
        [--finished-on RFC3339]

The recipe is how the binary was built: `static` is scripts/build-static.sh
(the host's *-linux-gnu target with glibc linked statically; what
scripts/build-image.sh ships), `dockerfile` the Dockerfile (musl targets
for linux/amd64 and linux/arm64). Both use the cargo profile `image`.

sbom: a CycloneDX 1.5 JSON SBOM of the crates compiled into the imgate
binary for the recipe's targets: the crates `cargo tree` lists as normal
dependencies of the `imgate` package for those targets, procedural
macros and build-only dependencies left out (they run at build time and
leave no code in the binary), each with its version, its package URL
(pkg:cargo/NAME@VERSION), its licence expression, the SHA-256 Cargo.lock
records for it (crates.io's checksum of the .crate file) and its dependency
edges. `imgate attest --type cyclonedx` attaches it.

provenance: an SLSA provenance v1 predicate (https://slsa.dev/provenance/v1)
for the image: the source repository and revision, the builder, the build's
parameters (image, recipe, targets, cargo profile, flags), and
as resolved dependencies the source commit and the Cargo.lock digest.
`imgate attest --type slsaprovenance1` wraps it in an in-toto statement
whose subject is the image digest.

No network: cargo runs with --offline --locked (run `cargo fetch --locked`
first on a fresh machine). The output is deterministic for a revision: the
SBOM's timestamp is the commit time (or SOURCE_DATE_EPOCH), its serial
number is derived from the Cargo.lock digest and the revision.
Exit 0 written, 2 on a usage or input error (the message names it).
"""

import argparse
import datetime
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import tomllib
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = "imgate"
CARGO = os.environ.get("CARGO", "cargo")
# How each recipe builds the binary; the provenance records it. Targets
# None: the host's.
RECIPES = {
    "static": {"file": "scripts/build-static.sh", "profile": "image",
               "rustflags": "-C target-feature=+crt-static", "targets": None},
    "dockerfile": {"file": "Dockerfile", "profile": "image", "rustflags": "",
                   "targets": ["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"]},
}
# Where this generator lives, named in the SBOM's tools and the provenance's buildType.
GENERATOR = "scripts/release/predicates.py"


class InputError(Exception):
    """A missing tool, an unreadable file, an argument that does not fit."""


def run(args):
    try:
        done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)
    except FileNotFoundError as err:
        raise InputError(f"{args[0]} is missing: {err}") from err
    if done.returncode != 0:
        raise InputError(f"{' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def host_target():
    for line in run(["rustc", "-vV"]).splitlines():
        if line.startswith("host: "):
            return line.removeprefix("host: ").strip()
    raise InputError("rustc -vV names no host target")


def targets(recipe):
    return RECIPES[recipe]["targets"] or [host_target()]


def metadata(triples):
    """cargo metadata, its resolve graph narrowed to `triples`."""
    flags = [f for t in triples for f in ("--filter-platform", t)]
    return json.loads(
        run([CARGO, "metadata", "--format-version", "1", "--locked", "--offline", *flags])
    )


def shipped_crates(triples):
    """(name, version) of every crate compiled into the binary for any of `triples`."""
    flags = [f for t in triples for f in ("--target", t)]
    out = run([CARGO, "tree", "--locked", "--offline", "-p", PACKAGE, *flags,
               "-e", "normal,no-proc-macro", "--prefix", "none", "--format", "{p}"])
    crates = set()
    for line in out.splitlines():
        words = line.split()
        if len(words) >= 2 and words[1].startswith("v"):
            crates.add((words[0], words[1][1:]))
    if not crates:
        raise InputError(f"cargo tree listed no crates for {PACKAGE}")
    return crates


def lock_file(revision):
    """Cargo.lock's bytes and contents; it must be the one committed at `revision`."""
    path = ROOT / "Cargo.lock"
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InputError(f"cannot read {path}: {err}") from err
    if data.decode() != run(["git", "show", f"{revision}:Cargo.lock"]):
        raise InputError(f"{path} differs from the one committed at {revision}")
    return data, tomllib.loads(data.decode())


def workspace_package():
    with open(ROOT / "Cargo.toml", "rb") as f:
        return tomllib.load(f)["workspace"]["package"]


def git(*args):
    return run(["git", *args]).strip()


def source_date(revision):
    epoch = os.environ.get("SOURCE_DATE_EPOCH") or git("log", "-1", "--format=%ct", revision)
    try:
        seconds = int(epoch)
    except ValueError as err:
        raise InputError(f"SOURCE_DATE_EPOCH={epoch!r} is not a number of seconds") from err
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def purl(name, version):
    return f"pkg:cargo/{name}@{version}"


def licence(expression):
    # Old crates write "MIT/Apache-2.0", which means "MIT OR Apache-2.0".
    return expression.replace("/", " OR ") if expression else None


def sbom(args):
    built_for = targets(args.recipe)
    meta = metadata(built_for)
    shipped = shipped_crates(built_for)
    revision = args.revision or git("rev-parse", "HEAD")
    lock_bytes, lock = lock_file(revision)
    checksums = {(p["name"], p["version"]): p.get("checksum") for p in lock.get("package", [])}

    packages = {p["id"]: p for p in meta["packages"] if (p["name"], p["version"]) in shipped}
    root = next((p for p in packages.values() if p["name"] == PACKAGE
                 and p["id"] in meta["workspace_members"]), None)
    if root is None:
        raise InputError(f"cargo metadata has no workspace package {PACKAGE}")

    def component(p, kind):
        c = {"type": kind, "bom-ref": purl(p["name"], p["version"]), "name": p["name"],
             "version": p["version"], "purl": purl(p["name"], p["version"])}
        if p.get("description"):
            c["description"] = " ".join(p["description"].split())
        if licence(p.get("license")):
            c["licenses"] = [{"expression": licence(p["license"])}]
        checksum = checksums.get((p["name"], p["version"]))
        if checksum:
            c["hashes"] = [{"alg": "SHA-256", "content": checksum}]
        if p.get("repository"):
            c["externalReferences"] = [{"type": "vcs", "url": p["repository"]}]
        return c

    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    dependencies = []
    for pid in sorted(packages, key=lambda i: (packages[i]["name"], packages[i]["version"])):
        wanted = []
        for dep in nodes.get(pid, {}).get("deps", []):
            normal = any(k["kind"] is None for k in dep["dep_kinds"])
            if normal and dep["pkg"] in packages:
                d = packages[dep["pkg"]]
                wanted.append(purl(d["name"], d["version"]))
        dependencies.append({"ref": purl(packages[pid]["name"], packages[pid]["version"]),
                             "dependsOn": sorted(set(wanted))})

    lock_digest = hashlib.sha256(lock_bytes).hexdigest()
    document = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL,
                                                     f"imgate-sbom:{revision}:{lock_digest}")),
        "version": 1,
        "metadata": {
            "timestamp": source_date(revision),
            "tools": {"components": [{"type": "application", "name": GENERATOR}]},
            "component": component(root, "application"),
            "properties": [
                {"name": "imgate:recipe", "value": RECIPES[args.recipe]["file"]},
                *({"name": "imgate:target", "value": t} for t in built_for),
                {"name": "imgate:revision", "value": revision},
                {"name": "imgate:cargo-lock-sha256", "value": lock_digest},
            ],
        },
        "components": [component(p, "library")
                       for p in sorted(packages.values(), key=lambda p: (p["name"], p["version"]))
                       if p["id"] != root["id"]],
        "dependencies": dependencies,
    }
    return document


def provenance(args):
    if "@sha256:" not in args.image:
        raise InputError(f"--image {args.image}: name the pushed image by digest (REF@sha256:...)")
    recipe = RECIPES[args.recipe]
    ws = workspace_package()
    source = args.source or ws.get("repository")
    if not source:
        raise InputError("Cargo.toml names no repository: pass --source")
    revision = args.revision or git("rev-parse", "HEAD")
    if len(revision) != 40 or any(c not in "0123456789abcdef" for c in revision):
        raise InputError(f"--revision {revision!r} is not a full git commit id")
    lock_bytes, _ = lock_file(revision)
    rustc = run(["rustc", "--version"]).strip()
    cargo = run([CARGO, "--version"]).strip()

    run_details = {"builder": {"id": args.builder_id}}
    meta = {}
    if args.invocation_id:
        meta["invocationId"] = args.invocation_id
    if args.started_on:
        meta["startedOn"] = args.started_on
    if args.finished_on:
        meta["finishedOn"] = args.finished_on
    if meta:
        run_details["metadata"] = meta
    return {
        "buildDefinition": {
            "buildType": f"{source}/blob/{revision}/{GENERATOR}#{args.recipe}-v1",
            "externalParameters": {
                "source": {"uri": f"git+{source}", "digest": {"gitCommit": revision}},
                "image": args.image,
                "recipe": recipe["file"],
                "package": PACKAGE,
                "targets": targets(args.recipe),
                "profile": recipe["profile"],
                "rustflags": recipe["rustflags"],
                "version": ws.get("version", ""),
            },
            "internalParameters": {"rustc": rustc, "cargo": cargo},
            "resolvedDependencies": [
                {"uri": f"git+{source}@{revision}", "digest": {"gitCommit": revision}},
                {"uri": f"git+{source}@{revision}#Cargo.lock", "name": "Cargo.lock",
                 "digest": {"sha256": hashlib.sha256(lock_bytes).hexdigest()}},
            ],
        },
        "runDetails": run_details,
    }


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("sbom", help="CycloneDX JSON SBOM of the binary's crates")
    p = sub.add_parser("provenance", help="SLSA provenance v1 predicate of the image")
    for each in (s, p):
        each.add_argument("--out", required=True, type=pathlib.Path)
        each.add_argument("--recipe", choices=sorted(RECIPES), default="static",
                          help="how the binary was built (default: static)")
        each.add_argument("--revision", help="the git commit built (default: HEAD)")
    p.add_argument("--image", required=True, help="the pushed image, REF@sha256:...")
    p.add_argument("--builder-id", required=True, help="URI of the builder (the CI workflow)")
    p.add_argument("--source", help="source repository URL (default: Cargo.toml's repository)")
    p.add_argument("--invocation-id", help="the CI run's URL or id")
    p.add_argument("--started-on", help="RFC 3339 time the build started")
    p.add_argument("--finished-on", help="RFC 3339 time the build finished")
    args = parser.parse_args(argv)
    try:
        document = sbom(args) if args.what == "sbom" else provenance(args)
        text = json.dumps(document, indent=2, sort_keys=True) + "\n"
        args.out.write_text(text)
    except (InputError, OSError) as err:
        print(f"predicates.py {args.what}: {err}", file=sys.stderr)
        return 2
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
