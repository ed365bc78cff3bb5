"""Dashboard pictures: Grafana panels rendered to PNG through Grafana's render API (`/render/d-solo/...`).

Panels come from `grafana.panels` in rollbook.yaml. Fetching a picture is a read, so it happens in dry
runs too. Each reply is checked to really be a PNG: a login page or an error text is refused loudly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from rollbook.config import Config
from rollbook.errors import ConfigError
from rollbook.outbound import (
    DEFAULT_RETRY,
    Outbound,
    RetryPolicy,
    ServiceProtocolError,
    fetch,
    require_secret,
)
from rollbook.paging import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Rendering a panel takes Grafana's headless browser seconds, not milliseconds.
RENDER_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class NotAPicture(ServiceProtocolError):
    """Grafana answered 2xx with something that is not a PNG (a login page, a JSON error, ...)."""


@dataclass(frozen=True)
class Panel:
    """One `grafana.panels` entry: which panel of which dashboard, and its template variables."""

    dashboard_uid: str
    slug: str
    panel_id: int
    title: str
    vars: dict[str, str] | None = None

    @classmethod
    def from_config(cls, raw: dict[str, Any], index: int) -> Panel:
        """Parse a config entry, naming the entry in the error when a key is missing."""
        where = f"grafana.panels[{index}]"
        missing = [k for k in ("dashboard_uid", "panel_id") if raw.get(k) in (None, "")]
        if missing:
            raise ConfigError(f"{where} lacks {missing}.", hint="Each panel needs dashboard_uid and panel_id.")
        try:
            panel_id = int(raw["panel_id"])
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}.panel_id is {raw['panel_id']!r}, not a number.") from e
        vars_ = raw.get("vars")
        if vars_ is not None and not isinstance(vars_, dict):
            raise ConfigError(f"{where}.vars must be a mapping of variable name to value.")
        uid = str(raw["dashboard_uid"])
        return cls(dashboard_uid=uid, slug=str(raw.get("slug") or uid), panel_id=panel_id,
                   title=str(raw.get("title") or f"{uid} panel {panel_id}"),
                   vars={str(k): str(v) for k, v in vars_.items()} if vars_ is not None else None)


@dataclass(frozen=True)
class Picture:
    """A rendered panel: its title, the PNG on disk and the URL it came from (no secret in it)."""

    title: str
    path: Path
    source_url: str
    dashboard_uid: str
    panel_id: int
    size: int = 0

    def image(self, public_url: str | None = None) -> Image:
        """This picture for an Escalation message; `public_url` when the record is published."""
        return Image(title=self.title, path=str(self.path), url=public_url)


def public_url(link_base: str | None, published_root: str | Path, path: str | Path) -> str | None:
    """Where `path` is served when `published_root` (the records' `<out>` folder) is at `link_base`."""
    if not link_base:
        return None
    try:
        rel = Path(path).resolve().relative_to(Path(published_root).resolve())
    except ValueError:
        return None   # not under the published folder, so it has no public address
    return link_base.rstrip("/") + "/" + quote(rel.as_posix())


def to_ms(when: datetime | int) -> int:
    """Epoch milliseconds, as Grafana's `from`/`to` take them; naive datetimes are refused."""
    if isinstance(when, int):
        return when
    if when.tzinfo is None:
        raise ValueError(f"{when!r} has no timezone; pass an aware datetime (UTC) so the window is exact.")
    return int(when.timestamp() * 1000)


def panel_variables(panel: Panel, variables: dict[str, str]) -> dict[str, str]:
    """The panel's `vars` with `{name}` placeholders filled from `variables`; without `vars`, `variables`."""
    if panel.vars is None:
        return {k: str(v) for k, v in variables.items()}
    try:
        return {k: v.format_map(variables) for k, v in panel.vars.items()}
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(f"Panel {panel.title!r} ({panel.dashboard_uid}) uses variable {e} that the "
                          f"caller did not supply (have {sorted(variables)}).",
                          hint="Fix grafana.panels[].vars or pass the variable.") from e


def render_params(panel: Panel, *, start: datetime | int, end: datetime | int, variables: dict[str, str],
                  options: dict[str, Any] | None = None) -> dict[str, str]:
    """The render API's query parameters for one panel over [start, end]."""
    opts = options or {}
    params = {"orgId": str(opts.get("org_id", 1)), "panelId": str(panel.panel_id),
              "from": str(to_ms(start)), "to": str(to_ms(end)),
              "width": str(opts.get("width", 1000)), "height": str(opts.get("height", 500)),
              "tz": str(opts.get("tz", "UTC"))}
    params.update({f"var-{k}": v for k, v in panel_variables(panel, variables).items()})
    return params


def is_png(data: bytes) -> bool:
    """True when `data` starts like a PNG: the signature, then the IHDR chunk."""
    return data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"


def render_panels(
    config: Config,
    *,
    start: datetime | int,
    end: datetime | int,
    variables: dict[str, str],
    out_dir: str | Path,
    dry_run: bool = False,
    transport: httpx.BaseTransport | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> list[Picture]:
    """Render every configured panel to `out_dir` (none configured: []). Reads, so dry runs fetch too."""
    del dry_run  # accepted for a uniform call shape; a read changes nothing, so it always happens
    panels = [Panel.from_config(raw, i) for i, raw in enumerate(config.grafana_panels)]
    if not panels:
        return []
    if not config.grafana.url:
        raise ConfigError("grafana.panels are configured but grafana.url is not.", hint="Set grafana.url.")
    token = require_secret(config.grafana.secret, "grafana", "token")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = config.grafana.url.rstrip("/")
    return [_render(base, token, p, render_params(p, start=start, end=end, variables=variables,
                                                   options=config.grafana.options), out, transport, retry)
            for p in panels]


def _render(base: str, token: str, panel: Panel, params: dict[str, str], out: Path,
            transport: httpx.BaseTransport | None, retry: RetryPolicy) -> Picture:
    req = Outbound("grafana", "GET", f"{base}/render/d-solo/{panel.dashboard_uid}/{panel.slug}",
                   {"Authorization": f"Bearer {token}", "Accept": "image/png"}, params=params,
                   secrets=(token,), idempotent=True,
                   hint=f"Check grafana.url, the token's access to dashboard {panel.dashboard_uid!r} and "
                        f"panel {panel.panel_id}.")
    resp, _ = fetch(req, transport=transport, retry=retry, timeout=RENDER_TIMEOUT)
    url = req.record().url
    if not is_png(resp.content):
        raise NotAPicture(
            f"Grafana answered {url} with {resp.headers.get('content-type', 'no content type')} "
            f"({len(resp.content)} bytes) that is not a PNG.", service="grafana", url=url,
            status=resp.status_code, body=resp.content[:200].decode("utf-8", "replace"),
            hint="Is the image renderer plugin installed, and grafana.url the API (not an SSO page)?")
    path = out / _filename(panel)
    path.write_bytes(resp.content)
    return Picture(title=panel.title, path=path, source_url=url, dashboard_uid=panel.dashboard_uid,
                   panel_id=panel.panel_id, size=len(resp.content))


def _filename(panel: Panel) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"grafana-{panel.dashboard_uid}-panel-{panel.panel_id}.png")
