"""Benchmark: reading one Rollout with the read model vs the kubectl plugin's list-everything pattern.

Reads one rollout in namespaces of 1x and 10x the generator's default size and prints requests, bytes
received and seconds (median of several repeats) for each, for both patterns, plus the sandbox
start-up time and peak RSS. Exits 1 when the read model's bytes grow more than 2x for a 10x namespace.

Layout (why): the sandbox + generated namespace live in one child process per size and each pattern
is measured in its own fresh client process, so the client's peak RSS is that pattern's alone
(ru_maxrss only ever grows) and the server's CPU and memory are not counted as the client's.

    python bench/read_model.py [--repeats 5] [--scales 1,10] [--json bench/results/read_model.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from rollbook.cluster import Cluster, RolloutView, build_view, connect, read_rollout
from rollbook.cluster.connect import Target
from rollbook.errors import NotFound

NAMESPACE = "bench"
ROLLOUT = "svc-000"  # aborted canary (generator: every 5th rollout), so stable and canary differ
BASE = {"rollouts": 50, "replicasets": 300, "pods": 5000, "analysisruns": 1000}  # generator defaults
TARGET_RATIO = 2.0
SERVER_READY_SECONDS = 900.0  # bound on start-up + generation (10x takes ~20-40 s on 2 busy cores)
SERVER_LIFETIME_SECONDS = 3600.0  # a forgotten server exits on its own
CLIENT_SECONDS = 1800.0
REQUEST_TIMEOUT = 300.0  # listing 50,000 pods from the sandbox takes well over the default 10 s

# What `kubectl argo rollouts get rollout NAME` lists: its view controller starts namespace-scoped
# informers for these six resources and filters in memory (argo-rollouts
# pkg/kubectl-argo-rollouts/viewcontroller/viewcontroller.go; the Deployments lister is created too,
# which registers and starts its informer). Each informer's first LIST is sent with
# resourceVersion=0, which a real API server answers from its watch cache in one piece (limit is
# ignored), so one unpaginated LIST per resource is what goes over the wire. The WATCHes that follow
# carry nothing for a one-shot `get` and are not counted.
PLUGIN_LISTS: tuple[tuple[str, str], ...] = (
    ("rollouts", "/apis/argoproj.io/v1alpha1"),
    ("replicasets", "/apis/apps/v1"),
    ("pods", "/api/v1"),
    ("experiments", "/apis/argoproj.io/v1alpha1"),
    ("analysisruns", "/apis/argoproj.io/v1alpha1"),
    ("deployments", "/apis/apps/v1"),
)


# --------------------------------------------------------------------------- the two patterns


def plugin_list(cluster: Cluster, prefix: str, plural: str, namespace: str) -> list[dict[str, Any]]:
    """One informer's initial LIST of a whole namespace, through the same counted Cluster."""
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    data = cluster.request("GET", path, Target(plural, namespace, verb="list"),
                           query=[("resourceVersion", "0")]).data or {}
    return list(data.get("items") or [])


def plugin_read(cluster: Cluster, namespace: str, name: str) -> RolloutView:
    """The plugin's pattern: list everything, pick the rollout, keep its objects by owner UID."""
    objs = {plural: plugin_list(cluster, prefix, plural, namespace) for plural, prefix in PLUGIN_LISTS}
    rollout = next((ro for ro in objs["rollouts"] if ro["metadata"]["name"] == name), None)
    if rollout is None:
        raise NotFound(f'Rollout "{name}" not found in namespace "{namespace}" (benchmark sandbox).',
                       kind="Rollout", name=name, namespace=namespace,
                       hint="The generator names rollouts svc-000, svc-001, ...")
    # build_view keeps ReplicaSets, pods and runs by owner UID, as the plugin's info package does
    return build_view(rollout, objs["replicasets"], objs["pods"], objs["analysisruns"])


def model_read(cluster: Cluster, namespace: str, name: str) -> RolloutView:
    """The read model exactly as the runbooks call it (server-side selectors, events included)."""
    return read_rollout(cluster, namespace, name)


PATTERNS: dict[str, Callable[[Cluster, str, str], RolloutView]] = {
    "read model": model_read,
    "plugin (list all)": plugin_read,
}


# --------------------------------------------------------------------------- client process


@dataclass
class ClientResult:
    """One pattern at one size: per-repeat numbers and what it found (to check both agree)."""

    pattern: str
    requests: list[int]
    bytes_received: list[int]
    seconds: list[float]
    rss_before_mib: float
    peak_rss_mib: float
    found: dict[str, int]


def _rss_mib() -> float:
    """This process's peak RSS so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_client(pattern: str, kubeconfig: str, repeats: int) -> ClientResult:
    """Read the rollout `repeats` times with one pattern over one connection; count each read."""
    read = PATTERNS[pattern]
    reqs, nbytes, secs = [], [], []
    view: RolloutView | None = None
    with connect("sandbox-viewer", kubeconfig, timeout=REQUEST_TIMEOUT) as cluster:
        before_rss = _rss_mib()
        for _ in range(repeats):
            view = None  # let the previous view go first: peak RSS is one read's, not two
            r0, b0 = cluster.stats.requests, cluster.stats.bytes_received
            t0 = time.perf_counter()
            view = read(cluster, NAMESPACE, ROLLOUT)
            secs.append(time.perf_counter() - t0)
            reqs.append(cluster.stats.requests - r0)
            nbytes.append(cluster.stats.bytes_received - b0)
    assert view is not None, "repeats must be at least 1"
    found = {"replicasets": len(view.replicasets), "pods": sum(len(rs.pods) for rs in view.replicasets),
             "analysisruns": len(view.analysis_runs)}
    return ClientResult(pattern, reqs, nbytes, secs, before_rss, _rss_mib(), found)


# --------------------------------------------------------------------------- server process


def run_server(scale: int, state_dir: Path) -> None:
    """Start a sandbox, generate the namespace, announce it on stdout, serve until stdin closes."""
    from rollbook.sandbox.generate import generate_namespace  # the client processes never load it
    from rollbook.sandbox.server import Sandbox

    with Sandbox("evidence-gap", state_dir) as sb:
        t0 = time.perf_counter()
        counts = generate_namespace(sb.store, NAMESPACE, **{k: v * scale for k, v in BASE.items()})
        ready = {"kubeconfig": str(sb.kubeconfig), "startup_seconds": sb.startup_seconds,
                 "generate_seconds": time.perf_counter() - t0, "counts": counts}
        print(json.dumps(ready), flush=True)
        _wait_for_eof(sys.stdin, SERVER_LIFETIME_SECONDS)
        print(json.dumps({"peak_rss_mib": _rss_mib()}), flush=True)


def _wait_for_eof(stream: IO[str], bound: float) -> None:
    """Block until the parent closes our stdin, at most `bound` seconds."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 1.0)
        if ready and not stream.readline():
            return


# --------------------------------------------------------------------------- parent


@dataclass
class ScaleResult:
    """Everything measured at one namespace size."""

    scale: int
    counts: dict[str, int]
    startup_seconds: float
    process_seconds: float
    generate_seconds: float
    server_peak_rss_mib: float
    clients: list[ClientResult]


def _self_cmd(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


def _read_json_line(proc: subprocess.Popen[str], bound: float) -> dict[str, Any]:
    """The next JSON line a child prints, within `bound` seconds."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], bound)
    line = proc.stdout.readline() if ready else ""
    if not line:
        proc.kill()
        raise SystemExit(f"bench: the sandbox process gave no answer within {bound:.0f} s (exit {proc.poll()}).")
    return dict(json.loads(line))


def measure_scale(scale: int, repeats: int, log: Callable[[str], None]) -> ScaleResult:
    """One server process for this size, then one client process per pattern."""
    with tempfile.TemporaryDirectory(prefix="rb-bench-") as tmp:
        server = subprocess.Popen(_self_cmd("_serve", str(scale), tmp), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        try:
            t0 = time.perf_counter()
            ready = _read_json_line(server, SERVER_READY_SECONDS)
            # spawn-to-ready minus generation: what `rollbook sandbox` costs from a cold process
            ready["process_seconds"] = time.perf_counter() - t0 - ready["generate_seconds"]
            log(f"  {scale}x: sandbox up in {ready['startup_seconds']:.3f} s, generated {ready['counts']} "
                f"in {ready['generate_seconds']:.1f} s")
            clients = [_client(pattern, ready["kubeconfig"], repeats, log) for pattern in PATTERNS]
            assert server.stdin is not None
            server.stdin.close()
            final = _read_json_line(server, 60)
        finally:
            if server.poll() is None:
                server.terminate()
            server.wait(timeout=30)
    return ScaleResult(scale, ready["counts"], ready["startup_seconds"], ready["process_seconds"],
                       ready["generate_seconds"], final["peak_rss_mib"], clients)


def _client(pattern: str, kubeconfig: str, repeats: int, log: Callable[[str], None]) -> ClientResult:
    """Run one pattern in a fresh process and parse its result."""
    out = subprocess.run(_self_cmd("_client", pattern, kubeconfig, str(repeats)), capture_output=True,
                         text=True, timeout=CLIENT_SECONDS, check=False)
    if out.returncode != 0:
        raise SystemExit(f"bench: the {pattern!r} client failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    result = ClientResult(**json.loads(out.stdout.strip().splitlines()[-1]))
    log(f"    {pattern}: median {statistics.median(result.seconds):.3f} s, {result.bytes_received[0]:,} bytes")
    return result


# --------------------------------------------------------------------------- report


def _mib(n: float) -> str:
    return f"{n / 2**20:,.2f} MiB"


def table(results: Sequence[ScaleResult]) -> str:
    """The result table as Markdown (also readable in a terminal)."""
    head = ("| namespace | pattern | requests | bytes received | median s | min–max s | client peak RSS |\n"
            "|---|---|---:|---:|---:|---:|---:|")
    rows = [head]
    for r in results:
        size = f"{r.scale}× ({r.counts['pods']:,} pods)"
        for c in r.clients:
            rows.append(f"| {size} | {c.pattern} | {c.requests[0]} | {c.bytes_received[0]:,} ({_mib(c.bytes_received[0])}) "
                        f"| {statistics.median(c.seconds):.3f} | {min(c.seconds):.3f}–{max(c.seconds):.3f} "
                        f"| {c.peak_rss_mib:.0f} MiB |")
    return "\n".join(rows)


def ratios(results: Sequence[ScaleResult]) -> dict[str, float]:
    """bytes(largest) / bytes(smallest) per pattern."""
    small, large = min(results, key=lambda r: r.scale), max(results, key=lambda r: r.scale)
    by_small = {c.pattern: c.bytes_received[0] for c in small.clients}
    return {c.pattern: c.bytes_received[0] / max(1, by_small[c.pattern]) for c in large.clients}


def check(results: Sequence[ScaleResult]) -> list[str]:
    """Problems that make the benchmark invalid or failed: unstable counts, disagreement, target missed."""
    problems = []
    for r in results:
        for c in r.clients:
            if len(set(c.requests)) != 1 or len(set(c.bytes_received)) != 1:
                problems.append(f"{r.scale}x {c.pattern}: requests/bytes differ between repeats "
                                f"({c.requests}, {c.bytes_received}); was something writing to the sandbox?")
        found = {c.pattern: c.found for c in r.clients}
        if len({json.dumps(f, sort_keys=True) for f in found.values()}) != 1:
            problems.append(f"{r.scale}x: the patterns found different objects: {found}")
    model = ratios(results).get("read model")
    if len(results) > 1 and model is not None and model > TARGET_RATIO:
        problems.append(f"read model bytes grew {model:.2f}x (target <= {TARGET_RATIO:g}x)")
    return problems


def report(results: Sequence[ScaleResult], load: tuple[tuple[float, ...], tuple[float, ...]]) -> str:
    """Table plus the summary lines."""
    lines = [table(results), ""]
    for r in results:
        lines.append(f"- {r.scale}×: sandbox start-up {r.startup_seconds:.3f} s in `Sandbox.start()` "
                     f"(scenario evidence-gap, before generation), {r.process_seconds:.2f} s from process spawn "
                     f"(Python start and imports included); generating {sum(r.counts.values()):,} objects took "
                     f"{r.generate_seconds:.1f} s; sandbox process peak RSS {r.server_peak_rss_mib:.0f} MiB; "
                     f"found per read: {r.clients[0].found}")
    if len(results) > 1:
        for pattern, ratio in ratios(results).items():
            lines.append(f"- bytes {max(r.scale for r in results)}×/{min(r.scale for r in results)}× "
                         f"for {pattern}: {ratio:.2f}×")
    lines.append(f"- load average (1/5/15 min) before {_load(load[0])}, after {_load(load[1])}; "
                 f"{os.cpu_count()} CPUs")
    return "\n".join(lines)


def _load(values: tuple[float, ...]) -> str:
    return "/".join(f"{v:.1f}" for v in values)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, measure each size, print the table; 1 when the target is missed."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["_serve"]:
        run_server(int(args[1]), Path(args[2]))
        return 0
    if args[:1] == ["_client"]:
        print(json.dumps(asdict(run_client(args[1], args[2], int(args[3])))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed reads per pattern and size (median)")
    parser.add_argument("--scales", default="1,10", help="namespace sizes as multiples of the generator defaults")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    opts = parser.parse_args(args)
    scales = [int(s) for s in opts.scales.split(",") if s.strip()]
    load_before = os.getloadavg()
    print(f"read-model benchmark: rollout {NAMESPACE}/{ROLLOUT}, sizes {scales}, {opts.repeats} repeats", flush=True)
    results = [measure_scale(s, opts.repeats, lambda m: print(m, flush=True)) for s in scales]
    print()
    print(report(results, (load_before, os.getloadavg())))
    if opts.json:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        opts.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n", encoding="utf-8")
    problems = check(results)
    for p in problems:
        print(f"FAIL: {p}")
    if not problems and len(results) > 1:
        print(f"PASS: read model bytes grew {ratios(results)['read model']:.2f}x (target <= {TARGET_RATIO:g}x)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
