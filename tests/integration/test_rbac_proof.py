"""Proof, against the sandbox's RBAC, that deploy/ grants what the playbook needs and no more.

`kubectl apply -k deploy/` (+ deploy/namespace-access/) is applied to a sandbox that authorizes every
request from those RBAC objects (rollbook.sandbox.rbac); incidents run as Jobs under the service accounts
(rollbook.sandbox.jobs mounts each pod's TokenRequest token), and the viewer Role's minimality is proved
under the viewer's own TokenRequest token, one rule removed at a time. One xdist_group: the module's
tests share one deployed sandbox.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_harness import deploy, jobs_of, kubectl, needs_kubectl, record, run_job, token_context
from serve_harness import EVIDENCE_GAP

from rollbook import jobrun
from rollbook import permissions as perms
from rollbook.app import demo_report
from rollbook.cluster import jobs
from rollbook.cluster.connect import connect
from rollbook.runner import RunSpec
from rollbook.sandbox.server import Sandbox

pytestmark = [pytest.mark.kubectl, needs_kubectl, pytest.mark.xdist_group("rbac-proof")]
SA = "system:serviceaccount:rollbook:{}"
Cluster = tuple[Sandbox, Path]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("rbac-proof")
    with Sandbox(EVIDENCE_GAP, root / "sandbox") as sb:
        deploy(sb, root / "records")
        yield sb, root / "records"


def can_i(sb: Sandbox, p: perms.Permission, who: str) -> bool:
    ns = [] if p.resource in perms.CLUSTER_SCOPED else ["-n", "argo-rollouts" if p.resource_names else "prod"]
    what = f"{p.resource_path}.{p.api_group}" if p.api_group else p.resource_path
    names = [f"{what}/{p.resource_names[0]}"] if p.resource_names else [what]
    done = kubectl(sb, "auth", "can-i", p.verb, *names, *ns, f"--as={SA.format(who)}", check=False)
    assert done.stdout.strip() in ("yes", "no"), done.stderr
    return done.stdout.strip() == "yes"


def test_kubectl_create_token_gives_the_service_account_its_rules(cluster: Cluster) -> None:
    sb, _ = cluster
    token = kubectl(sb, "-n", "rollbook", "create", "token", "rollbook-viewer").stdout.strip()
    who = kubectl(sb, "--token", token, "auth", "whoami", "-o", "json").stdout
    assert json.loads(who)["status"]["userInfo"]["username"] == SA.format("rollbook-viewer")
    assert "api" in kubectl(sb, "--token", token, "-n", "prod", "get", "rollouts").stdout
    denied = kubectl(sb, "--token", token, "-n", "prod", "patch", "rollout", "api", "--type", "merge",
                     "-p", '{"spec":{"paused":true}}', check=False)
    assert denied.returncode == 1
    assert ('User "system:serviceaccount:rollbook:rollbook-viewer" cannot patch resource "rollouts" in API '
            'group "argoproj.io" in the namespace "prod"') in denied.stderr
    other_ns = kubectl(sb, "--token", token, "-n", "default", "get", "rollouts", check=False)
    assert other_ns.returncode == 1 and "Forbidden" in other_ns.stderr  # granted per namespace only


def test_can_i_answers_the_permission_table_row_by_row(cluster: Cluster) -> None:
    sb, _ = cluster
    deployed = {"rollbook-viewer", "rollbook-viewer-cluster", "rollbook-operator"}  # bound by deploy/ itself
    for p in perms.PERMISSIONS:
        if perms.role_of(p) not in deployed:
            continue
        assert can_i(sb, p, "rollbook-operator"), p  # the operator holds the viewer's rows too
        assert can_i(sb, p, "rollbook-viewer") is (p.identity == perms.VIEWER), p
    beyond = [perms.Permission("delete", "argoproj.io", "rollouts", "", (), perms.OPERATOR, ""),
              perms.Permission("get", "", "secrets", "", (), perms.OPERATOR, ""),
              perms.Permission("update", "argoproj.io", "rollouts", "", (), perms.OPERATOR, ""),
              perms.Permission("create", "batch", "jobs", "", (), perms.OPERATOR, "")]
    for p in beyond:
        assert not can_i(sb, p, "rollbook-operator") and not can_i(sb, p, "rollbook-viewer"), p
    assert kubectl(sb, "auth", "can-i", "create", "jobs", "-n", "rollbook", f"--as={SA.format('rollbook-serve')}",
                   check=False).stdout.strip() == "yes"
    assert kubectl(sb, "auth", "can-i", "get", "rollouts", "-n", "prod", f"--as={SA.format('rollbook-serve')}",
                   check=False).stdout.strip() == "no"


def _step4(sb: Sandbox, records: Path, incident: str, account: str | None) -> tuple[jobrun.JobOutcome, Any]:
    """Steps 1-4 with an approved retry, as one Job; `account` overrides the identity the executor picks."""
    spec = RunSpec(incident=incident, namespace="prod", rollout="api", out=records, steps=(1, 2, 3, 4),
                   params={"evidence_file": str(demo_report(records.parent))}, approve_retry=True,
                   approver="alice", ticket="CHG-1", step_timeout=120)
    req = jobrun.request(spec)
    assert jobs.service_account(req) == "rollbook-operator"
    name = jobs.job_name(incident, "proof")
    manifest = jobs.manifest(req, name)
    if account:
        manifest["spec"]["template"]["spec"]["serviceAccountName"] = account
    with connect("sandbox", sb.kubeconfig) as c:
        client = jobs.JobClient(c)
        client.create(manifest)
        end = client.wait("rollbook", name, timeout=900)
    assert end is not None
    return jobrun.outcome(end, records, incident), record(records, incident)


def test_an_approved_retry_is_refused_under_the_viewer_and_goes_through_under_the_operator(
        cluster: Cluster, tmp_path: Path) -> None:
    sb, records = cluster
    got, (run_dir, rec) = _step4(sb, records, "INC-RBAC-VIEWER", "rollbook-viewer")
    assert got.record_dir == run_dir and got.exit_code == rec["exit_code"] != 0
    verdicts = {s["step"]: s for s in rec["steps"]}
    assert [verdicts[n]["verdict"] for n in (1, 2, 3)] == ["pass", "pass", "pass"]
    assert verdicts[4]["verdict"] in ("fail", "error")
    assert ('User "system:serviceaccount:rollbook:rollbook-viewer" cannot patch resource "rollouts/status"'
            in verdicts[4]["reason"])
    assert rec["findings"]["retried"] is False
    assert sb.store.get("rollouts", "prod", "api")["status"].get("abort") is True  # nothing changed
    # a fresh sandbox (the viewer's run attached the evidence to MC already) and the identity the executor
    # picks, the operator: the retry is sent, by the operator's token
    with Sandbox(EVIDENCE_GAP, tmp_path / "sandbox") as fresh:
        deploy(fresh, tmp_path / "records")
        _operator_retries(fresh, tmp_path / "records")


def _operator_retries(sb: Sandbox, records: Path) -> None:
    done = run_job(sb, records, "--incident", "INC-RBAC-OPERATOR", "--steps", "1,2,3,4", "--step-timeout", "120",
                   "--param", f"evidence_file={demo_report(records.parent)}", "--approve-retry",
                   "--approver", "alice", "--ticket", "CHG-1")
    _, rec = record(records, "INC-RBAC-OPERATOR")
    assert done.returncode == rec["exit_code"], done.stderr
    assert rec["findings"]["retried"] is True, [s["reason"] for s in rec["steps"]]
    (job,) = jobs_of(sb, "INC-RBAC-OPERATOR")
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "rollbook-operator"
    patches = [r for r in sb.apiserver.requests if r.method == "PATCH" and r.path.endswith("/rollouts/api/status")]
    assert patches and {r.user for r in patches} == {SA.format("rollbook-operator")}


# The viewer Role's rules (deploy/namespace-access/roles.yaml), one removed at a time, against evidence-gap.
# REQUIRED: the read-only steps cannot run without it, and the run says which permission is missing.
# NOT EXERCISED here: this scenario never needs it, so its removal changes nothing; the step that needs it:
#   analysistemplates get - a metric's provider once its AnalysisRun was garbage-collected (step 2, 4);
#   experiments get/list  - no rollbook code reads experiments: granted as Argo's aggregate view role does,
#                           for the `kubectl argo rollouts get rollout` rollbook prints;
#   pods/log get          - the `kubectl logs` evidence of a crashing canary (step 2).
REQUIRED = {"rollouts", "analysisruns", "replicasets", "pods", "events"}
NOT_EXERCISED = {"analysistemplates", "experiments", "pods/log"}


def _viewer_rules() -> list[dict[str, Any]]:
    import yaml

    from tests.deploy_render import DEPLOY

    docs = list(yaml.safe_load_all((DEPLOY / "namespace-access" / "roles.yaml").read_text(encoding="utf-8")))
    (role,) = [d for d in docs if d["metadata"]["name"] == "rollbook-viewer"]
    return list(role["rules"])


def test_the_lists_cover_every_rule() -> None:
    assert {r["resources"][0] for r in _viewer_rules()} == REQUIRED | NOT_EXERCISED


@pytest.fixture(scope="module")
def viewer(cluster: Cluster) -> str:
    """A kubeconfig context (in the sandbox's kubeconfig) holding the viewer ServiceAccount's token."""
    return token_context(cluster[0], "rollbook-viewer")


def _first_look_as(sb: Sandbox, context: str, out: Path, incident: str) -> tuple[int, str]:
    """Steps 1-3 under `context` in this process (real kernels, real HTTP): the exit code, and everything the
    run said (its exit-2 refusal, or its record and step notebooks)."""
    from rollbook import app
    from rollbook.errors import UsageError

    with pytest.MonkeyPatch.context() as mp:
        for name in ("ROLLBOOK_CONFIG", "ROLLBOOK_MC_TOKEN"):
            mp.delenv(name, raising=False)
        mp.setenv("KUBECONFIG", str(sb.kubeconfig))
        mp.setenv("ROLLBOOK_MC_URL", sb.mc_url)
        mp.setenv("ROLLBOOK_MC_TOKEN_FILE", str(sb.mc_token_file))
        spec = RunSpec(incident=incident, namespace="prod", rollout="api", context=context, out=out,
                       steps=(1, 2, 3), runbooks_dir=app.default_runbooks(), step_timeout=120)
        try:
            result = app.run(spec, progress=lambda line: None)
        except UsageError as e:
            return 2, f"{e.message} {e.hint or ''}"
    said = "".join(p.read_text(encoding="utf-8") for p in sorted(result.record_dir.glob("*.ipynb")))
    return result.exit_code, said + (result.record_dir / "record.json").read_text(encoding="utf-8")


@pytest.mark.parametrize("index", range(len(_viewer_rules())),
                         ids=[r["resources"][0] for r in _viewer_rules()])
def test_removing_one_rule_from_the_viewer_role(cluster: Cluster, viewer: str, index: int, tmp_path: Path) -> None:
    """The rule's removal under the viewer's own token (its Job is the path the tests above run: here the
    identity is what is under test, so the steps run in this process, ~1 CPU-s a rule instead of ~5)."""
    sb, _ = cluster
    rule = _viewer_rules()[index]
    resource = rule["resources"][0]
    kubectl(sb, "-n", "prod", "patch", "role", "rollbook-viewer", "--type", "json",
            "-p", json.dumps([{"op": "remove", "path": f"/rules/{index}"}]))
    try:
        code, said = _first_look_as(sb, viewer, tmp_path / "records", f"INC-MIN-{index}")
    finally:
        kubectl(sb, "apply", "-k", str(Path(__file__).resolve().parents[2] / "deploy" / "namespace-access"))
    named = [f'cannot {verb} resource \\"{resource}\\"' for verb in rule["verbs"]] + [
        f'cannot {verb} resource "{resource}"' for verb in rule["verbs"]]
    if resource in REQUIRED:
        assert code != 0, f"the steps ran without {rule}"
        assert any(n in said for n in named), f"no message names the missing {resource} rule: {said[-2000:]}"
    else:
        assert code == 0, said[-2000:]
