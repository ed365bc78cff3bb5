"""Field ownership and server-side apply (the kubectl round trips are in tests/integration/test_fidelity.py)."""

from __future__ import annotations

import pytest

from rollbook.sandbox import fieldmanager as fm
from rollbook.sandbox.store import StoreError

V1 = "v1"


def cm(data: dict[str, str], **meta: object) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "prod", **meta},
            "data": data}


def owners(obj: dict[str, object]) -> dict[tuple[str, str], set[tuple[str, ...]]]:
    return {(e["manager"], e["operation"]): fm.decode(e["fieldsV1"])
            for e in obj["metadata"]["managedFields"]}  # type: ignore[index]


def test_fields_v1_round_trip_and_identity_fields_are_nobodys() -> None:
    paths = set(fm.leaves(cm({"a": "1"}, labels={"x": "y"}, uid="u", resourceVersion="5")))
    assert paths == {("data", "a"), ("metadata", "labels", "x")}
    assert fm.encode(paths) == {"f:data": {"f:a": {}}, "f:metadata": {"f:labels": {"f:x": {}}}}
    assert fm.decode(fm.encode(paths)) == paths


def test_an_update_takes_the_fields_it_changed_from_their_owner() -> None:
    created = cm({"a": "1", "b": "2"})
    created["metadata"]["managedFields"] = fm.record_update(None, created, "kubectl-create", V1)  # type: ignore[index]
    patched = cm({"a": "9", "b": "2"}, managedFields=created["metadata"]["managedFields"])  # type: ignore[index]
    patched["metadata"]["managedFields"] = fm.record_update(created, patched, "kubectl-patch", V1)  # type: ignore[index]
    assert owners(patched) == {("kubectl-create", "Update"): {("data", "b")},
                               ("kubectl-patch", "Update"): {("data", "a")}}
    same = fm.record_update(patched, patched, "kubectl-patch", V1)
    assert same == patched["metadata"]["managedFields"]  # type: ignore[index]  # no change, no new time


def test_apply_again_without_a_field_removes_it_unless_someone_else_owns_it() -> None:
    first = fm.apply(None, cm({"a": "1", "b": "2"}), "deployer", force=False, api_version=V1)
    again = fm.apply(first, cm({"a": "1"}), "deployer", force=False, api_version=V1)
    assert again["data"] == {"a": "1"} and owners(again) == {("deployer", "Apply"): {("data", "a")}}
    shared = dict(first, metadata={**first["metadata"], "managedFields": first["metadata"]["managedFields"] + [
        {"manager": "other", "operation": "Update", "apiVersion": V1, "fieldsType": "FieldsV1",
         "fieldsV1": {"f:data": {"f:b": {}}}}]})
    kept = fm.apply(shared, cm({"a": "1"}), "deployer", force=False, api_version=V1)
    assert kept["data"] == {"a": "1", "b": "2"}


def test_a_different_value_on_anothers_field_conflicts_unless_forced() -> None:
    live = cm({"a": "1"}, managedFields=[{"manager": "kubectl-patch", "operation": "Update", "apiVersion": V1,
                                         "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:a": {}}}}])
    with pytest.raises(StoreError) as caught:
        fm.apply(live, cm({"a": "2"}), "deployer", force=False, api_version=V1)
    assert caught.value.code == 409 and caught.value.message == (
        'Apply failed with 1 conflict: conflict with "kubectl-patch" using v1: .data.a')
    assert fm.apply(live, cm({"a": "1"}), "deployer", force=False, api_version=V1)["data"] == {"a": "1"}  # same value
    forced = fm.apply(live, cm({"a": "2"}), "deployer", force=True, api_version=V1)
    assert forced["data"] == {"a": "2"} and owners(forced) == {("deployer", "Apply"): {("data", "a")}}


def test_manager_names_follow_the_real_server() -> None:
    assert fm.manager_of("kubectl-patch", "kubectl/v1.32.4") == "kubectl-patch"
    assert fm.manager_of("", "OpenAPI-Generator/37.0.0/python") == "OpenAPI-Generator"
