"""Strict field validation: the levels the sandbox knows completely are checked, the rest pass."""

from __future__ import annotations

import pytest

from rollbook.sandbox.store import RESOURCES, StoreError
from rollbook.sandbox.validation import check_strict, unknown_fields

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
       "spec": {"containers": [{"name": "app", "image": "registry/app:1"}]}}


def test_a_valid_pod_and_a_rollout_with_fields_below_the_checked_levels_pass() -> None:
    assert unknown_fields(RESOURCES["pods"], POD) == []
    rollout = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "api"},
               "spec": {"strategy": {"canary": {"anything": {"goes": 1}}},  # a level the sandbox does not check
                        "template": {"metadata": {"labels": {"app": "api"}}, "spec": POD["spec"]}}}
    assert unknown_fields(RESOURCES["rollouts"], rollout) == []


def test_typos_are_named_by_their_path_in_order() -> None:
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metdata": {}, "metadata": {"nmae": "web"},
                  "spec": {"template": {"spec": {"containers": [{"name": "web", "imagePullPolicyy": "Always"}],
                                                 "nodeSelecter": {}}}}}
    assert unknown_fields(RESOURCES["deployments"], deployment) == [
        "metdata", "metadata.nmae", "spec.template.spec.nodeSelecter", "spec.template.spec.containers[0].imagePullPolicyy"]


def test_strategic_merge_directives_are_not_fields() -> None:
    patch = {"spec": {"$setElementOrder/containers": [{"name": "app"}], "containers": [{"name": "app", "$patch": "delete"}]}}
    assert unknown_fields(RESOURCES["pods"], patch) == []


def test_the_real_servers_message() -> None:
    with pytest.raises(StoreError) as caught:
        check_strict(RESOURCES["configmaps"], {"kind": "ConfigMap", "metadata": {"name": "c"}, "dta": {}})
    assert caught.value.code == 400 and caught.value.message == (
        'ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: unknown field "dta"')
