"""Checks the release predicates with independent readers, offline.

    check_predicates.py SBOM PROVENANCE CARGO_LOCK REVISION

SBOM: CycloneDX 1.5 JSON, validated against the CycloneDX schema that
cyclonedx-python-lib ships (strict: unknown fields fail); every Cargo.lock
package it names carries Cargo.lock's checksum as its SHA-256.
PROVENANCE: an SLSA provenance v1 predicate, parsed by the in-toto
attestation framework's own protobuf definitions (in-toto-attestation:
unknown or misspelt fields fail), each resolved dependency valid as an
in-toto ResourceDescriptor; it names REVISION and Cargo.lock's SHA-256.
Prints a JSON summary; exits 1 naming the first problem.
"""

import hashlib
import json
import sys
import tomllib

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from google.protobuf import json_format
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def main(sbom_path, provenance_path, lock_path, revision):
    with open(lock_path, "rb") as f:
        lock_bytes = f.read()
    lock = tomllib.loads(lock_bytes.decode())
    lock_digest = hashlib.sha256(lock_bytes).hexdigest()
    checksums = {(p["name"], p["version"]): p.get("checksum") for p in lock["package"]}

    with open(sbom_path) as f:
        sbom_text = f.read()
    error = JsonStrictValidator(SchemaVersion.V1_5).validate_str(sbom_text)
    if error is not None:
        fail(f"the SBOM is not valid CycloneDX 1.5: {error}")
    sbom = json.loads(sbom_text)
    names = []
    for c in sbom["components"]:
        key = (c["name"], c["version"])
        if key not in checksums:
            fail(f"SBOM component {key} is not in Cargo.lock")
        hashes = {h["alg"]: h["content"] for h in c.get("hashes", [])}
        if checksums[key] and hashes.get("SHA-256") != checksums[key]:
            fail(f"SBOM component {key}: SHA-256 {hashes} is not Cargo.lock's {checksums[key]}")
        names.append(c["name"])
    refs = {c["bom-ref"] for c in sbom["components"]} | {sbom["metadata"]["component"]["bom-ref"]}
    for d in sbom["dependencies"]:
        missing = [r for r in [d["ref"], *d["dependsOn"]] if r not in refs]
        if missing:
            fail(f"SBOM dependency edge names unknown components: {missing}")

    with open(provenance_path) as f:
        provenance_text = f.read()
    try:
        provenance = json_format.Parse(provenance_text, provenance_pb2.Provenance())
    except json_format.ParseError as err:
        fail(f"the provenance is not an SLSA v1 predicate: {err}")
    build = provenance.build_definition
    if not build.build_type or not provenance.run_details.builder.id:
        fail("the provenance names no buildType or builder.id")
    digests = {}
    for dep in build.resolved_dependencies:
        try:
            ResourceDescriptor.copy_from_pb(dep).validate()
        except ValueError as err:
            fail(f"resolved dependency {dep}: {err}")
        digests.update(dep.digest)
    if digests.get("gitCommit") != revision:
        fail(f"the provenance's source commit is {digests.get('gitCommit')}, not {revision}")
    if digests.get("sha256") != lock_digest:
        fail(f"the provenance's Cargo.lock digest is {digests.get('sha256')}, not {lock_digest}")

    print(json.dumps({
        "components": sorted(names),
        "root": sbom["metadata"]["component"]["name"],
        "builder": provenance.run_details.builder.id,
        "external": json.loads(json_format.MessageToJson(build))["externalParameters"],
    }))


if __name__ == "__main__":
    if len(sys.argv) != 5:
        fail(__doc__)
    main(*sys.argv[1:])
