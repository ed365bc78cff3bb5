"""Kernels: IPC transport, pinned to this interpreter, a quick readiness check, started ahead of their step
and killable from another thread (the wall-clock bound)."""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from queue import Empty
from typing import Any

from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync

import rollbook.runner.forkserver as forkserver

READY_POLL = 0.2  # seconds to wait for an IOPub message that proves the subscription is live


class QuickReadyClient(AsyncKernelClient):
    """A kernel client whose wait_for_ready does not idle 0.2 s for IOPub to fall silent.

    jupyter_client's wait_for_ready ends by reading IOPub until nothing arrives for 0.2 s; nbclient
    calls it once per step, on the critical path. Messages left on IOPub are harmless there (nbclient
    reads only replies to its own requests), so we keep the checks that matter: a kernel_info reply
    on shell and one message on IOPub (the subscription is connected), within the same bound.
    """

    async def _ready_once(self) -> bool:
        """One kernel_info round trip; True when shell answered and IOPub delivered a message."""
        self.kernel_info()
        try:
            msg = await self.shell_channel.get_msg(timeout=1)
        except Empty:
            return False
        if msg["msg_type"] != "kernel_info_reply":
            return False
        try:
            await self.iopub_channel.get_msg(timeout=READY_POLL)
        except Empty:
            return False  # IOPub not connected yet: ask again (as jupyter_client does)
        self._handle_kernel_info_reply(msg)
        return True

    async def wait_for_ready(self, timeout: float | None = None) -> None:
        """Return once the kernel answers kernel_info and IOPub is connected; bounded by `timeout`."""
        deadline = time.monotonic() + (60.0 if timeout is None else timeout)
        while not await self._ready_once():
            if not await self._async_is_alive():
                raise RuntimeError("Kernel died before replying to kernel_info")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kernel didn't respond in {timeout} seconds")


class IPCKernelManager(AsyncKernelManager):
    """A kernel on unix sockets (no TCP port races) running this interpreter's ipykernel."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(transport="ipc", kernel_name="python3", **kwargs)
        self.client_factory = QuickReadyClient
        self.clients: list[Any] = []

    @property
    def kernel_spec(self) -> KernelSpec:
        # Pinned to sys.executable: a missing or foreign `python3` kernelspec must not pick another
        # interpreter that lacks rollbook.
        return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                          display_name="Python 3 (ipykernel)", language="python", name="python3")

    def client(self, **kwargs: Any) -> Any:
        """Remember clients nbclient makes, so we can close them: it only does when it owns us."""
        kc = super().client(**kwargs)
        self.clients.append(kc)
        return kc


class _Kernel:
    """A kernel started ahead of its step, killable from another thread (the wall-clock timer)."""

    def __init__(self, workdir: Path, env: Mapping[str, str], cwd: Path | None = None,
                 imports: str = forkserver.STEPS_IMPORTS) -> None:
        """`imports`: what the fork server this kernel is forked from imported (the run's warm-up union)."""
        conn = workdir / f"k-{uuid.uuid4().hex[:8]}.json"
        self.km = IPCKernelManager(connection_file=str(conn))
        server = forkserver.shared(env, imports)
        if server is not None:  # forked from a process that imported everything already (forkserver.py)
            self.km.kernel_id = str(uuid.uuid4())
            self.km.provisioner = forkserver.ForkProvisioner(server, kernel_id=self.km.kernel_id,
                                                             kernel_spec=self.km.kernel_spec, parent=self.km)
        self.killed = False
        self.on_stop: Callable[[], None] | None = None  # a pool's bookkeeping: this kernel is gone
        self.before_stop: Callable[[], None] | None = None  # an attempt's accounting: its CPU, while it runs
        run_sync(self.km.start_kernel)(env=dict(env), cwd=str(cwd or workdir))

    def warm_up(self, code: str, timeout: float) -> None:
        """Run `code` (imports only) while the kernel waits for its step: the step then starts warm.

        Only the module cache is affected; a failure here is ignored, the step will meet it itself."""
        if not code:
            return
        kc = self.km.client()
        # shell and IOPub only: no heartbeat thread (liveness is the manager's, it owns the kernel). Such a
        # thread, creating its socket as the kernel was being stopped, twice in ~10 suite runs raised
        # ZMQError "Too many open files" (a warning, the steps passed); not started, it cannot.
        kc.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=False)
        try:
            run_sync(kc.wait_for_ready)(timeout=timeout)
            run_sync(kc.execute_interactive)(code, timeout=timeout, store_history=False, allow_stdin=False,
                                             output_hook=lambda msg: None)
        except Exception:  # noqa: BLE001 - a warm-up is an optimisation, never a verdict
            pass
        finally:
            kc.stop_channels()
            self.km.clients.remove(kc)

    def kill(self) -> None:
        """SIGKILL the kernel process; nbclient notices within a second and raises DeadKernelError."""
        self.killed = True
        process = getattr(self.km.provisioner, "process", None)
        if process is not None:
            process.kill()

    def stop(self) -> None:
        """Close clients and stop the kernel immediately (the graceful path can stall ~3 s)."""
        if self.before_stop is not None:
            self.before_stop()
        for kc in self.km.clients:
            kc.stop_channels()
        try:
            if self.km.has_kernel:
                run_sync(self.km.shutdown_kernel)(now=True)
        except RuntimeError:  # already dead: nothing left to stop
            run_sync(self.km.cleanup_resources)()
        finally:
            if self.on_stop is not None:
                self.on_stop()


def _kernel_env(workdir: Path) -> dict[str, str]:
    """The kernels' environment: ours, with IPython/Jupyter/tmp state kept inside this run."""
    for sub in ("ipython", "runtime", "tmp"):
        (workdir / sub).mkdir(exist_ok=True)
    return {**os.environ, "IPYTHONDIR": str(workdir / "ipython"),
            "JUPYTER_RUNTIME_DIR": str(workdir / "runtime"), "TMPDIR": str(workdir / "tmp"),
            "PYDEVD_DISABLE_FILE_VALIDATION": "1"}  # silences debugpy's frozen-modules warning
