"""Sealing a record folder: bundle.zip (with its own manifest inside) and manifest.json (sha256 of all).

The bundle travels alone (a ticket attachment), so it carries `manifest.json` of the files it holds;
the folder's manifest.json hashes every file, the bundle included. Both are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

from rollbook import atomic

SCHEMA = 1
SEALED = ("bundle.zip", "manifest.json")


def record_files(run_dir: Path) -> list[Path]:
    """Every file of the record except the bundle, the manifest and leftover temp files, sorted."""
    return sorted(p for p in Path(run_dir).rglob("*")
                  if p.is_file() and p.relative_to(run_dir).as_posix() not in SEALED and not atomic.is_temp(p.name))


def sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest(files: dict[str, str]) -> str:
    return json.dumps({"schema": SCHEMA, "algorithm": "sha256", "files": files}, indent=2) + "\n"


def write_bundle(run_dir: Path) -> Path:
    """bundle.zip: every record file plus a manifest.json of exactly those files."""
    run_dir = Path(run_dir)
    files = record_files(run_dir)
    path = run_dir / "bundle.zip"
    with atomic.open_atomic(path) as fh, zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            zf.write(f, f.relative_to(run_dir).as_posix())
        zf.writestr("manifest.json", _manifest({f.relative_to(run_dir).as_posix(): sha256(f) for f in files}))
    return path


def write_manifest(run_dir: Path) -> Path:
    """manifest.json: sha256 of every file in the record, the bundle included."""
    run_dir = Path(run_dir)
    files = [*record_files(run_dir), run_dir / "bundle.zip"]
    digests = {f.relative_to(run_dir).as_posix(): sha256(f) for f in files if f.exists()}
    return atomic.write_text(run_dir / "manifest.json", _manifest(digests))


def verify_manifest(run_dir: Path) -> list[str]:
    """Files whose content no longer matches manifest.json, or that are missing or unlisted."""
    run_dir = Path(run_dir)
    listed: dict[str, str] = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))["files"]
    bad = [name for name, digest in listed.items()
           if not (run_dir / name).is_file() or sha256(run_dir / name) != digest]
    present = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*")
               if p.is_file() and not atomic.is_temp(p.name)}
    return sorted(bad + [n for n in present - set(listed) if n != "manifest.json"])
