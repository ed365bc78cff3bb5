"""The Dockerfile follows the image rules (no image can be built here: it is parsed, with dockerfile-parse).

Rules (issue 9): multi-stage; every base pinned to an exact release or a digest; the final stage has no
compilers, runs as a non-root numeric user, and holds the installed package and the runbooks.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser

from tests.deploy_render import ROOT, by_kind, render_python

COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|make|cc|cmake|rustc|cargo|python3-dev|libc6-dev)\b")
PINNED = re.compile(r"^[\w./-]+(:\d+\.\d+\.\d+[\w.-]*)?(@sha256:[0-9a-f]{64})?$")


def stages() -> list[list[dict[str, Any]]]:
    """The Dockerfile's instructions, one list per stage (each starts with its FROM)."""
    parsed = DockerfileParser(path=str(ROOT / "Dockerfile"))
    out: list[list[dict[str, Any]]] = []
    for ins in parsed.structure:
        if ins["instruction"] == "FROM":
            out.append([])
        if out and ins["instruction"] != "COMMENT":
            out[-1].append(ins)
    return out


def of(stage: list[dict[str, Any]], instruction: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == instruction]


def test_multi_stage_with_pinned_bases() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2
    for stage in all_stages:
        image = stage[0]["value"].split()[0]
        assert PINNED.match(image) and (":" in image or "@sha256:" in image), f"unpinned base {image}"
        assert not image.endswith(":latest")
    names = [s[0]["value"].split()[-1] for s in all_stages[:-1]]
    copies = of(all_stages[-1], "COPY")
    assert any(f"--from={n}" in c for c in copies for n in names), "the final stage takes nothing from the build"


def test_the_final_stage_has_no_compilers() -> None:
    final = stages()[-1]
    base = final[0]["value"].split()[0]
    assert "slim" in base or "distroless" in base or "alpine" in base, f"{base} ships compilers"
    for run in of(final, "RUN"):
        installs = re.findall(r"(?:apt-get|apt|apk|yum|dnf) (?:-\S+ )*(?:install|add)([^&;]*)", run)
        for packages in installs:
            assert not COMPILERS.search(packages), f"the final stage installs a compiler: {packages}"


def test_the_final_stage_runs_as_a_non_root_numeric_user() -> None:
    final = stages()[-1]
    users = of(final, "USER")
    assert users, "no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    # nothing runs as root after the switch, and Kubernetes' runAsUser agrees with the image
    last_user = max(i for i, ins in enumerate(final) if ins["instruction"] == "USER")
    assert not [ins for ins in final[last_user:] if ins["instruction"] == "RUN"]
    pod = by_kind(render_python(), "Deployment")["rollbook"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid)


def test_the_package_and_the_runbooks_are_installed() -> None:
    final = stages()[-1]
    assert any(re.search(r"pip install\b.*\brollbook\b", run) for run in of(final, "RUN"))
    env: dict[str, str] = {}
    for value in of(final, "ENV"):
        env.update(dict(re.findall(r"(\w+)=(\S+)", value)))
    runbooks = env["ROLLBOOK_RUNBOOKS"]
    assert any(c.split()[-1].rstrip("/") == runbooks and c.split()[-2].rstrip("/") == "runbooks"
               for c in of(final, "COPY"))
    assert sorted(p.name for p in (ROOT / "runbooks").glob("0[1-6]-*.ipynb")), "no step notebooks to copy"
    entry = json.loads(of(final, "ENTRYPOINT")[-1])
    assert entry == ["rollbook"]


@pytest.mark.parametrize("needed", ["lib", "runbooks", "pyproject.toml", "README.md"])
def test_dockerignore_keeps_what_the_build_copies(needed: str) -> None:
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()]
    assert needed not in ignored and f"{needed}/" not in ignored
