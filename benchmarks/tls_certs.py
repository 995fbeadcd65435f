"""``python -m benchmarks.tls_certs DIR``: a throwaway CA and a server certificate for
127.0.0.1 and localhost (trustme), for TLS benchmarks on loopback. Writes DIR/ca.pem,
DIR/cert.pem and DIR/key.pem and prints the server flags that use them."""
from __future__ import annotations

import os
import sys


def write_certificates(directory: str) -> dict:
    import trustme
    os.makedirs(directory, exist_ok=True)
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    paths = {name: os.path.join(directory, f"{name}.pem") for name in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(paths["ca"])
    issued.private_key_pem.write_to_path(paths["key"])
    with open(paths["cert"], "wb") as f:
        for pem in issued.cert_chain_pems:
            f.write(pem.bytes())
    return paths


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    paths = write_certificates(argv[0])
    print(f"--tls-cert {paths['cert']} --tls-key {paths['key']}   (clients: --tls-ca "
          f"{paths['ca']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
