#!/usr/bin/env python3
"""DSSE attestations without imgate: a verifier and a signer written from
the DSSE protocol (PAE) and the in-toto Statement spec with the
`cryptography` package alone, so that an attestation imgate writes passing
`verify`, and one `sign` writes passing imgate, shows the format is what
other implementations read and write.

usage:
  dsse_attest.py verify ENVELOPE.json PUBKEY.pem DIGEST
      ENVELOPE.json  a DSSE envelope (a legacy `.att` layer's blob) or a
                     Sigstore bundle holding one (`dsseEnvelope`)
      PUBKEY.pem     the PKIX ECDSA P-256 key the signature must verify with
      DIGEST         sha256:<hex> one of the statement's subjects must name
    prints the statement (JSON) and exits 0 when the signature over
    PAE(payloadType, payload) verifies and the subject names DIGEST; exits 1
    otherwise.

  dsse_attest.py sign STATEMENT.json OUT_DIR
      signs the statement with a new P-256 key; writes OUT_DIR/key.pub (the
      public key), OUT_DIR/envelope.json (the DSSE envelope) and
      OUT_DIR/bundle.json (a Sigstore bundle v0.3 holding it, key hint only).
"""
import base64
import hashlib
import json
import os
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPES = ("https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1")


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def b64decode(text: str) -> bytes:
    text = "".join(text.split())
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        return base64.urlsafe_b64decode(text)


def verify(envelope_path: str, key_path: str, digest: str) -> int:
    with open(envelope_path, "rb") as f:
        doc = json.load(f)
    envelope = doc.get("dsseEnvelope", doc)
    if envelope.get("payloadType") != PAYLOAD_TYPE:
        print(f"payloadType is {envelope.get('payloadType')!r}", file=sys.stderr)
        return 1
    payload = b64decode(envelope["payload"])
    with open(key_path, "rb") as f:
        key = serialization.load_pem_public_key(f.read())
    message = pae(envelope["payloadType"], payload)
    verified = False
    for sig in envelope.get("signatures", []):
        try:
            key.verify(b64decode(sig["sig"]), message, ec.ECDSA(hashes.SHA256()))
            verified = True
            break
        except (InvalidSignature, ValueError):
            continue
    if not verified:
        print("no signature verifies over the PAE with the key", file=sys.stderr)
        return 1
    statement = json.loads(payload)
    if statement.get("_type") not in STATEMENT_TYPES:
        print(f"_type is {statement.get('_type')!r}", file=sys.stderr)
        return 1
    algorithm, _, hexdigest = digest.partition(":")
    if not any(s.get("digest", {}).get(algorithm) == hexdigest for s in statement.get("subject", [])):
        print(f"no subject names {digest}", file=sys.stderr)
        return 1
    print(json.dumps(statement))
    return 0


def sign(statement_path: str, out_dir: str) -> int:
    with open(statement_path, "rb") as f:
        payload = f.read()
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signature = key.sign(pae(PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256()))
    envelope = {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": "", "sig": base64.b64encode(signature).decode()}],
    }
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    bundle = {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {
            "publicKey": {"hint": base64.b64encode(hashlib.sha256(der).digest()).decode()}
        },
        "dsseEnvelope": envelope,
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "key.pub"), "wb") as f:
        f.write(public)
    with open(os.path.join(out_dir, "envelope.json"), "w") as f:
        json.dump(envelope, f)
    with open(os.path.join(out_dir, "bundle.json"), "w") as f:
        json.dump(bundle, f)
    return 0


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "verify":
        return verify(*sys.argv[2:])
    if len(sys.argv) == 4 and sys.argv[1] == "sign":
        return sign(*sys.argv[2:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
