"""Verify a sovkit attestation log with securesystemslib only (no sovkit): signatures, chain, signed head.

Usage: python verify_attestation_log.py LOG_DIR OPERATOR_KEY.pub   (exit 0 when everything verifies)
"""
import hashlib
import json
import sys

from cryptography.hazmat.primitives.serialization import load_pem_public_key
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey

log_dir, pub_pem = sys.argv[1], sys.argv[2]
key = SSlibKey.from_crypto(load_pem_public_key(open(pub_pem, "rb").read()))
previous = None
lines = open(f"{log_dir}/log.jsonl", "rb").read().split(b"\n")[:-1]
for i, line in enumerate(lines):
    entry = json.loads(line)
    assert entry["index"] == i, f"line {i + 1}: index {entry['index']}"
    assert entry["previous"] == previous, f"entry {i}: chain broken"
    Envelope.from_dict(entry["envelope"]).verify([key], 1)  # raises on a bad signature
    previous = "sha256:" + hashlib.sha256(line).hexdigest()
head = Envelope.from_dict(json.load(open(f"{log_dir}/head.json")))
head.verify([key], 1)
body = json.loads(head.payload)
assert (body["index"], body["digest"]) == (len(lines) - 1, previous), "log does not end at the signed head"
print(f"{len(lines)} entries verified; head at entry {body['index']}")
