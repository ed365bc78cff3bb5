"""Kernels forked from a process that imported everything once (issue 8's CPU cost, issue 7's suite time).

A step kernel used to cost ~1.8 CPU-seconds before its first cell: a new interpreter, ipykernel and
IPython imported, then `rollbook.steps` and matplotlib (measured: boot 0.4 s, imports 1.4 s); one
kernel per step is the rule, so a six-step run paid it six times. The fork server is one interpreter
that imports ipykernel, IPython and the steps' modules once and then, per kernel, forks: the child
starts an `IPKernelApp` on the connection file jupyter_client wrote, in a session of its own, with the
requesting run's environment and working folder. Each step still gets a kernel of its own that no
other step has touched (a fork of a parent that never runs a step), only the imports are shared,
copy-on-write.

Written here because nothing packaged does it: multiprocessing's "forkserver" start method forks
workers for `multiprocessing`, not kernels jupyter_client can manage, and jupyter_client's provisioners
only launch commands. `ForkProvisioner` is a jupyter_client `LocalProvisioner` whose launch asks the
server instead of `Popen`; `ForkedProcess` gives the manager the Popen calls it makes (poll, wait,
signals) for a process that is its grandchild.

Fork safety: the server forks from its only thread (it checks that importing started none) and the
child replaces environment, folder, signal handlers and standard input before ipykernel starts;
`tempfile`'s cached folder is cleared so TMPDIR is the run's. The server reaps its kernels, so their
CPU reaches its children's times and, when it exits, its caller's. It exits (killing what is left)
when its caller closes the socket or dies; the kernels exit when the server does (ipykernel's parent
poller, JPY_PARENT_PID). `ROLLBOOK_KERNELS=spawn` turns the server off: each kernel is a new
interpreter again.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

import psutil
from jupyter_client.provisioning.local_provisioner import LocalProvisioner

# What the server imports: the kernel itself, then the warm-up of the steps its caller runs (the union of
# their notebooks' rollbook.warmup; STEPS_IMPORTS when the caller does not say: all the built-in steps').
# A run without step 2 never imports matplotlib (~0.7 CPU-s and ~40 MiB per server).
# ipykernel.debugger (debugpy, pydevd) is imported by every kernel as it starts (IPythonKernel.__init__):
# 0.05 of a forked kernel's 0.13 CPU-s before its first cell, measured; it starts no thread on import.
KERNEL_IMPORTS = ("import ipykernel.kernelapp, ipykernel.ipkernel, ipykernel.debugger, "
                  "IPython.core.interactiveshell")
STEPS_IMPORTS = "import rollbook.steps, matplotlib.figure, matplotlib.backends.backend_agg"
# Variables that change what an interpreter imports: kernels started under other values get another server.
IMPORT_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONNOUSERSITE", "PYTHONSAFEPATH", "PYTHONSTARTUP", "VIRTUAL_ENV")
START_TIMEOUT = 60.0  # seconds for the server to import everything and say it is ready
FORK_TIMEOUT = 10.0  # seconds for one fork's answer


class ForkServerError(RuntimeError):
    """The fork server could not start or stopped answering."""


def enabled(env: Mapping[str, str] | None = None) -> bool:
    """Fork kernels unless ROLLBOOK_KERNELS=spawn (or on a platform without fork)."""
    return hasattr(os, "fork") and (env if env is not None else os.environ).get("ROLLBOOK_KERNELS", "fork") != "spawn"


# --------------------------------------------------------------------------- the caller's side


class ForkServer:
    """A client of one fork server process; thread-safe (one request at a time, each takes milliseconds)."""

    def __init__(self, env: Mapping[str, str], warmup: str = "") -> None:
        ours, theirs = socket.socketpair()
        self._lock = threading.Lock()
        self._sock = ours
        self._file = ours.makefile("rwb")
        # run as a file, not `-m rollbook.runner.forkserver`: the package's __init__ imports papermill and
        # the runner, which no kernel needs
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import runpy, sys; del sys.path[0]; runpy.run_path(sys.argv[1], run_name='__main__')",
             __file__, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), env=dict(env), stdin=subprocess.DEVNULL)
        theirs.close()
        ours.settimeout(START_TIMEOUT)
        try:
            self._send({"warmup": warmup})
            ready = self._receive()
        except (OSError, ValueError, ForkServerError) as e:
            self.close()
            raise ForkServerError(f"the kernel fork server did not start: {type(e).__name__}: {e}") from e
        if "error" in ready:
            self.close()
            raise ForkServerError(f"the kernel fork server did not start: {ready['error']}")
        ours.settimeout(FORK_TIMEOUT)

    def _send(self, msg: dict[str, Any]) -> None:
        self._file.write(json.dumps(msg).encode() + b"\n")
        self._file.flush()

    def _receive(self) -> dict[str, Any]:
        line = self._file.readline()
        if not line:
            raise ForkServerError(f"the kernel fork server (pid {self.proc.pid}) exited")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def fork(self, connection_file: str, env: Mapping[str, str], cwd: str) -> int:
        """Start a kernel on `connection_file`; its pid (a child of the server)."""
        with self._lock:
            try:
                self._send({"connection_file": connection_file, "env": dict(env), "cwd": cwd})
                answer = self._receive()
            except (OSError, ValueError) as e:
                raise ForkServerError(f"the kernel fork server (pid {self.proc.pid}) did not answer: {e}") from e
        if "error" in answer:
            raise ForkServerError(f"the kernel fork server could not start a kernel: {answer['error']}")
        return int(answer["pid"])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self, timeout: float = 10.0) -> None:
        """Stop the server (it kills and reaps the kernels left) and reap it, so their CPU is accounted."""
        for closing in (self._file, self._sock):
            try:
                closing.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)


_servers: dict[tuple[str, ...], ForkServer | ForkServerError] = {}
_servers_lock = threading.Lock()


def shared(env: Mapping[str, str], warmup: str = STEPS_IMPORTS) -> ForkServer | None:
    """This process's fork server for interpreters configured like `env` that imported `warmup`, started on
    first use; None when forking is off or the server could not start (then kernels are spawned: one
    warning, no retry loop). A process running runs of different steps has one server per warm-up."""
    if not enabled(env):
        return None
    key = (sys.executable, *(env.get(k, "") for k in IMPORT_ENV), warmup)
    with _servers_lock:
        server = _servers.get(key)
        if isinstance(server, ForkServerError):
            return None
        if server is None or not server.alive():
            try:
                server = _servers[key] = ForkServer(env, warmup)
            except ForkServerError as e:
                _servers[key] = e
                print(f"rollbook: {e}; starting each kernel as a new interpreter instead "
                      "(slower, same results)", file=sys.stderr)
                return None
        return server


@atexit.register
def shutdown() -> None:
    """Stop every fork server this process started (and reap them: their kernels' CPU is then ours)."""
    with _servers_lock:
        servers = list(_servers.values())
        _servers.clear()
    for server in servers:
        if isinstance(server, ForkServer):
            server.close()


class ForkedProcess:
    """The Popen calls jupyter_client makes, for a kernel the fork server started (our grandchild)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.stdin = self.stdout = self.stderr = None
        try:
            self._created: float | None = psutil.Process(pid).create_time()
        except psutil.Error:
            self._created = None

    def poll(self) -> int | None:
        if self.returncode is None and not self._running():
            self.returncode = 0  # its exit status went to the server that reaped it
        return self.returncode

    def _running(self) -> bool:
        try:
            p = psutil.Process(self.pid)
            return bool(p.create_time() == self._created and p.status() != psutil.STATUS_ZOMBIE)
        except psutil.Error:
            return False

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"kernel pid {self.pid}", timeout or 0)
            time.sleep(0.02)
        return self.returncode or 0

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class ForkProvisioner(LocalProvisioner):
    """LocalProvisioner whose kernel is forked by a ForkServer instead of launched with Popen."""

    def __init__(self, server: ForkServer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.server = server

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        km = self.parent
        assert km is not None, "a ForkProvisioner belongs to a kernel manager"
        env = dict(kwargs.get("env") or os.environ)
        cwd = str(kwargs.get("cwd") or os.getcwd())
        try:
            pid = self.server.fork(km.connection_file, env, cwd)
        except ForkServerError as e:  # the server died (OOM, a stray kill): this kernel is spawned instead
            print(f"rollbook: {e}; starting this kernel as a new interpreter", file=sys.stderr)
            return await super().launch_kernel(cmd, **kwargs)
        self.process = ForkedProcess(pid)  # type: ignore[assignment]  # the Popen calls the manager makes
        self.pid, self.pgid, self.cwd = pid, pid, cwd  # the kernel leads a session of its own, as when spawned
        return self.connection_info


# --------------------------------------------------------------------------- the server's side


def _serve(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    stream = sock.makefile("rwb")
    caller = os.getppid()

    def answer(msg: dict[str, Any]) -> None:
        stream.write(json.dumps(msg).encode() + b"\n")
        stream.flush()

    first = stream.readline()
    if not first:
        return
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")  # as ipykernel sets it
    try:
        exec(compile(KERNEL_IMPORTS + "\n" + json.loads(first).get("warmup", ""), "<rollbook warm-up>", "exec"), {})
    except Exception as e:  # noqa: BLE001 - reported to the caller, who falls back to spawning
        answer({"error": f"the warm-up imports failed: {type(e).__name__}: {e}"})
        return
    if threading.active_count() != 1:
        answer({"error": f"importing started {threading.active_count() - 1} thread(s): forking is not safe"})
        return
    import gc

    from setproctitle import setproctitle
    setproctitle(f"{sys.executable} rollbook kernel fork server (for pid {caller})")
    gc.freeze()  # the imported objects stay out of the children's collections: fewer copied pages
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the select below to reap promptly
    answer({"ready": os.getpid()})
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    children: set[int] = set()
    try:
        while os.getppid() == caller:
            events = selector.select(timeout=1.0)
            if any(key.fd == wake_r for key, _ in events):
                os.read(wake_r, 512)
            _reap(children)
            if not any(key.fileobj is sock for key, _ in events):
                continue
            line = stream.readline()
            if not line:
                break  # the caller closed: stop
            request = json.loads(line)
            try:
                pid = os.fork()
            except OSError as e:
                answer({"error": f"fork failed: {e}"})
                continue
            if pid == 0:
                for closing in (wake_r, wake_w):
                    os.close(closing)
                sock.close()
                _kernel(request, server=os.getppid())
            children.add(pid)
            answer({"pid": pid})
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def _reap(children: set[int]) -> None:
    """Collect the kernels that exited (their CPU then counts in this process's children's times)."""
    for pid in list(children):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            children.discard(pid)


def _kernel(request: dict[str, Any], server: int) -> None:
    """In the forked child: become the kernel jupyter_client asked for; never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.setsid()  # a session of its own, as jupyter_client's launcher gives a spawned kernel
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        server_cwd = os.getcwd()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ["JPY_PARENT_PID"] = str(server)  # the kernel exits when the server does
        import tempfile
        tempfile.tempdir = None  # TMPDIR is the run's now
        if sys.path and sys.path[0] in ("", server_cwd):
            del sys.path[0]  # as ipykernel_launcher does; the kernel adds the folder back itself
        from ipykernel import kernelapp
        from setproctitle import setproctitle

        # what ps shows for a kernel, as for a spawned one (tools look for ipykernel_launcher), and whose fork it is
        setproctitle(f"{sys.executable} -m ipykernel_launcher -f {request['connection_file']} "
                     f"(forked by rollbook's kernel fork server {server})")

        # parent_handle's default read JPY_PARENT_PID when the server imported ipykernel: say it here
        kernelapp.launch_new_instance(argv=["-f", request["connection_file"], f"--IPKernelApp.parent_handle={server}"])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - a child must never return into the server's loop
        import traceback
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - exiting anyway
                pass
        os._exit(code)


if __name__ == "__main__":
    _serve(int(sys.argv[-1]))
