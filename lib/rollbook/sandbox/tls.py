"""A throw-away certificate authority and server certificate for the sandbox API, made at start."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class ServerCert:
    """Files of a server certificate for 127.0.0.1/localhost and the CA that signed it."""

    certfile: Path
    keyfile: Path
    ca_file: Path
    ca_pem: bytes


def make_server_cert(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> ServerCert:
    """Create a fresh CA (ECDSA, fast) and a server certificate for ``hosts`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="rollbook sandbox")
    leaf = ca.issue_cert(*hosts, common_name="rollbook-sandbox-apiserver")
    cert = ServerCert(directory / "apiserver.crt", directory / "apiserver.key", directory / "ca.crt",
                      ca.cert_pem.bytes())
    leaf.cert_chain_pems[0].write_to_path(str(cert.certfile))
    for pem in leaf.cert_chain_pems[1:]:
        pem.write_to_path(str(cert.certfile), append=True)
    leaf.private_key_pem.write_to_path(str(cert.keyfile))
    cert.keyfile.chmod(0o600)
    ca.cert_pem.write_to_path(str(cert.ca_file))
    return cert
