#!/usr/bin/env python3
"""Independent check that a private key file decrypts the way cosign does it.

Reimplements go-securesystemslib's `encrypted` format with PyNaCl (libsodium
secretbox) and Python's hashlib scrypt, then parses the PKCS#8 DER with
`cryptography`. Nothing here shares code with imgate, so a key imgate writes
passing this check is evidence that cosign (same format, same primitives)
reads it.

usage: decrypt_cosign_key.py KEY PUB   (password from IMGATE_PASSWORD, default empty)
Exit 0 when KEY decrypts, is P-256, and its public key equals PUB; prints why not otherwise.
Needs: pip install pynacl cryptography
"""
import base64
import hashlib
import json
import os
import sys

import nacl.secret
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

LABELS = ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY")


def pem_body(text):
    lines = text.strip().splitlines()
    begin, end = lines[0], lines[-1]
    label = begin[len("-----BEGIN "):-len("-----")]
    assert label in LABELS, f"unexpected label {label!r}"
    assert end == f"-----END {label}-----", f"bad end line {end!r}"
    return label, base64.b64decode("".join(lines[1:-1]))


def main():
    key_path, pub_path = sys.argv[1], sys.argv[2]
    password = os.environ.get("IMGATE_PASSWORD", "").encode()
    label, body = pem_body(open(key_path).read())
    doc = json.loads(body)
    kdf, cipher = doc["kdf"], doc["cipher"]
    assert kdf["name"] == "scrypt" and cipher["name"] == "nacl/secretbox", doc
    params = kdf["params"]
    secret = hashlib.scrypt(
        password,
        salt=base64.b64decode(kdf["salt"]),
        n=params["N"],
        r=params["r"],
        p=params["p"],
        maxmem=256 * 1024 * 1024,
        dklen=32,
    )
    nonce = base64.b64decode(cipher["nonce"])
    assert len(nonce) == 24 and len(base64.b64decode(kdf["salt"])) == 32
    der = nacl.secret.SecretBox(secret).decrypt(base64.b64decode(doc["ciphertext"]), nonce)
    private = serialization.load_der_private_key(der, password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey), type(private)
    assert private.curve.name == "secp256r1", private.curve.name
    derived = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    expected = open(pub_path, "rb").read()
    assert derived.strip() == expected.strip(), (derived, expected)
    # And the key signs something its public key accepts.
    signature = private.sign(b"interop", ec.ECDSA(hashes.SHA256()))
    serialization.load_pem_public_key(expected).verify(signature, b"interop", ec.ECDSA(hashes.SHA256()))
    print(f"ok: {key_path} ({label}, scrypt N={params['N']} r={params['r']} p={params['p']}) decrypts to the P-256 key of {pub_path}")


if __name__ == "__main__":
    main()
