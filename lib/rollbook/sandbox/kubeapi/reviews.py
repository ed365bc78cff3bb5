"""``kubectl auth can-i`` / ``can-i --list`` / ``whoami``: self-subject reviews answered by the authorizer."""

from __future__ import annotations

from typing import Any

from rollbook.sandbox.kubeapi.authz import Attributes, Authorizer
from rollbook.sandbox.kubeapi.exchange import Exchange

JSON = dict[str, Any]
ACCESS_REVIEW_PATH = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
SELF_REVIEW_PATH = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
RULES_REVIEW_PATH = "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews"
# review path -> (API group, resource) as the authorizer sees the create
REVIEWS = {
    ACCESS_REVIEW_PATH: ("authorization.k8s.io", "selfsubjectaccessreviews"),
    RULES_REVIEW_PATH: ("authorization.k8s.io", "selfsubjectrulesreviews"),
    SELF_REVIEW_PATH: ("authentication.k8s.io", "selfsubjectreviews"),
}
_PUBLIC_URLS = ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz",
                "/version", "/version/"]


def serve(ex: Exchange, authorizer: Authorizer) -> None:
    """Answer the review POSTed to ``ex.path`` (one of :data:`REVIEWS`)."""
    path = ex.path.rstrip("/")
    if path == ACCESS_REVIEW_PATH:
        _access_review(ex, authorizer)
    elif path == RULES_REVIEW_PATH:
        _rules_review(ex, authorizer)
    else:
        _self_review(ex)


def _spec(ex: Exchange) -> JSON:
    review = ex.object_body()  # kubectl auth can-i sends protobuf
    return (review.get("spec") or {}) if isinstance(review, dict) else {}


def _access_review(ex: Exchange, authorizer: Authorizer) -> None:
    """``kubectl auth can-i``: a SelfSubjectAccessReview answered by :meth:`Authorizer.decide`."""
    assert ex.user is not None
    spec = _spec(ex)
    attrs = spec.get("resourceAttributes")
    if attrs is None:  # non-resource URLs (discovery, /version)
        non = spec.get("nonResourceAttributes") or {}
        question = Attributes(ex.user, str(non.get("verb", "")), path=str(non.get("path", "")))
    else:
        question = Attributes(ex.user, str(attrs.get("verb", "")), resource=str(attrs.get("resource", "")),
                              subresource=str(attrs.get("subresource", "")), group=str(attrs.get("group", "")),
                              namespace=str(attrs.get("namespace", "")), name=str(attrs.get("name", "")))
    status: JSON = {"allowed": authorizer.decide(question)}  # no reason on a denial, like upstream RBAC
    ex.send_json(201, {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                       "metadata": {}, "spec": spec, "status": status})


def _rules_review(ex: Exchange, authorizer: Authorizer) -> None:
    """``kubectl auth can-i --list``: the rules of the token's user."""
    assert ex.user is not None
    spec = _spec(ex)
    ex.send_json(201, {"kind": "SelfSubjectRulesReview", "apiVersion": "authorization.k8s.io/v1",
                       "metadata": {"creationTimestamp": None}, "spec": spec,
                       "status": {"resourceRules": authorizer.rules(ex.user, str(spec.get("namespace") or "")),
                                  "incomplete": False,
                                  "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": _PUBLIC_URLS}]}})


def _self_review(ex: Exchange) -> None:
    """``kubectl auth whoami``: the SelfSubjectReview of the token's user."""
    assert ex.user is not None
    groups = [f"sandbox:{ex.user.role}s", "system:authenticated"]
    ex.send_json(201, {"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
                       "metadata": {"creationTimestamp": None},
                       "status": {"userInfo": {"username": ex.user.name, "groups": groups}}})
