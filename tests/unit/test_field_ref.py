"""The sandbox resolves analysis fieldRefs as Argo's extractValueFromRollout does (utils/analysis/factory.go)."""

from __future__ import annotations

from rollbook.sandbox.controller import _abort_scale_down_delay, _field_value

RO = {"metadata": {"name": "web", "labels": {"release-id": "web-1.9"}},
      "spec": {"replicas": 3, "template": {"metadata": {"labels": {"release-id": "web-2.0"}}},
               "strategy": {"canary": {"steps": [{"setWeight": 20}]}}}}


def test_the_dot_form_resolves_and_the_bracket_form_keeps_its_quotes_and_fails() -> None:
    assert _field_value(RO, "spec.template.metadata.labels.release-id") == "web-2.0"
    assert _field_value(RO, "metadata.labels.release-id") == "web-1.9"
    assert _field_value(RO, "spec.template.metadata.labels['release-id']") is None
    assert _field_value(RO, "spec.strategy.canary.steps[0].setWeight") == "20"
    assert _field_value(RO, "spec.replicas") == "3"
    assert _field_value(RO, "spec.template") is None  # not a primitive: Argo refuses it too
    assert _field_value(RO, "spec.strategy.canary.steps[3]") is None


def test_abort_scale_down_delay_zero_means_never_with_traffic_routing() -> None:
    def ro(**canary: object) -> dict[str, object]:
        return {"spec": {"strategy": {"canary": canary}}}
    routed = {"trafficRouting": {"istio": {}}}
    assert _abort_scale_down_delay(ro(abortScaleDownDelaySeconds=0, **routed)) is None
    assert _abort_scale_down_delay(ro(**routed)) == 30.0
    assert _abort_scale_down_delay(ro(abortScaleDownDelaySeconds=45, **routed)) == 45.0
    assert _abort_scale_down_delay(ro(abortScaleDownDelaySeconds=0)) == 0.0  # basic canary: at once
