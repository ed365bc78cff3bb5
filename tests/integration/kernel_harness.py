"""Helpers for tests that drive a rollbook kernel (`rollbook.runner.kernels._Kernel`) directly."""

from __future__ import annotations

from jupyter_core.utils import run_sync

from rollbook.runner.kernels import _Kernel

BOUND = 30.0  # seconds any one request to a kernel may take


def pid(kernel: _Kernel) -> int:
    """The kernel's process id (spawned or forked)."""
    return int(kernel.km.provisioner.process.pid)  # type: ignore[union-attr]


def ask(kernel: _Kernel, code: str) -> str:
    """The text a kernel prints for `code`."""
    kc = kernel.km.client()
    kc.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=False)  # as the runner's warm-up
    out: list[str] = []
    try:
        run_sync(kc.wait_for_ready)(timeout=BOUND)
        run_sync(kc.execute_interactive)(code, timeout=BOUND, output_hook=lambda m: out.append(
            m["content"].get("text", "")) if m["msg_type"] == "stream" else None)
    finally:
        kc.stop_channels()
        kernel.km.clients.remove(kc)
    return "".join(out)
