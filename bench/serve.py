"""Benchmark: `rollbook serve` from notification to record.json (steps 1-3), next to a cold `rollbook run`.

One sandbox process holds a copy of `evidence-gap` per namespace (distinct rollouts, so every
notification is a new incident). In the same run, interleaved so a busy machine slows both alike:
- **serve**: POST the notification (rendered like the shipped template renders it) to a running
  `rollbook serve --steps 1,2,3 --pool 3`, one at a time, each with a full warm pool; latency = POST ->
  record.json written (its mtime) and -> the incident `done`; CPU = user+sys of the service process and
  every process it started (kernels: live ones read, reaped ones from the service's children times)
  from the POST to `done` (the window of issue 8's target), and again once the pool has booted the
  three replacement kernels ("amortised": what an incident really costs at steady state);
- **cold**: `rollbook run --steps 1,2,3` on another rollout; wall and CPU (os.wait4: the CLI and the
  kernels it reaped).
Then a **burst**: 20 notifications for 20 rollouts within one second (plus a duplicate each, as Argo
sends both triggers); time until all 20 are done, lost (not done), duplicated (more than one attempt
or record), peak RSS of the service and everything it started (psutil, every 0.1 s).

`--pool 0` measures the cold child process per attempt instead (the service before the pool).

    python bench/serve.py [--runs 5] [--burst 20] [--workers 2] [--pool 3] [--json bench/results/serve.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runner import Sampler  # noqa: E402 - bench/runner.py's process-tree RSS sampler

ROOT = Path(__file__).resolve().parents[1]
EVIDENCE_GAP = ROOT / "lib" / "rollbook" / "sandbox" / "scenarios" / "evidence-gap"
BOUND = 600.0  # seconds any wait here may take


def wait_for(fn: Any, timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def build_scenario(folder: Path, namespaces: list[str]) -> None:
    """evidence-gap once per namespace, names and uids rewritten (as tests/integration/serve_harness.py)."""
    folder.mkdir(parents=True)
    for ns in namespaces:
        for src in sorted(EVIDENCE_GAP.glob("*.yaml")):
            if src.stem == "mc":
                continue
            text = re.sub(r"\bprod\b", ns, src.read_text(encoding="utf-8"))
            for uid in set(re.findall(r"uid: ([0-9a-f-]{36})", text)):
                text = text.replace(uid, str(uuid.uuid5(uuid.NAMESPACE_URL, f"{ns}/{uid}")))
            (folder / f"{ns}-{src.name}").write_text(text, encoding="utf-8")
    (folder / "mc.yaml").write_text((EVIDENCE_GAP / "mc.yaml").read_text(encoding="utf-8"), encoding="utf-8")


def body_for(ns: str, trigger: str = "on-rollout-aborted") -> bytes:
    """What the shipped template renders for the copy of api in `ns` (revision 7; see the template test)."""
    return json.dumps({"namespace": ns, "rollout": "api", "revision": "7", "trigger": trigger,
                       "analysisRun": "api-6d4f8b7c9-7-2", "message": "RolloutAborted: ...",
                       "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode()


class Bench:
    def __init__(self, tmp: Path, namespaces: list[str], workers: int, pool: int) -> None:
        self.tmp, self.workers, self.pool = tmp, workers, pool
        self.reference: dict[str, str] = {}  # the verdicts of the first (warm-up) incident: every copy must match
        build_scenario(tmp / "scenario", namespaces)
        sb_dir = tmp / "sandbox"
        self.sandbox = subprocess.Popen([sys.executable, "-m", "rollbook.cli", "sandbox", "--scenario",
                                         str(tmp / "scenario"), "--state-dir", str(sb_dir)],
                                        stdout=subprocess.DEVNULL, stderr=(tmp / "sandbox.log").open("wb"))
        ready = wait_for(lambda: (sb_dir / "ready.json").exists() and json.loads((sb_dir / "ready.json").read_text()),
                         120, "the sandbox")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLBOOK_")}
        self.env.update(KUBECONFIG=ready["kubeconfig"], ROLLBOOK_MC_URL=ready["mc_url"],
                        ROLLBOOK_MC_TOKEN_FILE=ready["mc_token_file"])
        self.token = secrets.token_hex(24)
        (tmp / "token").write_text(self.token)
        cfg = yaml.safe_load(Path(ready["config"]).read_text()) | {"serve": {"token_file": str(tmp / "token")}}
        self.config = tmp / "rollbook.yaml"
        self.config.write_text(yaml.safe_dump(cfg))
        self.out = tmp / "serve-out"
        self.serve = subprocess.Popen([sys.executable, "-m", "rollbook.cli", "serve", "--listen", "127.0.0.1:0",
                                       "--config", str(self.config), "--out", str(self.out), "--steps", "1,2,3",
                                       "--workers", str(workers), "--pool", str(pool), "--grace", "0"], env=self.env,
                                      stdout=subprocess.DEVNULL, stderr=(tmp / "serve.log").open("wb"))
        url_file = self.out / ".serve" / "ready.json"
        self.url = wait_for(lambda: url_file.exists() and json.loads(url_file.read_text())["url"], 120, "serve")
        self.proc = psutil.Process(self.serve.pid)
        # one client, kept alive as Argo's Go client does: a new httpx client per request costs ~40 ms itself
        self.http = httpx.Client(timeout=10, headers={"Authorization": f"Bearer {self.token}"})

    def post(self, body: bytes) -> httpx.Response:
        return self.http.post(f"{self.url}/v1/argo-rollouts", content=body)

    def incident(self, incident: str) -> dict[str, Any]:
        data: dict[str, Any] = self.http.get(f"{self.url}/v1/incidents/{incident}").json()
        return data

    def tree_cpu(self) -> float:
        """User+sys of the service, the children it reaped, and every live descendant and the children it reaped."""
        t = self.proc.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for p in self.proc.children(recursive=True):
            try:
                c = p.cpu_times()  # and what it reaped: the kernel fork server's finished kernels
                total += c.user + c.system + c.children_user + c.children_system
            except psutil.Error:
                pass
        return float(total)

    def pool_state(self) -> dict[str, float]:
        """rollbook_serve_pool_kernels{state} from /metrics (empty without a pool)."""
        found = re.findall(r'^rollbook_serve_pool_kernels\{state="(\w+)"\} (\S+)$',
                           self.http.get(f"{self.url}/metrics").text, re.M)
        return {k: float(v) for k, v in found}

    def pool_full(self) -> bool:
        s = self.pool_state()
        return not s or (s.get("idle", 0) >= self.pool and not s.get("booting") and not s.get("in_use"))

    def serve_once(self, ns: str) -> dict[str, Any]:
        wait_for(self.pool_full, BOUND, "a full warm pool", interval=0.1)
        time.sleep(0.5)  # the last boot's tail (its warm-up reply) settles outside the window
        cpu0 = self.tree_cpu()
        t0 = time.time()
        resp = self.post(body_for(ns))
        answered = time.time() - t0
        incident = resp.json()["incident"]
        row = wait_for(lambda: (i := self.incident(incident))["status"] in ("done", "failed") and i, BOUND, incident)
        done = time.time() - t0
        verdicts = verdicts_of(Path(row["record"]))
        self.reference = self.reference or verdicts
        cpu_done = self.tree_cpu()
        record_at = (Path(row["record"]) / "record.json").stat().st_mtime
        attempt = row["attempts"][-1]
        wait_for(self.pool_full, BOUND, "the pool's replacements", interval=0.1)
        cpu_refilled = self.tree_cpu()
        return {"namespace": ns, "status": row["status"], "answer_ms": round(answered * 1000, 1),
                "to_record_s": round(record_at - t0, 3), "to_done_s": round(done, 3),
                "cpu_s": round(cpu_done - cpu0, 3), "cpu_amortised_s": round(cpu_refilled - cpu0, 3),
                "attempt_cpu_s": attempt["cpu_seconds"], "verdicts": verdicts, "same_verdicts": verdicts == self.reference}

    def cold_once(self, ns: str, i: int) -> dict[str, Any]:
        t0 = time.time()
        p = subprocess.Popen([sys.executable, "-m", "rollbook.cli", "run", "--incident", f"COLD-{i}", "-n", ns,
                              "--rollout", "api", "--steps", "1,2,3", "--config", str(self.config), "--out",
                              str(self.tmp / "cold-out")], env=self.env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.time() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        cold = sorted((self.tmp / "cold-out" / f"COLD-{i}").glob("*/record.json"))
        same = bool(cold) and verdicts_of(cold[-1].parent) == self.reference
        return {"namespace": ns, "exit": p.returncode, "wall_s": round(wall, 3), "same_verdicts": same,
                "cpu_s": round(usage.ru_utime + usage.ru_stime, 3)}

    def burst(self, namespaces: list[str]) -> dict[str, Any]:
        sampler = Sampler(self.serve.pid)
        answers: dict[str, list[int]] = {}
        incidents: dict[str, str] = {}

        def send(ns: str) -> None:
            first = self.post(body_for(ns))
            again = self.post(body_for(ns, "on-analysis-run-failed"))
            answers[ns] = [first.status_code, again.status_code]
            incidents[ns] = first.json()["incident"]

        t0 = time.time()
        threads = [threading.Thread(target=send, args=(ns,)) for ns in namespaces]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        sent = time.time() - t0
        intake = self.http.get(f"{self.url}/metrics").text
        rows = {ns: wait_for(lambda i=inc: (r := self.incident(i))["status"] in ("done", "failed") and r, BOUND, inc)
                for ns, inc in incidents.items()}
        done = time.time() - t0
        peak = sampler.stop()
        records = {ns: len(list((self.out / inc).glob("*/record.json"))) for ns, inc in incidents.items()}
        wrong = [ns for ns, r in rows.items() if r.get("record") and verdicts_of(Path(r["record"])) != self.reference]
        return {"notifications": len(namespaces), "sent_within_s": round(sent, 3), "all_done_s": round(done, 3),
                "done": sum(r["status"] == "done" for r in rows.values()),
                "lost": len(namespaces) - sum(r["status"] == "done" for r in rows.values()),
                "duplicated": sum(1 for ns in namespaces if records.get(ns, 0) > 1 or rows[ns]["attempt"] > 1),
                "wrong_verdicts": wrong, "reference": self.reference,
                "not_done": {ns: {k: r.get(k) for k in ("status", "failure", "error", "verdicts")} | {
                    "attempt": (r.get("attempts") or [{}])[-1]} for ns, r in rows.items()
                    if r["status"] != "done" or ns in wrong},
                "answers": sorted({tuple(a) for a in answers.values()}),
                "intake_over_100ms": _over_100ms(intake),
                "peak_tree_mib": round(peak.tree_mib, 1), "peak_tree_pss_mib": round(peak.tree_pss_mib, 1),
                "peak_service_mib": round(peak.runner_mib, 1),
                "peak_kernel_mib": round(peak.kernel_mib, 1)}

    def close(self) -> None:
        for p in (self.serve, self.sandbox):
            p.terminate()
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()


def verdicts_of(run_dir: Path) -> dict[str, str]:
    """{step name: verdict} of a record."""
    doc = json.loads((run_dir / "record.json").read_text(encoding="utf-8"))
    return {s["name"]: s["verdict"] for s in doc["steps"]}


def _over_100ms(metrics: str) -> float:
    """Intake answers slower than 100 ms, from the service's own histogram (server side)."""
    total = le = 0.0
    for line in metrics.splitlines():
        if line.startswith("rollbook_serve_intake_seconds_count"):
            total = float(line.split()[-1])
        if line.startswith('rollbook_serve_intake_seconds_bucket{le="0.1"}'):
            le = float(line.split()[-1])
    return total - le


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--burst", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pool", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    lat = [f"lat-{i}" for i in range(args.runs)]
    burst_ns = [f"burst-{i:02d}" for i in range(args.burst)]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="rb-bench-serve-") as tmp:
        b = Bench(Path(tmp), ["warm", *lat, *burst_ns], args.workers, args.pool)
        try:
            b.serve_once("warm")  # warm-up (not counted): first imports, page cache, compiled templates
            b.cold_once("warm", 0)
            serve_runs, cold_runs = [], []
            for i, ns in enumerate(lat):  # interleaved: a busy machine slows both alike
                cold_runs.append(b.cold_once(ns, i + 1))
                serve_runs.append(b.serve_once(ns))
            burst = b.burst(burst_ns)
        finally:
            b.close()
    result = {"serve": serve_runs, "cold": cold_runs, "burst": burst, "workers": args.workers, "pool": args.pool,
              "load_before": load_before, "load_after": os.getloadavg(), "cpus": os.cpu_count()}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return report(result)


def report(r: dict[str, Any]) -> int:
    """The table for docs/benchmarks.md; exit 1 when a measurement is invalid (a run failed, a notification lost)."""
    serve, cold, burst = r["serve"], r["cold"], r["burst"]
    rec = [x["to_record_s"] for x in serve]
    cold_wall = [x["wall_s"] for x in cold]
    med = statistics.median
    cold_cpu = med(x['cpu_s'] for x in cold)
    cpu, amortised = med(x['cpu_s'] for x in serve), med(x['cpu_amortised_s'] for x in serve)
    print(f"| steps 1-3 (pool {r['pool']}) | p50 s | p95 s | min-max s | CPU s per incident (median) | ratio to cold (p50) |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| serve: notification -> record.json | {med(rec):.2f} | {pct(rec, 0.95):.2f} | {min(rec):.2f}-{max(rec):.2f}"
          f" | {cpu:.2f} ({cpu / cold_cpu:.2f}x); {amortised:.2f} with the pool's replacements ({amortised / cold_cpu:.2f}x)"
          f" | {med(rec) / med(cold_wall):.2f}x |")
    done = [x["to_done_s"] for x in serve]
    print(f"| serve: notification -> incident done (first look, sealed) | {med(done):.2f} | {pct(done, 0.95):.2f} | "
          f"{min(done):.2f}-{max(done):.2f} | | |")
    print(f"| cold `rollbook run --steps 1,2,3` | {med(cold_wall):.2f} | {pct(cold_wall, 0.95):.2f} | "
          f"{min(cold_wall):.2f}-{max(cold_wall):.2f} | {cold_cpu:.2f} | 1.00x |")
    print(f"\nintake answered in {med(x['answer_ms'] for x in serve):.1f} ms (median), max "
          f"{max(x['answer_ms'] for x in serve):.1f} ms; CPU the attempt accounted itself (median) "
          f"{med(x['attempt_cpu_s'] or 0.0 for x in serve):.2f} s; verdicts {serve[0]['verdicts']}, same in every "
          f"serve run: {all(x['same_verdicts'] for x in serve)}, in every cold run: {all(x['same_verdicts'] for x in cold)}")
    print(f"burst: {burst['notifications']} notifications (+1 duplicate each) sent within {burst['sent_within_s']} s; "
          f"all done after {burst['all_done_s']} s; done {burst['done']}, lost {burst['lost']}, duplicated "
          f"{burst['duplicated']}, wrong verdicts {len(burst['wrong_verdicts'])}; answers {burst['answers']}, {burst['intake_over_100ms']:g} over 100 ms server-side; peak RSS service+children {burst['peak_tree_mib']} MiB "
          f"(PSS {burst['peak_tree_pss_mib']} MiB) "
          f"(service {burst['peak_service_mib']}, largest kernel {burst['peak_kernel_mib']})")
    print(f"workers {r['workers']}; load average before {r['load_before']}, after {r['load_after']}; {r['cpus']} CPUs")
    bad = [x for x in serve if x["status"] != "done" or not x["same_verdicts"]] + [
        x for x in cold if x["exit"] != 0 or not x["same_verdicts"]]
    return 1 if bad or burst["lost"] or burst["duplicated"] or burst["wrong_verdicts"] else 0


if __name__ == "__main__":
    sys.exit(main())
