"""A stand-in for the Job controller and the kubelet: a SIMULATION that runs a Job's pod as a local process.

What it does, as the real ones do: for each new batch/v1 Job it creates the Job's pod (labels `job-name`,
`controller-uid`, an ownerReference), sets the Job's `startTime` and `active`, runs the container, stores the
pod's log and terminated state (exit code), and ends the Job with the conditions the Job controller sets:
`Complete` (with `completionTime`, `succeeded: 1`) or `Failed` (`failed: 1`; reason `BackoffLimitExceeded`
after a failed pod with `backoffLimit: 0`, `DeadlineExceeded` past `activeDeadlineSeconds`). A finished Job
is deleted `ttlSecondsAfterFinished` later, its pod with it (owner garbage collection).

What it simulates, and how (the one place the sandbox is not a cluster):
- the image: only the rollbook image of this version (`[registry/]rollbook:<version>`) can run, as
  `python -m rollbook.cli` of this installation; any other image, or a command that is not `rollbook`,
  fails the Job with reason `SandboxUnknownImage` / `SandboxNotRollbook` and says why;
- volumes: a PVC is the folder `<state>/volumes/<namespace>/<claim>` (the claim must exist), a ConfigMap or
  Secret volume is written out as files, an emptyDir is a fresh folder; since a local process cannot see
  `/records`, every argument and env value under a mountPath is rewritten to that folder;
- the service-account token is minted for the pod's `serviceAccountName` (`token_for`) and written with
  the CA as `token` and `ca.crt`; `ROLLBOOK_SERVICEACCOUNT_DIR` points at it instead of the in-cluster path,
  `KUBERNETES_SERVICE_HOST`/`_PORT` at the sandbox API;
- the process environment is the container's `env` (values only; `valueFrom` fails the Job) plus what an
  image sets (PATH, ROLLBOOK_RUNBOOKS), nothing of the sandbox's own environment.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rollbook import __version__
from rollbook.sandbox.store import Store, StoreError, now_rfc3339

JSON = dict[str, Any]
_log = logging.getLogger(__name__)
TokenFor = Callable[[str, str], str]  # (namespace, service account) -> bearer token; raises StoreError if none
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
IMAGE = re.compile(r"^(?:[\w.-]+(?::\d+)?/)*rollbook:(?P<tag>[\w.-]+)(?:@sha256:[0-9a-f]{64})?$")


class _PodFailed(Exception):
    """The pod cannot start: (reason, message) for the Job's Failed condition."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason, self.message = reason, message
        super().__init__(message)


class JobRunner:
    """Runs each new Job once, in a thread of its own (bounded by the Job's activeDeadlineSeconds)."""

    def __init__(self, store: Store, *, kube_url: str, ca_pem: bytes, state_dir: Path, token_for: TokenFor,
                 runbooks: Path) -> None:
        self.store, self.kube_url, self.ca_pem = store, kube_url, ca_pem
        self.state_dir, self.token_for, self.runbooks = state_dir, token_for, runbooks
        self._stop = threading.Event()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.claim_dirs: dict[tuple[str, str], Path] = {}  # (namespace, claim) -> folder, else under state_dir
        store.add_listener(self._on_event)

    def volume_dir(self, namespace: str, claim: str) -> Path:
        """The local folder a PVC stands for."""
        return self.claim_dirs.get((namespace, claim)) or self.state_dir / "volumes" / namespace / claim

    def stop(self) -> None:
        """Kill running pods' processes; their Jobs end Failed."""
        self._stop.set()
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            proc.kill()
        for t in self.threads:
            t.join(timeout=10)

    def _on_event(self, event: str, plural: str, obj: JSON) -> None:
        if plural == "pods" and event == "DELETED":  # the kubelet stops a deleted pod's container (Job deleted)
            with self._lock:
                proc = self._procs.get(obj["metadata"]["name"])
            if proc is not None:
                _kill_group(proc)
            return
        if plural == "jobs" and event == "ADDED" and not self._stop.is_set() and not obj.get("status", {}).get(
                "startTime"):
            t = threading.Thread(target=self._run, args=(obj,), name=f"sandbox-job-{obj['metadata']['name']}",
                                 daemon=True)
            self.threads.append(t)
            t.start()

    # ------------------------------------------------------------------ one Job

    def _run(self, job: JSON) -> None:
        ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
        spec = job.get("spec") or {}
        deadline = spec.get("activeDeadlineSeconds")
        started = now_rfc3339()
        try:
            self.store.set_status("jobs", ns, name, {"startTime": started, "active": 1})
            pod = self._create_pod(job)
        except StoreError as e:  # the Job was deleted at once, or the pod could not be created
            _log.info("sandbox job %s/%s not run: %s", ns, name, e.message)
            return
        pod_name = pod["metadata"]["name"]
        code: int | None = None
        try:
            argv, env, cwd = self._prepare(job, pod)
            self._set_pod(ns, pod_name, "Running", None)
            code, timed_out = self._execute(ns, pod_name, argv, env, cwd, deadline)
            if timed_out:
                raise _PodFailed("DeadlineExceeded", "Job was active longer than specified deadline")
            if code != 0:
                raise _PodFailed("BackoffLimitExceeded", "Job has reached the specified backoff limit")
            self._set_pod(ns, pod_name, "Succeeded", 0)
            self._finish(ns, name, started, "Complete", "", "")
        except _PodFailed as e:
            self._set_pod(ns, pod_name, "Failed", code, e.reason if code is None else None, e.message)
            self._finish(ns, name, started, "Failed", e.reason, e.message)
        except StoreError as e:
            _log.info("sandbox job %s/%s: %s", ns, name, e.message)

    def _create_pod(self, job: JSON) -> JSON:
        ns, name, uid = job["metadata"]["namespace"], job["metadata"]["name"], job["metadata"]["uid"]
        template = (job.get("spec") or {}).get("template") or {}
        labels = {**((template.get("metadata") or {}).get("labels") or {}), "job-name": name,
                  "batch.kubernetes.io/job-name": name, "controller-uid": uid, "batch.kubernetes.io/controller-uid": uid}
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": f"{name}-{secrets.token_hex(3)[:5]}", "namespace": ns, "labels": labels,
                            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid,
                                                 "controller": True, "blockOwnerDeletion": True}]},
               "spec": {**(template.get("spec") or {}), "nodeName": "sandbox-node-1"},
               "status": {"phase": "Pending"}}
        return self.store.create("pods", ns, pod)

    def _prepare(self, job: JSON, pod: JSON) -> tuple[list[str], dict[str, str], Path]:
        """The process to start: argv, environment, working folder (raises _PodFailed)."""
        ns, pod_name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        spec = pod["spec"]
        (container,) = spec.get("containers") or [None]
        if container is None:
            raise _PodFailed("SandboxNotRollbook", "the sandbox runs pods of exactly one container")
        m = IMAGE.match(str(container.get("image", "")))
        if not m or m["tag"] != __version__:
            raise _PodFailed("SandboxUnknownImage",
                             f"image {container.get('image')!r} is not rollbook:{__version__}: the sandbox's simulated "
                             "kubelet runs only this rollbook, as a local process")
        command = [*(container.get("command") or []), *(container.get("args") or [])]
        if not command or command[0] != "rollbook":
            raise _PodFailed("SandboxNotRollbook", f"command {command[:2]} is not rollbook: the sandbox runs only "
                                                   "`rollbook ...` commands")
        root = self.state_dir / "pods" / ns / pod_name
        mounts = self._volumes(ns, spec, container, root)
        env: dict[str, str] = {}
        for item in container.get("env") or []:
            if "valueFrom" in item:
                raise _PodFailed("SandboxUnsupported", f"env {item['name']}: valueFrom is not simulated; use value")
            env[item["name"]] = _expand(str(item.get("value", "")), env)
        sa_dir = root / "serviceaccount"
        sa_dir.mkdir(parents=True, exist_ok=True)
        sa = spec.get("serviceAccountName") or "default"
        try:
            token = self.token_for(ns, sa)
        except StoreError as e:
            raise _PodFailed("SandboxNoServiceAccount", f"serviceaccount {ns}/{sa}: {e.message}") from e
        (sa_dir / "token").write_text(token, encoding="utf-8")
        (sa_dir / "ca.crt").write_bytes(self.ca_pem)
        (sa_dir / "namespace").write_text(ns, encoding="utf-8")
        url = urlsplit(self.kube_url)
        image_env = {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
                     "ROLLBOOK_RUNBOOKS": str(self.runbooks), "LANG": "C.UTF-8"}
        env = {**image_env, **{k: _remap(v, mounts) for k, v in env.items()},
               "KUBERNETES_SERVICE_HOST": url.hostname or "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(url.port),
               "ROLLBOOK_SERVICEACCOUNT_DIR": str(sa_dir)}
        argv = [sys.executable, "-m", "rollbook.cli", *(_remap(_expand(a, env), mounts) for a in command[1:])]
        return argv, env, Path(mounts.get("/tmp", str(root)))

    def _volumes(self, ns: str, spec: JSON, container: JSON, root: Path) -> dict[str, str]:
        """{mountPath: local folder} of the container's volume mounts."""
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        out: dict[str, str] = {}
        for mount in container.get("volumeMounts") or []:
            vol = volumes.get(mount["name"])
            if vol is None:
                raise _PodFailed("SandboxUnsupported", f"volumeMount {mount['name']} has no volume")
            if "persistentVolumeClaim" in vol:
                claim = vol["persistentVolumeClaim"]["claimName"]
                try:
                    self.store.get("persistentvolumeclaims", ns, claim)
                except StoreError as e:
                    raise _PodFailed("SandboxNoVolume", f'persistentvolumeclaim "{claim}" not found') from e
                folder = self.volume_dir(ns, claim)
            else:
                folder = root / "volumes" / mount["name"]
                self._fill(ns, vol, folder)
            folder.mkdir(parents=True, exist_ok=True)
            out[mount["mountPath"].rstrip("/")] = str(folder)
        return out

    def _fill(self, ns: str, vol: JSON, folder: Path) -> None:
        """Write a ConfigMap's or Secret's keys as files (an optional missing source: an empty folder)."""
        folder.mkdir(parents=True, exist_ok=True)
        for plural, key, ref in (("configmaps", "configMap", "name"), ("secrets", "secret", "secretName")):
            if key not in vol:
                continue
            source = vol[key]
            try:
                obj = self.store.get(plural, ns, source[ref])
            except StoreError as e:
                if source.get("optional"):
                    return
                raise _PodFailed("SandboxNoVolume", f'{plural[:-1]} "{source[ref]}" not found') from e
            for name, value in (obj.get("data") or {}).items():
                data = base64.b64decode(value) if plural == "secrets" else str(value).encode()
                (folder / name).write_bytes(data)
            for name, value in (obj.get("stringData") or {}).items():
                (folder / name).write_text(str(value), encoding="utf-8")

    def _execute(self, ns: str, pod: str, argv: list[str], env: dict[str, str], cwd: Path,
                 deadline: int | None) -> tuple[int | None, bool]:
        """Run the process to its end or the deadline; its output becomes the pod's log."""
        log_path = cwd / f".{pod}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            with self._lock:
                self._procs[pod] = proc
            try:
                code: int | None = proc.wait(timeout=deadline)
                timed_out = False
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                code, timed_out = None, True
            finally:
                with self._lock:
                    self._procs.pop(pod, None)
        self.store.set_pod_log(ns, pod, log_path.read_text(encoding="utf-8", errors="replace"))
        return code, timed_out

    def _set_pod(self, ns: str, pod: str, phase: str, code: int | None, waiting: str | None = None,
                 message: str = "") -> None:
        now = now_rfc3339()
        if phase == "Running":
            state: JSON = {"running": {"startedAt": now}}
        elif waiting:
            state = {"waiting": {"reason": waiting, "message": message}}
        else:
            state = {"terminated": {"exitCode": code if code is not None else 137,
                                    "reason": "Completed" if code == 0 else "Error", "finishedAt": now}}
        status = {"phase": phase, "startTime": now, "containerStatuses": [
            {"name": "rollbook", "ready": phase == "Running", "restartCount": 0, "state": state,
             "image": f"rollbook:{__version__}", "imageID": f"sandbox://rollbook:{__version__}"}]}
        try:
            self.store.set_status("pods", ns, pod, status)
        except StoreError:
            pass  # deleted meanwhile

    def _finish(self, ns: str, name: str, started: str, kind: str, reason: str, message: str) -> None:
        now = now_rfc3339()
        cond = {"type": kind, "status": "True", "lastProbeTime": now, "lastTransitionTime": now}
        if reason:
            cond |= {"reason": reason, "message": message}
        status: JSON = {"startTime": started, "conditions": [cond], "active": 0}
        status |= {"succeeded": 1, "completionTime": now} if kind == "Complete" else {"failed": 1}
        try:
            job = self.store.set_status("jobs", ns, name, status)
        except StoreError:
            return
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is not None:
            timer = threading.Timer(float(ttl), self._expire, args=(ns, name))
            timer.daemon = True
            timer.start()

    def _expire(self, ns: str, name: str) -> None:
        """ttlSecondsAfterFinished: the Job goes, its pod with it (ownerReferences)."""
        if self._stop.is_set():
            return
        try:
            self.store.delete("jobs", ns, name)
        except StoreError:
            pass


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` references in command, args and env values."""
    return VAR_REF.sub(lambda m: env.get(m[1], m[0]), text)


def _remap(value: str, mounts: dict[str, str]) -> str:
    """A path under a mountPath, on this machine (the simulation's one rewrite)."""
    for mount, folder in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
        if value == mount or value.startswith(mount + "/"):
            return folder + value[len(mount):]
    return value


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the pod's process and its kernels (its own session)."""
    try:
        os.killpg(proc.pid, 9)
    except OSError:
        proc.kill()
    proc.wait(timeout=10)
