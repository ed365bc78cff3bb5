"""Start a Store + ApiServer + kubeconfig in a temporary directory, for the API server's own tests."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config

from rollbook.sandbox.apiserver import ApiServer, User
from rollbook.sandbox.kubeconfig import write_kubeconfig
from rollbook.sandbox.store import Store
from rollbook.sandbox.tls import make_server_cert


@dataclass
class Harness:
    """A running API server with operator, viewer and admin tokens and a kubeconfig for them."""

    store: Store
    server: ApiServer
    url: str
    kubeconfig: Path
    tokens: dict[str, str]
    directory: Path

    def api_client(self, context: str = "sandbox-admin") -> client.ApiClient:
        """A real ``kubernetes`` ApiClient for one kubeconfig context."""
        return config.new_client_from_config(config_file=str(self.kubeconfig), context=context)

    def core(self, context: str = "sandbox-admin") -> client.CoreV1Api:
        """CoreV1Api for a context."""
        return client.CoreV1Api(self.api_client(context))

    def apps(self, context: str = "sandbox-admin") -> client.AppsV1Api:
        """AppsV1Api for a context."""
        return client.AppsV1Api(self.api_client(context))

    def custom(self, context: str = "sandbox-admin") -> client.CustomObjectsApi:
        """CustomObjectsApi for a context."""
        return client.CustomObjectsApi(self.api_client(context))

    def raw(self, method: str, path: str, *, query: list[tuple[str, str]] | None = None, body: Any = None,
            content_type: str | None = None, accept: str = "application/json",
            context: str = "sandbox-admin") -> Any:
        """One request through the client's authenticated REST layer; the raw response (ApiException on >= 300)."""
        api = self.api_client(context)
        headers = {"Accept": accept, **({"Content-Type": content_type} if content_type else {})}
        request = api.param_serialize(method, path, query_params=query or [], header_params=headers, body=body,
                                      auth_settings=["BearerToken"])
        return api._call_with_legacy_options(request, {}, None, False, None, True)

    def last(self, method: str | None = None) -> Any:
        """The last recorded request (of a method)."""
        return [r for r in self.server.requests if method in (None, r.method)][-1]


@contextmanager
def running_apiserver(directory: Path, *, history: int = 1000) -> Iterator[Harness]:
    """A fresh store and HTTPS API server; the kubeconfig has contexts sandbox, sandbox-viewer, sandbox-admin."""
    tokens = {role: secrets.token_urlsafe(16) for role in ("operator", "viewer", "admin")}
    cert = make_server_cert(directory / "tls")
    store = Store(history=history)
    store.create("namespaces", None, {"metadata": {"name": "prod"}})  # like a cluster: the namespace exists
    users = {token: User(role, role) for role, token in tokens.items()}
    server = ApiServer(store, users=users, certfile=str(cert.certfile), keyfile=str(cert.keyfile))
    url = server.start()
    try:
        kubeconfig = write_kubeconfig(directory / "kubeconfig", server=url, ca_pem=cert.ca_pem,
                                      operator_token=tokens["operator"], viewer_token=tokens["viewer"],
                                      extra_users={"admin": tokens["admin"]})
        yield Harness(store, server, url, kubeconfig, tokens, directory)
    finally:
        server.stop()
