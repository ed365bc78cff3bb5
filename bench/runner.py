"""Benchmark: wall time of `rollbook run` against the floor of starting the same kernels doing nothing.

Runs `rollbook run` (the real CLI, in its own process) on the sandbox's `evidence-gap` scenario
without approval (read-only) for all six steps and for steps 1-3, and in the same script the floor:
the same number of kernels started the way the runner starts them (`runner.IPCKernelManager`, the
runner's kernel environment), each executing only the notebooks' import (`from rollbook import
steps`), then stopped immediately. The floor is measured twice: one kernel after another
("sequential") and shaped like the runner's schedule ("runner-shaped": parallel steps in one batch,
the next batch's kernels started while the current batch runs). Runs are interleaved with the floors
so that a busy machine slows both alike. Peak memory is sampled (psutil, every 0.1 s) over the
runner process and its kernels. Also prints where the time goes: per-step seconds from record.json,
kernel start vs import vs stop from the floor, and import costs in a fresh interpreter.

    python bench/runner.py [--runs 5] [--json bench/results/runner.json]

Also reports CPU seconds per incident (the run and every kernel it reaped) next to the wall time.

Exits 1 when a target is missed (all six within 1.3x of the runner-shaped floor; steps 1-3 < 5 s; the
six-step run's process tree under 500 MiB PSS at its peak).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

STEP_SETS: dict[str, tuple[int, ...]] = {"all six": (1, 2, 3, 4, 5, 6), "steps 1-3": (1, 2, 3)}
FLOOR_CODE = "from rollbook import steps"  # the one import every step notebook makes
KERNEL_CODE = f"{FLOOR_CODE}; steps.table([{{'a': 1}}])._repr_html_()"  # ... and its first table
RATIO_TARGET = 1.3
STEPS_1_3_TARGET = 5.0
# exit codes of a run that completed with a record (README): 0, escalate 4, a step needs a human 5 (what a
# read-only run of evidence-gap gives), a check failed 6
COMPLETED = (0, 4, 5, 6)
TREE_MIB_TARGET = 500.0  # peak memory of `rollbook run` and its kernels, all six steps (issue 7): as PSS, since
# forked kernels share the fork server's pages, which a sum of RSS counts once per process (both are printed)
RUN_TIMEOUT = 600.0  # bound on one `rollbook run` or one floor process
KERNEL_TIMEOUT = 60.0  # bound on a kernel becoming ready / running the import
SAMPLE_SECONDS = 0.1
ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- the floor (child process)


@dataclass
class KernelTiming:
    """One floor kernel: seconds to launch, to become ready after its go, to run the import, to stop."""

    start: float = 0.0
    ready: float = 0.0
    execute: float = 0.0
    stop: float = 0.0


def _floor_kernel(workdir: Path, env: dict[str, str], gate: threading.Event | None,
                  done: Future[KernelTiming]) -> None:
    """Start a kernel as the runner does, wait for the go, import, report, then stop immediately."""
    from jupyter_core.utils import run_sync

    from rollbook.runner import IPCKernelManager

    timing = KernelTiming()
    t0 = time.perf_counter()
    km = IPCKernelManager(connection_file=str(workdir / f"k-{os.urandom(4).hex()}.json"))
    try:
        run_sync(km.start_kernel)(env=dict(env), cwd=str(workdir))
        timing.start = time.perf_counter() - t0
        if gate is not None and not gate.wait(RUN_TIMEOUT):
            raise TimeoutError(f"floor kernel waited {RUN_TIMEOUT:g} s for its batch")
        t1 = time.perf_counter()
        kc = km.client()
        kc.start_channels()
        run_sync(kc.wait_for_ready)(timeout=KERNEL_TIMEOUT)
        timing.ready = time.perf_counter() - t1
        t1 = time.perf_counter()
        reply = run_sync(kc.execute_interactive)(FLOOR_CODE, timeout=KERNEL_TIMEOUT, store_history=False,
                                                output_hook=lambda msg: None)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"the floor import failed in the kernel: {reply['content']}")
        timing.execute = time.perf_counter() - t1
        done.set_result(timing)  # like the runner: the next batch may go while this kernel stops
        kc.stop_channels()
    except Exception as e:  # noqa: BLE001 - handed to the waiting scheduler, which re-raises it
        if not done.done():
            done.set_exception(e)
    finally:
        t2 = time.perf_counter()
        if km.has_kernel:
            run_sync(km.shutdown_kernel)(now=True)
        timing.stop = time.perf_counter() - t2


def run_floor(shape: str, numbers: Sequence[int]) -> dict[str, Any]:
    """The floor for these step numbers, sequential or runner-shaped; seconds inside this process."""
    from rollbook import runner

    workdir = Path(tempfile.mkdtemp(prefix="rb-"))  # short path: unix socket names are limited
    # The runner's own kernel environment (IPYTHONDIR, JUPYTER_RUNTIME_DIR, TMPDIR per run): a private
    # helper, used on purpose so the floor's kernels start exactly like the runner's.
    env = runner._kernel_env(workdir)
    steps = [s for s in runner.discover(ROOT / "runbooks") if s.number in numbers]
    t0 = time.perf_counter()
    if shape == "sequential":
        timings = [_sequential_one(workdir, env) for _ in steps]
    else:
        timings = _runner_shaped(workdir, env, [len(b) for b in runner._batches(steps, runner.RunSpec(
            incident="x", namespace="x", rollout="x").max_parallel)])
    total = time.perf_counter() - t0
    return {"shape": shape, "kernels": len(steps), "inside_seconds": total,
            "timings": [asdict(t) for t in timings]}


def _sequential_one(workdir: Path, env: dict[str, str]) -> KernelTiming:
    """One kernel, start to stop, before the next one begins."""
    done: Future[KernelTiming] = Future()
    _floor_kernel(workdir, env, None, done)
    return done.result(timeout=0)


def _runner_shaped(workdir: Path, env: dict[str, str], batch_sizes: Sequence[int]) -> list[KernelTiming]:
    """The scheduler's shape: a batch's kernels start together; the next batch starts while it runs."""
    def launch(pool: ThreadPoolExecutor, n: int) -> list[tuple[threading.Event, Future[KernelTiming]]]:
        gates = [(threading.Event(), Future[KernelTiming]()) for _ in range(n)]
        for gate, done in gates:
            pool.submit(_floor_kernel, workdir, env, gate, done)
        return gates

    out: list[KernelTiming] = []
    with ThreadPoolExecutor(max_workers=2 * max(batch_sizes)) as pool:
        current = launch(pool, batch_sizes[0])
        for k in range(len(batch_sizes)):
            for gate, _ in current:
                gate.set()
            upcoming = launch(pool, batch_sizes[k + 1]) if k + 1 < len(batch_sizes) else []
            out += [done.result(timeout=RUN_TIMEOUT) for _, done in current]
            current = upcoming
    return out


# --------------------------------------------------------------------------- memory sampling


@dataclass
class MemoryPeak:
    """Max RSS seen per role over one process tree (sampled)."""

    runner_mib: float = 0.0
    kernel_mib: float = 0.0
    tree_mib: float = 0.0
    # the same tree's peak sum of PSS (shared pages divided among the processes sharing them): forked
    # kernels share the fork server's imports copy-on-write, which a sum of RSS counts once per kernel
    tree_pss_mib: float = 0.0
    at_peak: list[float] = field(default_factory=list)  # the tree's peak sample: root first, then each kernel


class Sampler:
    """Samples a process and its descendants every SAMPLE_SECONDS until stopped."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, MemoryPeak()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._stop.wait(SAMPLE_SECONDS):
            self._sample(root)

    def _sample(self, root: psutil.Process) -> None:
        """One sample: the root's RSS, the largest kernel's, the tree's sum."""
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        total, pss, sizes = 0.0, 0.0, []
        for p in procs:
            try:
                rss = p.memory_info().rss / 2**20
                pss += p.memory_full_info().pss / 2**20
                is_kernel = p is not root and "ipykernel_launcher" in " ".join(p.cmdline())
            except psutil.Error:
                continue  # a kernel that just exited
            total += rss
            sizes.append(rss)
            if p is root:
                self.peak.runner_mib = max(self.peak.runner_mib, rss)
            elif is_kernel:
                self.peak.kernel_mib = max(self.peak.kernel_mib, rss)
        self.peak.tree_pss_mib = max(self.peak.tree_pss_mib, pss)
        if total > self.peak.tree_mib:
            self.peak.tree_mib = total
            self.peak.at_peak = [round(sizes[0]), *sorted((round(x) for x in sizes[1:]), reverse=True)]

    def stop(self) -> MemoryPeak:
        """Stop sampling (bounded join) and return the peaks."""
        self._stop.set()
        self._thread.join(timeout=5)
        return self.peak


# --------------------------------------------------------------------------- one measured process


@dataclass
class Measured:
    """One process: wall seconds from spawn to exit, memory peaks, and what it reported."""

    kind: str
    steps: str
    seconds: float
    memory: MemoryPeak
    detail: dict[str, Any] = field(default_factory=dict)
    cpu_seconds: float = 0.0  # user + system CPU of the process and every descendant it reaped (its kernels)


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's reaped children and their reaped descendants."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(cmd: Sequence[str], env: dict[str, str]) -> tuple[float, float, MemoryPeak,
                                                           subprocess.CompletedProcess[str]]:
    """Run a command to completion (bounded): wall seconds from spawn to exit, CPU seconds, memory peaks.

    CPU is the children's rusage delta, which covers the kernels because the runner reaps them (measured
    processes run one at a time, so no other child of this script is counted)."""
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    sampler = Sampler(proc.pid)
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    seconds = time.perf_counter() - t0
    cpu = _children_cpu() - cpu0
    return seconds, cpu, sampler.stop(), subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def rollbook_run(label: str, numbers: Sequence[int], target: tuple[str, str], env: dict[str, str],
                 out_dir: Path, i: int) -> Measured:
    """`rollbook run` as an operator types it; per-step seconds and verdicts from record.json."""
    cmd = [str(Path(sys.executable).with_name("rollbook")), "run", "--incident", f"BENCH-{i}",
           "-n", target[0], "--rollout", target[1], "--out", str(out_dir)]
    if numbers != STEP_SETS["all six"]:
        cmd += ["--steps", ",".join(map(str, numbers))]
    spawned = time.time()  # wall clock, comparable with record.json's timestamps
    seconds, cpu, memory, done = _timed(cmd, env)
    if done.returncode not in COMPLETED:
        raise SystemExit(f"bench: `{' '.join(cmd)}` exited {done.returncode}:\n{done.stderr[-3000:]}")
    record = json.loads(max(out_dir.glob(f"BENCH-{i}/*/record.json")).read_text(encoding="utf-8"))
    ran = [s for s in record["steps"] if s.get("started_at")]
    last_end = max(_span(record["started_at"], s["started_at"]) + s["seconds"] for s in ran)
    detail = {"steps": {s["name"]: {"seconds": s["seconds"], "verdict": s["verdict"]} for s in record["steps"]},
              "runner_seconds": _span(record["started_at"], record["finished_at"]),
              # started_at -> first step: snapshot, first kernels' start; last step -> finished_at: the record
              "before_first_step": min(_span(record["started_at"], s["started_at"]) for s in ran),
              "after_last_step": _span(record["started_at"], record["finished_at"]) - last_end,
              # finished_at is stamped before record.json/report.html/bundle are written: measure from
              # the outside what follows the last step (record writing, kernel stop, interpreter exit)
              "spawn_to_started_at": _epoch(record["started_at"]) - spawned,
              "last_step_to_exit": spawned + seconds - (_epoch(record["started_at"]) + last_end)}
    return Measured("rollbook run", label, seconds, memory, detail, cpu)


def floor_run(label: str, numbers: Sequence[int], shape: str, env: dict[str, str]) -> Measured:
    """A floor in its own fresh process (so it pays interpreter start like `rollbook run` does)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "_floor", shape, ",".join(map(str, numbers))]
    seconds, cpu, memory, done = _timed(cmd, env)
    if done.returncode != 0:
        raise SystemExit(f"bench: the {shape} floor exited {done.returncode}:\n{done.stderr[-3000:]}")
    return Measured(f"floor, {shape}", label, seconds, memory, json.loads(done.stdout.strip().splitlines()[-1]),
                    cpu)


def _epoch(stamp: str) -> float:
    """POSIX seconds of an RFC 3339 timestamp of record.json."""
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _span(start: str, end: str) -> float:
    """Seconds between two RFC 3339 timestamps of record.json."""
    from datetime import datetime

    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


# --------------------------------------------------------------------------- import costs


_IMPORTTIME = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def import_costs(code: str, env: dict[str, str]) -> dict[str, float]:
    """Seconds `code` spends importing, per top-level package (self times summed; -X importtime)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], env=env, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT, check=True)
    costs: dict[str, float] = {}
    for line in done.stderr.splitlines():
        m = _IMPORTTIME.match(line)
        if m:
            top = m[4].split(".")[0]
            costs[top] = costs.get(top, 0.0) + int(m[1]) / 1e6
    return {"(total)": sum(costs.values()), **dict(sorted(costs.items(), key=lambda kv: -kv[1]))}


def import_seconds(code: str, env: dict[str, str], n: int = 3) -> float:
    """Median wall seconds of `code` in a fresh interpreter, minus a bare interpreter's."""
    def once(src: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", src], env=env, timeout=RUN_TIMEOUT, check=True)
        return time.perf_counter() - t0
    return statistics.median(once(code) for _ in range(n)) - statistics.median(once("pass") for _ in range(n))


def bytecode_effect(code: str, env: dict[str, str]) -> dict[str, float]:
    """Import wall time as the environment is, and with a warm bytecode cache outside the repository.

    PYTHONDONTWRITEBYTECODE=1 (set in some environments) means the editable install's own modules are
    compiled from source in every kernel; this measures what that costs.
    """
    with tempfile.TemporaryDirectory(prefix="rb-pyc-") as pyc:
        cached = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"} | {"PYTHONPYCACHEPREFIX": pyc}
        subprocess.run([sys.executable, "-c", code], env=cached, timeout=RUN_TIMEOUT, check=True)  # warm it
        return {"as_is": import_seconds(code, env), "bytecode_cached": import_seconds(code, cached)}


# --------------------------------------------------------------------------- the benchmark


def _sandbox_env(sb: Any) -> dict[str, str]:
    """The children's environment: the sandbox's kubeconfig and MC, the read token (read-only run)."""
    env = {k: v for k, v in os.environ.items() if k not in ("ROLLBOOK_MC_TOKEN", "ROLLBOOK_CONFIG")}
    env.update(KUBECONFIG=str(sb.kubeconfig), ROLLBOOK_MC_URL=sb.mc_url,
               ROLLBOOK_MC_TOKEN_FILE=str(sb.mc_token_file))
    return env


def measure(runs: int, log: Callable[[str], None]) -> tuple[list[Measured], dict[str, Any]]:
    """Interleave rollbook runs and both floors, `runs` times per step set, against one sandbox."""
    from rollbook.sandbox.server import Sandbox

    results: list[Measured] = []
    with tempfile.TemporaryDirectory(prefix="rb-bench-") as tmp, Sandbox("evidence-gap", Path(tmp) / "sb") as sb:
        assert sb.info is not None and sb.info.rollouts, "the evidence-gap scenario has a rollout"
        target = sb.info.rollouts[0]
        env = _sandbox_env(sb)
        ro_before = sb.store.get("rollouts", *target)["metadata"]["resourceVersion"]
        for i in range(runs):
            for label, numbers in STEP_SETS.items():
                jobs: list[Callable[[], Measured]] = [
                    functools.partial(rollbook_run, label, numbers, target, env, Path(tmp) / "out", len(results)),
                    functools.partial(floor_run, label, numbers, "runner-shaped", env),
                    functools.partial(floor_run, label, numbers, "sequential", env),
                ]
                for job in jobs[i % 3:] + jobs[: i % 3]:  # rotate the order: no kind always goes first
                    m = job()
                    results.append(m)
                    log(f"  run {i + 1}/{runs} {label:9} {m.kind:22} {m.seconds:6.2f} s")
        ro_after = sb.store.get("rollouts", *target)["metadata"]["resourceVersion"]
        extra = {"rollout": f"{target[0]}/{target[1]}", "sandbox_startup_seconds": sb.startup_seconds,
                 "read_only": ro_before == ro_after}
        # what a step kernel imports: the notebooks' import, then what its first table display needs
        extra["imports_kernel"] = import_costs(KERNEL_CODE, env)
        extra["imports_runner"] = import_costs("import rollbook.cli, rollbook.app, rollbook.runner", env)
        extra["bytecode"] = bytecode_effect(FLOOR_CODE, env)
    return results, extra


# --------------------------------------------------------------------------- report


def _pick(results: Sequence[Measured], kind: str, steps: str) -> list[Measured]:
    return [m for m in results if m.kind == kind and m.steps == steps]


def _stats(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.2f} | {min(values):.2f}–{max(values):.2f}"


def summary(results: Sequence[Measured]) -> tuple[list[str], list[str]]:
    """The main table and the list of missed targets."""
    lines = [("| steps | what | median s | min–max s | ratio to runner-shaped floor | CPU s (median) | "
              "runner / largest kernel / tree peak RSS (MiB) | tree peak PSS (MiB) |"),
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    missed: list[str] = []
    for steps in STEP_SETS:
        floor = statistics.median(m.seconds for m in _pick(results, "floor, runner-shaped", steps))
        for kind in ("rollbook run", "floor, runner-shaped", "floor, sequential"):
            ms = _pick(results, kind, steps)
            med = statistics.median(m.seconds for m in ms)
            mem = (f"{max(m.memory.runner_mib for m in ms):.0f} / {max(m.memory.kernel_mib for m in ms):.0f} / "
                   f"{max(m.memory.tree_mib for m in ms):.0f}")
            cpu = statistics.median(m.cpu_seconds for m in ms)
            pss = max(m.memory.tree_pss_mib for m in ms)
            lines.append(f"| {steps} | {kind} | {_stats([m.seconds for m in ms])} | {med / floor:.2f}× | {cpu:.2f} | "
                         f"{mem} | {pss:.0f} |")
        run = statistics.median(m.seconds for m in _pick(results, "rollbook run", steps))
        if steps == "all six" and run > RATIO_TARGET * floor:
            missed.append(f"all six: {run:.2f} s is {run / floor:.2f}x the runner-shaped floor "
                          f"(target <= {RATIO_TARGET:g}x)")
        tree = max(m.memory.tree_pss_mib for m in _pick(results, "rollbook run", steps))
        if steps == "all six" and tree >= TREE_MIB_TARGET:
            missed.append(f"all six: the process tree's PSS peaked at {tree:.0f} MiB (target < {TREE_MIB_TARGET:g} MiB)")
        if steps == "steps 1-3" and run >= STEPS_1_3_TARGET:
            missed.append(f"steps 1-3: {run:.2f} s (target < {STEPS_1_3_TARGET:g} s)")
    return lines, missed


def breakdown(results: Sequence[Measured], extra: dict[str, Any]) -> list[str]:
    """Where the time goes: per step, inside the runner, per floor kernel, per import."""
    lines = ["", "Per step (record.json `seconds`: papermill execution in an already started kernel), median:"]
    for steps in STEP_SETS:
        runs = _pick(results, "rollbook run", steps)
        names = list(runs[0].detail["steps"])
        cells = [f"{n} {statistics.median(r.detail['steps'][n]['seconds'] for r in runs):.2f}" for n in names]
        verdicts = {n: runs[0].detail["steps"][n]["verdict"] for n in names}
        wall = statistics.median(r.seconds for r in runs)
        before = statistics.median(r.detail["before_first_step"] for r in runs)
        after = statistics.median(r.detail["after_last_step"] for r in runs)
        spawn = statistics.median(r.detail["spawn_to_started_at"] for r in runs)
        tail = statistics.median(r.detail["last_step_to_exit"] for r in runs)
        lines.append(f"- {steps}: {', '.join(cells)}; wall {wall:.2f} s = {spawn:.2f} s from spawn to record "
                     f"`started_at` (interpreter start, imports, parameter validation, preflight) + {before:.2f} s "
                     f"to the first step (snapshot, kernels starting) + steps + {tail:.2f} s from the last step's "
                     f"end to exit (record.json, report.html, bundle, kernel stop, interpreter exit; of which "
                     f"{after:.2f} s before `finished_at`); verdicts {verdicts}")
    lines.append("Floor kernels, median seconds per kernel (launch / ready after its go / "
                 "`from rollbook import steps` / stop):")
    for steps in STEP_SETS:
        for shape in ("runner-shaped", "sequential"):
            ts = [t for m in _pick(results, f"floor, {shape}", steps) for t in m.detail["timings"]]
            inside = statistics.median(m.detail["inside_seconds"] for m in _pick(results, f"floor, {shape}", steps))
            lines.append(f"- {steps}, {shape}: launch {statistics.median(t['start'] for t in ts):.2f}, ready "
                         f"{statistics.median(t['ready'] for t in ts):.2f}, import "
                         f"{statistics.median(t['execute'] for t in ts):.2f}, stop {statistics.median(t['stop'] for t in ts):.2f}; "
                         f"kernels-only (inside the process) {inside:.2f} s")
    for key, what in (("imports_kernel", KERNEL_CODE),
                      ("imports_runner", "import rollbook.cli, rollbook.app, rollbook.runner")):
        top = ", ".join(f"{k} {v:.2f}" for k, v in list(extra[key].items())[:10])
        lines.append(f"Import time of `{what}` in a fresh interpreter, self seconds per package: {top}")
    bc = extra["bytecode"]
    for steps in STEP_SETS:
        peak = max(_pick(results, "rollbook run", steps), key=lambda m: m.memory.tree_mib).memory
        lines.append(f"- {steps}: at the tree's peak ({peak.tree_mib:.0f} MiB), RSS of the runner / each child, "
                     f"MiB: {peak.at_peak[0] if peak.at_peak else 0} / {', '.join(map(str, peak.at_peak[1:]))}")
    lines.append(f"`{FLOOR_CODE}` wall time over a bare interpreter: {bc['as_is']:.2f} s as the environment is "
                 f"(PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}), "
                 f"{bc['bytecode_cached']:.2f} s with a warm bytecode cache")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, measure, print the tables; 1 when a target is missed."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["_floor"]:
        print(json.dumps(run_floor(args[1], [int(n) for n in args[2].split(",")])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="measurements of each kind and step set (median)")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    opts = parser.parse_args(args)
    load_before = os.getloadavg()
    print(f"runner benchmark: {opts.runs} runs of each, interleaved; {os.cpu_count()} CPUs", flush=True)
    results, extra = measure(opts.runs, lambda m: print(m, flush=True))
    lines, missed = summary(results)
    lines += breakdown(results, extra)
    load = "/".join(f"{v:.1f}" for v in load_before) + " before, " + "/".join(f"{v:.1f}" for v in os.getloadavg())
    lines.append(f"Sandbox start-up {extra['sandbox_startup_seconds']:.3f} s; rollout {extra['rollout']}; "
                 f"read-only (rollout resourceVersion unchanged): {extra['read_only']}; load average {load} after")
    print("\n" + "\n".join(lines))
    if opts.json:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        opts.json.write_text(json.dumps({"results": [asdict(m) for m in results], "extra": extra}, indent=2) + "\n",
                             encoding="utf-8")
    for m in missed:
        print(f"MISSED: {m}")
    if not extra["read_only"]:
        print("FAIL: the run changed the rollout; the benchmark must be read-only")
    return 1 if missed or not extra["read_only"] else 0


if __name__ == "__main__":
    sys.exit(main())
