"""Scrubbing known secrets out of a record: raw, JSON-escaped and HTML-escaped forms, in text and files."""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from pathlib import Path

from rollbook import atomic

REDACTED = "[REDACTED]"
# Secrets shorter than this are not scrubbed: replacing a 2-letter string would mangle every file.
MIN_SECRET_LEN = 6



class Redactor:
    """Replaces known secret values (raw, JSON-escaped and HTML-escaped forms) in text and files."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for s in secrets:
            s = s.strip()
            if len(s) < MIN_SECRET_LEN:
                continue
            forms |= {s, json.dumps(s)[1:-1], html.escape(s), json.dumps(html.escape(s))[1:-1]}
        # longest first, so a secret that contains another is replaced whole
        self._forms = sorted(forms, key=len, reverse=True)

    def __repr__(self) -> str:
        return f"Redactor(<{len(self._forms)} forms>)"

    @property
    def forms(self) -> tuple[str, ...]:
        """Every form of every secret it replaces (raw, JSON- and HTML-escaped), longest first."""
        return tuple(self._forms)

    def found_in(self, data: bytes) -> bool:
        """True if any form of a known secret occurs in `data`."""
        return any(form.encode("utf-8") in data for form in self._forms)

    def scrub(self, text: str) -> str:
        """Text with every known secret replaced by [REDACTED]."""
        for form in self._forms:
            text = text.replace(form, REDACTED)
        return text

    def scrub_file(self, path: Path) -> bool:
        """Scrub one file in place; True if it changed. Binary files are scrubbed byte-wise."""
        data = path.read_bytes()
        new = data
        for form in self._forms:
            new = new.replace(form.encode("utf-8"), REDACTED.encode("utf-8"))
        if new != data:
            atomic.write_bytes(path, new)
        return new != data

    def scrub_tree(self, root: Path) -> list[Path]:
        """Scrub every file under root; the files that held a secret."""
        if not self._forms:
            return []
        return [p for p in sorted(Path(root).rglob("*"))
                if p.is_file() and not atomic.is_temp(p.name) and self.scrub_file(p)]
