"""Atomic file writes: a temp file in the same folder, fsync, os.replace, fsync of the folder.

A reader (another step, `rollbook verify`, a ticket upload) sees the old file or the new one, never half
of one, and a SIGKILL or power cut between two writes leaves the last complete version on disk (a
non-durable write, see open_atomic, survives a SIGKILL only, until `sync`).
Hand-written: the standard library has the pieces (os.replace, os.fsync) but no function joining them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _fsync(path: str | Path) -> None:
    """fsync a file or a folder by its path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a no-op where folders cannot be opened or synced, e.g. Windows)."""
    with contextlib.suppress(OSError):
        _fsync(folder)


@contextlib.contextmanager
def open_atomic(path: str | Path, durable: bool = True) -> Iterator[IO[bytes]]:
    """A binary file handle whose content replaces `path` only when the block ends without an error.

    `durable=False` skips both fsyncs: still atomic for every reader and across a crash of the writer
    (the page cache outlives the process), not across a power cut. For a file rewritten many times a
    second whose last version is made durable with `sync()` (papermill's save after every cell)."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a record file is as readable as one written plainly
        os.replace(tmp, target)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if e.filename is None:  # a failed write(2) names no file: say which one (a full disk, mid-run)
            raise OSError(e.errno, e.strerror, str(target)) from e
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_dir(target.parent)


def write_bytes(path: str | Path, data: bytes, durable: bool = True) -> Path:
    """Replace `path` with `data`, atomically."""
    with open_atomic(path, durable) as fh:
        fh.write(data)
    return Path(path)


def write_text(path: str | Path, text: str, encoding: str = "utf-8", durable: bool = True) -> Path:
    """Replace `path` with `text`, atomically."""
    return write_bytes(path, text.encode(encoding), durable)


def sync(path: str | Path) -> None:
    """Make the current content of `path` and its name durable (after non-durable writes); no-op if absent."""
    try:
        _fsync(path)
    except FileNotFoundError:
        return
    _fsync_dir(Path(path).parent)


def is_temp(name: str) -> bool:
    """A leftover of an interrupted atomic write (`.<name>.<random>.tmp`): never part of a record."""
    return name.startswith(".") and name.endswith(".tmp")
