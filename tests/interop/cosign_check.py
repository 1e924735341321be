#!/usr/bin/env python3
"""Independent check of cosign signatures stored in a Distribution registry.

Written from cosign's published format (shared/FORMATS.md: the `.sig` tag
with simple-signing payloads, and Sigstore bundle v0.3 referrers), with
plain HTTP requests (urllib) and the `cryptography` package. It shares no
code with imgate, so a signature imgate writes passing this check is
evidence that other cosign-format verifiers read it too.

usage:
  cosign_check.py REGISTRY REPO DIGEST PUBKEY.pem [--http | --ca FILE]
                  [--bundle] [--annotation K=V ...] [--identity NAME] [--json]

  REGISTRY   host[:port] of the registry (also the first part of the
             identity a legacy payload must name: REGISTRY/REPO)
  REPO       repository inside the registry, e.g. team/app
  DIGEST     the signed manifest's digest, sha256:<hex>
  PUBKEY.pem the PKIX public key (ECDSA P-256) the signature must verify with
  --http     plain HTTP (default: HTTPS with the system's trust store)
  --ca FILE  HTTPS trusting FILE
  --bundle   check Sigstore bundles (referrers API, else the referrers tag
             schema `sha256-<hex>`) instead of the legacy `.sig` tag
  --annotation K=V
             the signature must carry this annotation (legacy: in the
             payload's `optional`; bundle: in the statement subject's
             `annotations`)
  --identity NAME
             the docker-reference a legacy payload must name (default
             REGISTRY/REPO; for data signed under another registry name)
  --json     print the summary as JSON on stdout

Exit 0 when at least one signature passes every check, 1 when none does
(or none exists), 2 on a usage error or when the registry cannot be reached.
Needs: pip install cryptography (and optionally securesystemslib, whose DSSE
verifier then checks every bundle a second time).
"""
import argparse
import base64
import hashlib
import json
import ssl
import sys
import urllib.error
import urllib.request

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

try:  # optional: a second DSSE implementation to cross-check with
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey
except ImportError:
    Envelope = SSlibKey = None

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST])

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIMPLE_SIGNING_TYPE = "cosign container image signature"

BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
IN_TOTO = "application/vnd.in-toto+json"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
COSIGN_SIGN = "https://sigstore.dev/cosign/sign/v1"
EMPTY_BLOB = b"{}"
EMPTY_DIGEST = "sha256:" + hashlib.sha256(EMPTY_BLOB).hexdigest()

# Results of the securesystemslib cross-check, one per bundle that reached it.
CROSS_CHECKS = []


class Unreachable(Exception):
    """The registry could not be asked at all (exit 2, not a verdict)."""


class Registry:
    def __init__(self, host, http, ca):
        self.base = f"{'http' if http else 'https'}://{host}/v2/"
        if http:
            self.context = None
        else:
            self.context = ssl.create_default_context(cafile=ca)
        self.requests = 0

    def get(self, path, accept=None):
        """(status, headers, body); 404 and other HTTP errors are returned, not raised."""
        request = urllib.request.Request(self.base + path)
        if accept:
            request.add_header("Accept", accept)
        self.requests += 1
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=30) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers, err.read()
        except (urllib.error.URLError, OSError) as err:
            raise Unreachable(f"GET {self.base + path}: {err}") from err

    def manifest(self, repo, reference, problems):
        """The manifest bytes and JSON at a tag or digest, checked against
        the digest it was asked by (or the registry's Docker-Content-Digest)."""
        status, headers, body = self.get(f"{repo}/manifests/{reference}", ACCEPT)
        if status != 200:
            problems.append(f"manifest {repo}:{reference}: HTTP {status}")
            return None, None
        actual = "sha256:" + hashlib.sha256(body).hexdigest()
        expected = reference if reference.startswith("sha256:") else headers.get("Docker-Content-Digest")
        if expected and expected != actual:
            problems.append(f"manifest {repo}:{reference}: content digest {actual}, expected {expected}")
            return None, None
        try:
            doc = json.loads(body)
        except ValueError as err:
            problems.append(f"manifest {repo}:{reference} is not JSON: {err}")
            return None, None
        return body, doc

    def blob(self, repo, descriptor, problems, what):
        """A blob's bytes, checked against its descriptor's digest and size."""
        digest = descriptor.get("digest", "")
        status, _, body = self.get(f"{repo}/blobs/{digest}")
        if status != 200:
            problems.append(f"{what} blob {digest}: HTTP {status}")
            return None
        actual = "sha256:" + hashlib.sha256(body).hexdigest()
        if actual != digest:
            problems.append(f"{what} blob: content digest {actual} != descriptor {digest}")
            return None
        if descriptor.get("size") != len(body):
            problems.append(f"{what} blob: {len(body)} bytes, descriptor says {descriptor.get('size')}")
            return None
        return body


def b64decode(text):
    """base64, standard or URL-safe, padding optional, line breaks tolerated."""
    compact = "".join(text.split()).rstrip("=")
    padded = compact + "=" * (-len(compact) % 4)
    alphabet = b"-_" if ("-" in compact or "_" in compact) else None
    return base64.b64decode(padded, altchars=alphabet, validate=True)


def verify_der(key, signature, message):
    try:
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        return True
    except InvalidSignature:
        return False


def pae(payload_type, payload):
    """DSSE v1 pre-authentication encoding."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def load_key(path):
    key = serialization.load_pem_public_key(open(path, "rb").read())
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise SystemExit(f"cosign_check: {path} is not an ECDSA P-256 public key")
    return key


def key_hint(key):
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def missing_annotations(found, required):
    found = found or {}
    return [f"annotation {k}={v!r} missing (found {found.get(k)!r})" for k, v in required.items() if found.get(k) != v]


# --- legacy: the `.sig` tag ----------------------------------------------


def check_legacy(reg, args, key):
    hexpart = args.digest.split(":", 1)[1]
    tag = f"sha256-{hexpart}.sig"
    results = []
    top = []
    _, manifest = reg.manifest(args.repo, tag, top)
    if manifest is None:
        return results, top
    if manifest.get("mediaType") != OCI_MANIFEST or manifest.get("schemaVersion") != 2:
        top.append(f"{tag}: not an OCI image manifest (mediaType {manifest.get('mediaType')!r})")
        return results, top
    config = manifest.get("config") or {}
    if config.get("mediaType") != OCI_CONFIG:
        top.append(f"{tag}: config media type {config.get('mediaType')!r}, expected {OCI_CONFIG}")
    else:
        config_bytes = reg.blob(args.repo, config, top, "config")
        if config_bytes is not None:
            try:
                diff_ids = json.loads(config_bytes).get("rootfs", {}).get("diff_ids")
                layer_digests = [layer.get("digest") for layer in manifest.get("layers", [])]
                if diff_ids is not None and diff_ids != layer_digests:
                    top.append(f"{tag}: config rootfs.diff_ids {diff_ids} do not list the layers {layer_digests}")
            except (ValueError, AttributeError) as err:
                top.append(f"{tag}: config is not an image config: {err}")
    for index, layer in enumerate(manifest.get("layers") or []):
        problems = []
        where = f"{tag} layer {index}"
        results.append({"where": where, "problems": problems})
        if layer.get("mediaType") != SIMPLE_SIGNING:
            problems.append(f"media type {layer.get('mediaType')!r}, expected {SIMPLE_SIGNING}")
            continue
        payload = reg.blob(args.repo, layer, problems, "payload")
        if payload is None:
            continue
        signature_b64 = (layer.get("annotations") or {}).get(SIGNATURE_ANNOTATION)
        if not signature_b64:
            problems.append(f"no {SIGNATURE_ANNOTATION} annotation")
            continue
        try:
            signature = b64decode(signature_b64)
        except ValueError as err:
            problems.append(f"signature annotation is not base64: {err}")
            continue
        # The signature covers the blob's exact bytes: nothing re-serialised.
        if not verify_der(key, signature, payload):
            problems.append("signature does not verify with the key over the payload bytes")
            continue
        try:
            doc = json.loads(payload)
            critical = doc["critical"]
            digest = critical["image"]["docker-manifest-digest"]
            kind = critical["type"]
            identity = critical["identity"]["docker-reference"]
            optional = doc.get("optional")
        except (ValueError, KeyError, TypeError) as err:
            problems.append(f"payload is not a simple-signing document: {err!r}")
            continue
        if digest != args.digest:
            problems.append(f"docker-manifest-digest {digest}, expected {args.digest}")
        if kind != SIMPLE_SIGNING_TYPE:
            problems.append(f"type {kind!r}, expected {SIMPLE_SIGNING_TYPE!r}")
        expected_identity = args.identity or f"{args.registry}/{args.repo}"
        if identity != expected_identity:
            problems.append(f"docker-reference {identity!r}, expected {expected_identity!r}")
        if optional is not None and not isinstance(optional, dict):
            problems.append(f"optional is {type(optional).__name__}, expected null or a map")
            optional = {}
        problems.extend(missing_annotations(optional, args.annotations))
    return results, top


# --- bundle: referrers ----------------------------------------------------


def referrers_index(reg, args, top):
    """The referrers of DIGEST: the referrers API if the registry has it,
    else the index at the fallback tag `sha256-<hex>`."""
    status, _, body = reg.get(f"{args.repo}/referrers/{args.digest}", OCI_INDEX)
    if status == 200:
        source = "referrers API"
    elif status in (400, 404):
        tag = "sha256-" + args.digest.split(":", 1)[1]
        body, _ = reg.manifest(args.repo, tag, top)
        if body is None:
            return None, None
        source = f"referrers tag {tag}"
    else:
        top.append(f"referrers API: HTTP {status}")
        return None, None
    try:
        index = json.loads(body)
    except ValueError as err:
        top.append(f"{source}: not JSON: {err}")
        return None, source
    if index.get("mediaType") != OCI_INDEX or index.get("schemaVersion") != 2:
        top.append(f"{source}: not an OCI image index (mediaType {index.get('mediaType')!r})")
        return None, source
    return index, source


def check_bundle_manifest(reg, args, key, descriptor, problems):
    _, manifest = reg.manifest(args.repo, descriptor.get("digest", ""), problems)
    if manifest is None:
        return
    if manifest.get("mediaType") != OCI_MANIFEST:
        problems.append(f"mediaType {manifest.get('mediaType')!r}, expected {OCI_MANIFEST}")
    if manifest.get("artifactType") != BUNDLE_V03:
        problems.append(f"artifactType {manifest.get('artifactType')!r}, expected {BUNDLE_V03}")
    subject = manifest.get("subject") or {}
    if subject.get("digest") != args.digest:
        problems.append(f"subject digest {subject.get('digest')!r}, expected {args.digest}")
    # The subject descriptor must describe the signed manifest, when the
    # registry holds it (test vectors may be attached to absent images).
    status, _, signed = reg.get(f"{args.repo}/manifests/{args.digest}", ACCEPT)
    if status == 200:
        if subject.get("size") != len(signed):
            problems.append(f"subject size {subject.get('size')}, the manifest has {len(signed)} bytes")
        try:
            signed_type = json.loads(signed).get("mediaType")
        except (ValueError, AttributeError):
            signed_type = None
        if signed_type and subject.get("mediaType") != signed_type:
            problems.append(f"subject mediaType {subject.get('mediaType')!r}, the manifest is {signed_type!r}")
    annotations = manifest.get("annotations") or {}
    for name, want in [("dev.sigstore.bundle.content", "dsse-envelope"), ("dev.sigstore.bundle.predicateType", COSIGN_SIGN)]:
        if annotations.get(name) != want:
            problems.append(f"manifest annotation {name}={annotations.get(name)!r}, cosign writes {want!r}")
    config = manifest.get("config") or {}
    if (config.get("mediaType"), config.get("digest"), config.get("size")) != (OCI_EMPTY, EMPTY_DIGEST, 2):
        problems.append(f"config is not the empty descriptor: {config}")
    elif reg.blob(args.repo, config, problems, "config") not in (None, EMPTY_BLOB):
        problems.append("config blob is not {}")
    layers = [layer for layer in manifest.get("layers") or [] if layer.get("mediaType") == BUNDLE_V03]
    if len(layers) != 1:
        problems.append(f"{len(layers)} bundle layers, expected 1")
        if not layers:
            return
    raw = reg.blob(args.repo, layers[0], problems, "bundle")
    if raw is None:
        return
    try:
        bundle = json.loads(raw)
        envelope = bundle["dsseEnvelope"]
        payload_type = envelope["payloadType"]
        payload = b64decode(envelope["payload"])
        signatures = [b64decode(s["sig"]) for s in envelope["signatures"]]
    except (ValueError, KeyError, TypeError) as err:
        problems.append(f"bundle is not a DSSE bundle: {err!r}")
        return
    if bundle.get("mediaType") != BUNDLE_V03:
        problems.append(f"bundle mediaType {bundle.get('mediaType')!r}, expected {BUNDLE_V03}")
    if payload_type != IN_TOTO:
        problems.append(f"payloadType {payload_type!r}, expected {IN_TOTO}")
    hint = ((bundle.get("verificationMaterial") or {}).get("publicKey") or {}).get("hint")
    if hint is not None and hint != key_hint(key):
        problems.append(f"publicKey.hint {hint!r} is not this key's ({key_hint(key)!r})")
    message = pae(payload_type, payload)
    if not any(verify_der(key, sig, message) for sig in signatures):
        problems.append(f"none of {len(signatures)} DSSE signatures verifies with the key over the PAE")
        return
    cross = dsse_cross_check(envelope, key)
    CROSS_CHECKS.append(cross)
    if cross is False:
        problems.append("securesystemslib's DSSE verification disagrees")
    try:
        statement = json.loads(payload)
        kind = statement["_type"]
        predicate_type = statement["predicateType"]
        subjects = statement["subject"]
    except (ValueError, KeyError, TypeError) as err:
        problems.append(f"payload is not an in-toto statement: {err!r}")
        return
    if kind != STATEMENT_V1:
        problems.append(f"_type {kind!r}, expected {STATEMENT_V1}")
    if predicate_type != COSIGN_SIGN:
        problems.append(f"predicateType {predicate_type!r}, expected {COSIGN_SIGN}")
    hexpart = args.digest.split(":", 1)[1]
    naming = [s for s in subjects if isinstance(s, dict) and (s.get("digest") or {}).get("sha256") == hexpart]
    if not naming:
        problems.append(f"no statement subject has sha256 {hexpart}")
        return
    if args.annotations and all(missing_annotations(s.get("annotations"), args.annotations) for s in naming):
        problems.extend(missing_annotations(naming[0].get("annotations"), args.annotations))


def dsse_cross_check(envelope, key):
    """Verifies the envelope again with securesystemslib's DSSE code when it
    is installed (a second, independent PAE and verifier). None when it is
    not installed, else whether it verified."""
    if Envelope is None:
        return None
    sslib_key = SSlibKey.from_crypto(key, scheme="ecdsa-sha2-nistp256")
    # cosign (and imgate) write no keyid; securesystemslib matches on it.
    doc = dict(envelope)
    doc["signatures"] = [dict(s, keyid=sslib_key.keyid) for s in envelope["signatures"]]
    try:
        Envelope.from_dict(doc).verify([sslib_key], 1)
        return True
    except Exception:  # VerificationError, or a malformed envelope
        return False


def check_bundles(reg, args, key):
    results = []
    top = []
    index, source = referrers_index(reg, args, top)
    if index is None:
        return results, top
    for entry in index.get("manifests") or []:
        problems = []
        _, manifest = reg.manifest(args.repo, entry.get("digest", ""), problems)
        if manifest is None:
            results.append({"where": f"{source} entry {entry.get('digest')}", "problems": problems})
            continue
        # artifactType on the index entry is unreliable: select by layer media type.
        if not any(layer.get("mediaType") == BUNDLE_V03 for layer in manifest.get("layers") or []):
            continue
        results.append({"where": f"{source} entry {entry.get('digest')}", "problems": problems})
        check_bundle_manifest(reg, args, key, entry, problems)
    return results, top


def main():
    parser = argparse.ArgumentParser(description="independent cosign signature check")
    parser.add_argument("registry")
    parser.add_argument("repo")
    parser.add_argument("digest")
    parser.add_argument("pubkey")
    transport = parser.add_mutually_exclusive_group()
    transport.add_argument("--http", action="store_true")
    transport.add_argument("--ca")
    parser.add_argument("--bundle", action="store_true")
    parser.add_argument("--annotation", action="append", default=[])
    parser.add_argument("--identity")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.digest.startswith("sha256:") or len(args.digest) != 71:
        parser.error(f"DIGEST must be sha256:<64 hex>, got {args.digest!r}")
    try:
        args.annotations = dict(a.split("=", 1) for a in args.annotation)
    except ValueError:
        parser.error("--annotation takes KEY=VALUE")
    key = load_key(args.pubkey)
    reg = Registry(args.registry, args.http, args.ca)
    try:
        results, top = (check_bundles if args.bundle else check_legacy)(reg, args, key)
    except Unreachable as err:
        print(f"cosign_check: {err}", file=sys.stderr)
        return 2
    for result in results:
        result["verified"] = not result["problems"]
    verified = sum(r["verified"] for r in results)
    summary = {
        "format": "bundle" if args.bundle else "legacy",
        "image": f"{args.registry}/{args.repo}@{args.digest}",
        "signatures": results,
        "problems": top,
        "verified": verified,
        "requests": reg.requests,
    }
    if args.bundle:
        # "securesystemslib": how many bundles it also verified, or null when not installed.
        summary["securesystemslib"] = None if Envelope is None else sum(c is True for c in CROSS_CHECKS)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{summary['format']} signatures of {summary['image']}:")
        for problem in top:
            print(f"  ! {problem}")
        for r in results:
            print(f"  {'ok ' if r['verified'] else 'BAD'} {r['where']}")
            for problem in r["problems"]:
                print(f"      - {problem}")
        print(f"{verified} of {len(results)} signatures verified")
        if args.bundle:
            crossed = summary["securesystemslib"]
            print(f"securesystemslib DSSE cross-check: {'not installed' if crossed is None else f'{crossed} verified'}")
    return 0 if verified else 1


if __name__ == "__main__":
    sys.exit(main())
