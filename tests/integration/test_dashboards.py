"""Grafana panel rendering through real HTTP against the services stand-in."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from PIL import Image as PILImage

from rollbook import dashboards, paging
from rollbook.config import Config, SecretRef, Service
from rollbook.sandbox.services import ServicesServer

TOKEN = "planted-grafana-token-4242"
START = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
END = START + timedelta(minutes=90)
PANELS = (
    {"dashboard_uid": "api-slo", "slug": "api-slo", "panel_id": 4, "title": "p99 latency",
     "vars": {"namespace": "{namespace}", "rollout": "{rollout}"}},
    {"dashboard_uid": "api-slo", "slug": "api-slo", "panel_id": 7, "title": "error rate"},
)


@pytest.fixture
def services() -> Iterator[ServicesServer]:
    with ServicesServer(grafana_token=TOKEN, grafana_dashboards={"api-slo": "api-slo"}) as server:
        yield server


def config(url: str, panels: tuple[dict[str, object], ...] = PANELS, **options: object) -> Config:
    return Config(grafana=Service(url=url, secret=SecretRef(env="IT_GRAFANA_TOKEN"), options=dict(options)),
                  grafana_panels=panels)


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IT_GRAFANA_TOKEN", TOKEN)


def test_renders_pngs_with_the_render_api_query(services: ServicesServer, tmp_path: Path) -> None:
    pictures = dashboards.render_panels(config(services.url), start=START, end=END,
                                        variables={"namespace": "prod", "rollout": "api"}, out_dir=tmp_path)
    first, second = services.received("grafana")
    assert first.path == "/render/d-solo/api-slo/api-slo"
    assert first.query == {"orgId": ["1"], "panelId": ["4"], "from": [str(int(START.timestamp() * 1000))],
                           "to": [str(int(END.timestamp() * 1000))], "width": ["1000"], "height": ["500"],
                           "tz": ["UTC"], "var-namespace": ["prod"], "var-rollout": ["api"]}
    assert first.headers["Authorization"] == "Bearer ***"
    # A panel without its own vars gets the caller's variables as they are.
    assert second.query["panelId"] == ["7"] and second.query["var-rollout"] == ["api"]
    assert [p.title for p in pictures] == ["p99 latency", "error rate"]
    data = pictures[0].path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and pictures[0].size == len(data)
    assert PILImage.open(io.BytesIO(data)).size == (1000, 500)
    assert pictures[0].path.parent == tmp_path
    assert TOKEN not in repr(pictures) and "panelId=4" in pictures[0].source_url


def test_size_and_org_come_from_options(services: ServicesServer, tmp_path: Path) -> None:
    (picture,) = dashboards.render_panels(config(services.url, PANELS[1:], width=400, height=200, org_id=3),
                                          start=START, end=END, variables={}, out_dir=tmp_path)
    (req,) = services.received("grafana")
    assert req.query["orgId"] == ["3"] and req.query["width"] == ["400"]
    assert PILImage.open(picture.path).size == (400, 200)


def test_dry_run_still_fetches(services: ServicesServer, tmp_path: Path) -> None:
    pictures = dashboards.render_panels(config(services.url, PANELS[1:]), start=START, end=END,
                                        variables={}, out_dir=tmp_path, dry_run=True)
    assert len(services.received("grafana")) == 1 and pictures[0].path.is_file()


def test_a_wrong_token_is_a_401(services: ServicesServer, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IT_GRAFANA_TOKEN", "planted-bad-token")
    with pytest.raises(paging.ServiceRejected) as info:
        dashboards.render_panels(config(services.url), start=START, end=END,
                                 variables={"namespace": "prod", "rollout": "api"}, out_dir=tmp_path)
    assert info.value.status == 401 and "planted-bad-token" not in str(info.value)


def test_an_unknown_dashboard_is_a_404(services: ServicesServer, tmp_path: Path) -> None:
    panels = ({"dashboard_uid": "nope", "slug": "nope", "panel_id": 1},)
    with pytest.raises(paging.ServiceRejected, match="nope") as info:
        dashboards.render_panels(config(services.url, panels), start=START, end=END, variables={},
                                 out_dir=tmp_path)
    assert info.value.status == 404


def test_a_reply_that_is_not_a_png_is_refused(services: ServicesServer, tmp_path: Path) -> None:
    # What an SSO proxy in front of Grafana answers: 200 with a login page.
    services.fail_next("/render/", status=200, body=b"<html>Sign in</html>", content_type="text/html")
    with pytest.raises(dashboards.NotAPicture, match="not a PNG") as info:
        dashboards.render_panels(config(services.url, PANELS[1:]), start=START, end=END, variables={},
                                 out_dir=tmp_path)
    assert "text/html" in str(info.value) and list(tmp_path.iterdir()) == []


def test_5xx_is_retried(services: ServicesServer, tmp_path: Path) -> None:
    services.fail_next("/render/", status=502, times=1)
    pictures = dashboards.render_panels(config(services.url, PANELS[1:]), start=START, end=END,
                                        variables={}, out_dir=tmp_path,
                                        retry=paging.RetryPolicy(backoff=0.0))
    assert len(services.received("grafana")) == 2 and len(pictures) == 1


def test_no_panels_no_requests(services: ServicesServer, tmp_path: Path) -> None:
    assert dashboards.render_panels(config(services.url, ()), start=START, end=END, variables={},
                                    out_dir=tmp_path) == []
    assert services.requests == []


def test_stand_in_needs_the_token(services: ServicesServer) -> None:
    reply = httpx.get(services.url + "/render/d-solo/api-slo/api-slo", params={"panelId": "4"}, timeout=5)
    assert reply.status_code == 401 and reply.json() == {"message": "Unauthorized"}


def test_a_picture_becomes_an_escalation_image(services: ServicesServer, tmp_path: Path) -> None:
    (picture,) = dashboards.render_panels(config(services.url, PANELS[1:]), start=START, end=END,
                                          variables={}, out_dir=tmp_path)
    local = picture.image()
    published = picture.image("https://files.example.internal/INC-1/error-rate.png")
    assert local.path == str(picture.path) and not local.public
    assert published.public and published.title == "error rate"
