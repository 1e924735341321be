// Verifies a Sigstore bundle holding a DSSE attestation with sigstore-js
// (@sigstore/verify, the verifier of npm's `sigstore` package), which
// shares no code with imgate.
//
// usage: node verify.js BUNDLE.json PUBKEY.pem TRUSTED_ROOT.json DIGEST
//
// The bundle is key-signed without a log entry (what `imgate attest
// --format bundle` writes offline), so the transparency-log and timestamp
// thresholds are 0; the key is found by the bundle's hint. Then the
// statement's subject must name DIGEST (sha256:<hex>). Prints the statement
// and exits 0 on success, 1 on a failed verification.
'use strict';
const fs = require('fs');
const crypto = require('crypto');
const { bundleFromJSON } = require('@sigstore/bundle');
const { TrustedRoot } = require('@sigstore/protobuf-specs');
const { Verifier, toSignedEntity, toTrustMaterial } = require('@sigstore/verify');

function main() {
  const [bundlePath, keyPath, rootPath, digest] = process.argv.slice(2);
  if (!digest) {
    console.error('usage: node verify.js BUNDLE.json PUBKEY.pem TRUSTED_ROOT.json DIGEST');
    return 2;
  }
  const bundle = bundleFromJSON(JSON.parse(fs.readFileSync(bundlePath, 'utf8')));
  const key = crypto.createPublicKey(fs.readFileSync(keyPath));
  const root = TrustedRoot.fromJSON(JSON.parse(fs.readFileSync(rootPath, 'utf8')));
  const trust = toTrustMaterial(root, () => ({ publicKey: key, validFor: () => true }));
  const verifier = new Verifier(trust, { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 });
  try {
    verifier.verify(toSignedEntity(bundle));
  } catch (err) {
    console.error(`sigstore-js: ${err.message}`);
    return 1;
  }
  const envelope = bundle.content.dsseEnvelope;
  const statement = JSON.parse(envelope.payload.toString('utf8'));
  const [algorithm, hex] = digest.split(':');
  if (!(statement.subject || []).some((s) => (s.digest || {})[algorithm] === hex)) {
    console.error(`no subject names ${digest}`);
    return 1;
  }
  console.log(JSON.stringify(statement));
  return 0;
}

process.exitCode = main();
