"""The API server's two seams: every request passes through ``ApiServer.handle`` (and its layers), and
every access decision, for requests and ``kubectl auth can-i`` alike, through ``Authorizer.decide``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from apiserver_harness import Harness, running_apiserver
from kubernetes import client
from kubernetes.client.rest import ApiException

from rollbook.sandbox.kubeapi.authz import Attributes, Authorizer
from rollbook.sandbox.kubeapi.exchange import Exchange
from rollbook.sandbox.store import StoreError


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with running_apiserver(tmp_path) as harness:
        yield harness


def test_a_layer_sees_every_request_and_can_answer_instead_of_the_server(h: Harness) -> None:
    seen: list[tuple[str, str]] = []

    def fault(ex: Exchange, next_: object) -> None:
        seen.append((ex.method, ex.path))
        if ex.path.endswith("/pods"):
            raise StoreError(503, "ServiceUnavailable", "injected")
        next_(ex)  # type: ignore[operator]

    h.server.layers.append(fault)
    h.core().list_namespace()  # passes through
    with pytest.raises(ApiException) as err:
        h.core().list_namespaced_pod("prod")
    assert err.value.status == 503
    h.raw("GET", "/version")
    assert seen == [("GET", "/api/v1/namespaces"), ("GET", "/api/v1/namespaces/prod/pods"), ("GET", "/version")]


class _NoPods(Authorizer):
    def decide(self, attrs: Attributes) -> bool:
        return attrs.resource != "pods" and super().decide(attrs)


def test_the_authorizer_decides_requests_and_can_i_alike(h: Harness) -> None:
    h.server.authorizer = _NoPods()
    with pytest.raises(ApiException) as err:
        h.core().list_namespaced_pod("prod")
    assert err.value.status == 403
    assert 'cannot list resource "pods"' in json.loads(err.value.body)["message"]
    h.core().list_namespace()
    review = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
        resource_attributes=client.V1ResourceAttributes(verb="get", resource="pods", namespace="prod")))
    answer = client.AuthorizationV1Api(h.api_client()).create_self_subject_access_review(review)
    assert answer.status.allowed is False
