#!/usr/bin/env python3
"""Verify an image signature bundle with sigstore-python, at its defaults.

sigstore-python (PyPI `sigstore`, 4.x) is the Sigstore project's Python
client; it shares no code with imgate. This runs its verifier exactly as its
CLI builds it from a client trust configuration (`--trust-config`:
trusted root and signing configuration), with no option relaxed: the
certificate chain at the signing time, the SCT, the Rekor entry (inclusion
proof, checkpoint, SET) and every RFC 3161 timestamp are checked, and the
certificate must name IDENTITY and ISSUER.

The CLI itself (`sigstore verify identity`) cannot take an image bundle:
after verifying, it parses the in-toto statement with a model that requires
`subject[].name`, which cosign 3's image signatures (and so imgate's, byte
for byte the same statement) do not have. So the last step, that the
statement names DIGEST, is done here on the payload sigstore-python
returned as verified.

usage:
  sigstore_python_verify.py TRUST_CONFIG BUNDLE IDENTITY ISSUER DIGEST

Prints `OK` and exits 0 when everything holds; exits 1 with the reason
otherwise.
"""

import json
import sys

try:
    from sigstore.errors import VerificationError
    from sigstore.models import Bundle, ClientTrustConfig
    from sigstore.verify import Verifier, policy
except ImportError as err:  # the test turns this into a failure, not a skip
    print(f"sigstore-python is not installed ({err}): run scripts/install-deps.sh --with-python")
    sys.exit(3)


def main(trust_config, bundle_path, identity, issuer, digest):
    with open(trust_config) as f:
        trust = ClientTrustConfig.from_json(f.read())
    with open(bundle_path) as f:
        bundle = Bundle.from_json(f.read())
    verifier = Verifier(trusted_root=trust.trusted_root)
    try:
        payload_type, payload = verifier.verify_dsse(
            bundle, policy.Identity(identity=identity, issuer=issuer)
        )
    except VerificationError as err:
        print(f"FAIL: {err}")
        return 1
    if payload_type != "application/vnd.in-toto+json":
        print(f"FAIL: payload type {payload_type}")
        return 1
    statement = json.loads(payload)
    algorithm, _, hexdigest = digest.partition(":")
    named = any(
        s.get("digest", {}).get(algorithm) == hexdigest for s in statement.get("subject", [])
    )
    if not named:
        print(f"FAIL: the statement does not name {digest}: {statement.get('subject')}")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 6:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:]))
