"""Bad input to `rollbook run` (issue 11, part 4): each case exits 2 with one `rollbook:` line that names
the object and the next step, no traceback, and nothing written (the precheck refuses before any kernel).

Cheap: one sandbox for the module, the CLI in-process; no case starts a kernel."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from rollbook.cli import main
from rollbook.sandbox.controller import Timings
from rollbook.sandbox.server import Sandbox

FAST = Timings(analysis_seconds=0.1, error_interval_seconds=0.02, scale=0.01, idle_poll_seconds=0.05)


@dataclass
class Ctx:
    """What a case builds its arguments from: the sandbox, a scratch folder, the target."""

    sb: Sandbox
    tmp: Path
    ns: str
    name: str

    def file(self, name: str, text: str) -> str:
        path = self.tmp / name
        path.write_text(text)
        return str(path)

    def kubeconfig(self, change: Callable[[dict[str, Any]], None]) -> str:
        doc = yaml.safe_load(self.sb.kubeconfig.read_text())
        change(doc)
        return self.file(f"kubeconfig-{len(list(self.tmp.iterdir()))}", yaml.safe_dump(doc))

    def config(self, change: Callable[[dict[str, Any]], None]) -> str:
        doc = yaml.safe_load(self.sb.config_file.read_text())
        change(doc)
        return self.file(f"rollbook-{len(list(self.tmp.iterdir()))}.yaml", yaml.safe_dump(doc))


Build = Callable[[Ctx], tuple[list[str], dict[str, str]]]


def _args(*extra: str, incident: str = "INC-1", ns: str | None = None, rollout: str | None = None) -> Build:
    def build(c: Ctx) -> tuple[list[str], dict[str, str]]:
        return ["--incident", incident, "--namespace", ns or c.ns, "--rollout", rollout or c.name, *extra], {}
    return build


def _env(make_env: Callable[[Ctx], dict[str, str]], *extra: str) -> Build:
    def build(c: Ctx) -> tuple[list[str], dict[str, str]]:
        return ["--incident", "INC-1", "--namespace", c.ns, "--rollout", c.name, *extra], make_env(c)
    return build


def _kc(make_path: Callable[[Ctx], str]) -> Build:
    """The config's kube.kubeconfig (which wins over $KUBECONFIG) replaced by the file the case makes."""
    def build(c: Ctx) -> tuple[list[str], dict[str, str]]:
        path = make_path(c)
        cfg = c.config(lambda d: d["kube"].__setitem__("kubeconfig", path))
        return ["--incident", "INC-1", "--namespace", c.ns, "--rollout", c.name, "--config", cfg], {}
    return build


def _with(make_extra: Callable[[Ctx], list[str]]) -> Build:
    def build(c: Ctx) -> tuple[list[str], dict[str, str]]:
        return ["--incident", "INC-1", "--namespace", c.ns, "--rollout", c.name, *make_extra(c)], {}
    return build


def _expire(doc: dict[str, Any]) -> None:
    for user in doc["users"]:
        user["user"]["token"] = "expired-" + user["user"]["token"][::-1]


def _drop_users(doc: dict[str, Any]) -> None:
    doc["users"] = []


# (case, build, what the one line must name: a regex)
CASES: list[tuple[str, Build, str]] = [
    ("unknown namespace", _args(ns="no-such-ns"), r"'no-such-ns'.*(Rollouts in the cluster|kubectl get rollouts -A)"),
    ("unknown rollout", _args(rollout="no-such-rollout"), r"'no-such-rollout' not found .*Rollouts there: "),
    ("unknown context", _args("--context", "prod-typo"), r"prod-typo"),
    ("namespace with upper case and !", _args(ns="Prod_NS!"), r"Prod_NS!"),
    ("rollout name with a slash", _args(rollout="api/../../secrets"), r"api/\.\./\.\./secrets"),
    ("rollout name 300 characters", _args(rollout="r" * 300), r"rrrr"),
    ("kubeconfig missing", _kc(lambda c: str(c.tmp / "nope" / "config")), r"(?i)kubeconfig"),
    ("kubeconfig corrupt YAML", _kc(lambda c: c.file("bad-kc", "apiVersion: v1\nclusters: [\n")),
     r"(?i)kubeconfig"),
    ("kubeconfig a YAML list", _kc(lambda c: c.file("list-kc", "- a\n- b\n")), r"(?i)kubeconfig"),
    ("kubeconfig empty", _kc(lambda c: c.file("empty-kc", "")), r"(?i)kubeconfig|context"),
    ("kubeconfig without users", _kc(lambda c: c.kubeconfig(_drop_users)), r"(?i)user|context"),
    ("expired token", _kc(lambda c: c.kubeconfig(_expire)), r"(?i)401|unauthori[sz]ed|credential"),
    ("incident with a slash", _args(incident="INC/1"), r"'INC/1' cannot name a record folder"),
    ("incident ..", _args(incident=".."), r"'\.\.' cannot name a record folder"),
    ("incident with NUL", _args(incident="INC\x001"), r"cannot name a record folder"),
    ("incident 300 characters", _args(incident="I" * 300), r"cannot name a record folder"),
    ("incident empty", _args(incident=""), r"cannot name a record folder"),
    ("incident with spaces and ;", _args(incident="INC 1; rm -rf /"), r"cannot name a record folder"),
    ("--steps letters", _args("--steps", "one,two"), r"--steps 'one,two' is not a list of step numbers"),
    ("--steps empty", _args("--steps", ""), r"--steps '' is not a list of step numbers"),
    ("--steps only commas", _args("--steps", ",,"), r"--steps ',,' is not a list of step numbers"),
    ("--steps unknown step", _args("--steps", "1,99"), r"Steps \[99\] are not in"),
    ("--steps zero", _args("--steps", "0"), r"Steps \[0\] are not in"),
    ("--steps negative", _args("--steps", "-1"), r"Steps \[-1\] are not in|not a list of step numbers"),
    ("--steps fraction", _args("--steps", "1.5"), r"not a list of step numbers"),
    ("--param without =", _args("--param", "dry_run"), r"--param 'dry_run' is not KEY=VALUE"),
    ("--param empty key", _args("--param", "=1"), r"--param '=1' is not KEY=VALUE"),
    ("--param unknown", _args("--param", "dry_rn=false"), r"'dry_rn' is not declared.*Known parameters"),
    ("--param wrong type int", _args("--param", "wait_seconds=soon"), r"'wait_seconds'.*must be int, got 'soon'"),
    ("--param wrong type bool", _args("--param", "notify=yes please"), r"'notify'.*must be bool"),
    ("--param int overflow-ish text", _args("--param", "watch_seconds=1e3"), r"'watch_seconds'.*must be int"),
    ("--param secret-looking token", _args("--param", "mc_token=abc123"), r"'mc_token'.*looks like a secret"),
    ("--param secret-looking password", _args("--param", "password=hunter2"), r"'password'.*looks like a secret"),
    ("--param secret-looking api key", _args("--param", "api_key=k"), r"'api_key'.*looks like a secret"),
    ("--param runner-owned namespace", _args("--param", "namespace=prod"), r"'namespace' is set by the runner"),
    ("--param runner-owned run_dir", _args("--param", "run_dir=/tmp"), r"'run_dir' is set by the runner"),
    ("--param evidence_file missing", _args("--param", "evidence_file=/nonexistent/junit.xml"),
     r"evidence_file=/nonexistent/junit.xml: no such file"),
    ("--param evidence_file a folder", _with(lambda c: ["--param", f"evidence_file={c.tmp}"]), r"no such file"),
    ("--release-id not label-safe", _args("--release-id", "api 1.42/../x"), r"'api 1\.42/\.\./x'.*label"),
    ("--release-id 64 characters", _args("--release-id", "a" * 64), r"label"),
    ("--approve-retry without --approver", _args("--approve-retry", "--ticket", "CHG-1"), r"--approver"),
    ("--approve-retry without --ticket", _args("--approve-retry", "--approver", "alice"), r"--ticket"),
    ("--step-timeout zero", _args("--step-timeout", "0"), r"Timeouts must be positive"),
    ("--step-timeout negative", _args("--step-timeout", "-5"), r"Timeouts must be positive"),
    ("--step-timeout not a number", _args("--step-timeout", "ten"), r"'ten' is not a valid float"),
    ("--config missing", _args("--config", "/nonexistent/rollbook.yaml"), r"/nonexistent/rollbook\.yaml"),
    ("--config corrupt YAML", _with(lambda c: ["--config", c.file("bad.yaml", "mc: {url: [\n")]), r"bad\.yaml"),
    ("--config a YAML list", _with(lambda c: ["--config", c.file("list.yaml", "- 1\n")]), r"list\.yaml"),
    ("--config wrong type", _with(lambda c: ["--config", c.config(lambda d: d.__setitem__("mc", 5))]), r"mc"),
    ("--config token file missing", _with(lambda c: ["--config", c.config(
        lambda d: d["mc"].__setitem__("token_file", "/nonexistent/tok"))]), r"/nonexistent/tok"),
    ("MC token file empty", _with(lambda c: ["--config", c.config(
        lambda d: d["mc"].__setitem__("token_file", c.file("empty-token", "")))]), r"(?i)empty-token"),
    ("--mc-url not a URL", _args("--mc-url", "mission control"), r"mission control"),
    ("--runbooks missing", _args("--runbooks", "/nonexistent/runbooks"), r"/nonexistent/runbooks does not exist"),
    ("--runbooks empty folder", _with(lambda c: ["--runbooks", str(c.tmp)]), r"No step notebooks"),
    ("--out is a file", _with(lambda c: ["--out", c.file("out-file", "x")]), r"out-file"),
    ("--out under a file", _with(lambda c: ["--out", str(Path(c.file("out-parent", "x")) / "records")]),
     r"out-parent"),
    ("missing --namespace", lambda c: (["--incident", "INC-1", "--rollout", c.name], {"ROLLBOOK_NAMESPACE": ""}),
     r"--namespace"),
    ("unknown option", _args("--aprove-retry"), r"No such option '--aprove-retry'.*Did you mean"),
]


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ctx]:
    tmp = tmp_path_factory.mktemp("bad-input")
    sb = Sandbox("evidence-gap", tmp / "sandbox", 0, timings=FAST).start()
    try:
        ns, name = sb.rollouts[0]
        yield Ctx(sb, tmp, ns, name)
    finally:
        sb.stop()


def _base_env(c: Ctx, work: Path) -> dict[str, str]:
    return {"KUBECONFIG": str(c.sb.kubeconfig), "ROLLBOOK_MC_URL": c.sb.mc_url,
            "ROLLBOOK_MC_TOKEN_FILE": str(c.sb.mc_write_token_file), "ROLLBOOK_CONFIG": str(c.sb.config_file),
            "ROLLBOOK_NAMESPACE": "", "ROLLBOOK_ROLLOUT": "", "ROLLBOOK_INCIDENT": "", "ROLLBOOK_CONTEXT": "",
            "ROLLBOOK_RUNBOOKS": str(Path(__file__).parents[2] / "runbooks")}


@pytest.mark.parametrize("case, build, names", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line_naming_it(ctx: Ctx, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   case: str, build: Build, names: str, row) -> None:  # type: ignore[no-untyped-def]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    case_tmp = tmp_path / "case"
    case_tmp.mkdir()
    c = Ctx(ctx.sb, case_tmp, ctx.ns, ctx.name)
    args, env = build(c)
    if "--out" not in args:
        args += ["--out", str(work / "outputs")]
    before = sorted(p.name for p in case_tmp.iterdir())
    result = CliRunner().invoke(main, ["run", *args], env=_base_env(c, work) | env)
    lines = [line for line in result.output.splitlines() if line.strip()]
    # our errors are one `rollbook:` line; click's usage errors end in one `Error:` line after the usage
    first = next((line for line in lines if line.startswith(("rollbook: ", "Error: "))), lines[0] if lines else "")
    clean = isinstance(result.exception, SystemExit) or result.exception is None
    no_trace = clean and "Traceback" not in result.output
    written = sorted(p.relative_to(work).as_posix() for p in work.rglob("*"))
    untouched = sorted(p.name for p in case_tmp.iterdir()) == before
    named = re.search(names, first) is not None
    ok = result.exit_code == 2 and no_trace and named and not written and untouched and "\x1b" not in result.output
    observed = f"exit {result.exit_code}: {first[:150]}" + ("" if no_trace else f" [{result.exception!r}]")
    row("bad-input", case, f"exit 2, one line naming /{names}/", observed, ok)
    assert result.exit_code == 2, observed
    assert no_trace, result.exception
    assert first.startswith(("rollbook: ", "Error: ")), first
    assert named, f"{first!r} does not match {names!r}"
    assert not written, f"files written: {written}"
    assert untouched
    assert "\x1b" not in result.output  # no raw terminal escape reaches the terminal


def test_there_are_at_least_40_cases() -> None:
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)
