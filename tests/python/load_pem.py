"""Loads PEM private keys and certificates with Python `cryptography`.

Usage: load_pem.py FILE...

Prints one JSON object mapping each file to the key type found in it
("ecdsa-p256", "ed25519" or the class name of anything else). A file that
`cryptography` cannot load raises, so the script exits non-zero with the
library's own error. Run by tests/tests/interop.rs.
"""

import json
import sys

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519


def key_type(key):
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return "ecdsa-p256" if key.curve.name == "secp256r1" else "ecdsa-" + key.curve.name
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "ed25519"
    return type(key).__name__


def load(path):
    with open(path, "rb") as f:
        data = f.read()
    if b"PRIVATE KEY-----" in data:
        return key_type(serialization.load_pem_private_key(data, password=None))
    return key_type(x509.load_pem_x509_certificate(data).public_key())


def main(paths):
    if not paths:
        sys.exit("usage: load_pem.py FILE...")
    print(json.dumps({path: load(path) for path in paths}))


if __name__ == "__main__":
    main(sys.argv[1:])
