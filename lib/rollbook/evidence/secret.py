"""The MC token: a :class:`Secret` whose repr is masked, and where the library finds it (env or file)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rollbook.errors import ConfigError


class Secret:
    """A credential whose repr and str are masked; `reveal()` is the only way to the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret value, for building the Authorization header and nothing else."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> Any:  # pickling would carry the value into files and kernels
        raise TypeError("a Secret cannot be pickled")



def _token_from_env() -> Secret:
    """The MC token from ROLLBOOK_MC_TOKEN, else the file named by ROLLBOOK_MC_TOKEN_FILE."""
    value = os.environ.get("ROLLBOOK_MC_TOKEN", "").strip()
    if value:
        return Secret(value)
    file = os.environ.get("ROLLBOOK_MC_TOKEN_FILE", "").strip()
    if not file:
        raise ConfigError("No MC token: neither ROLLBOOK_MC_TOKEN nor ROLLBOOK_MC_TOKEN_FILE is set.",
                          hint="Export one of them (the sandbox's env.sh sets ROLLBOOK_MC_TOKEN_FILE).")
    path = Path(file).expanduser()
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ConfigError(f"ROLLBOOK_MC_TOKEN_FILE points at {path}, which cannot be read ({e.strerror}).",
                          hint="Fix the path or export ROLLBOOK_MC_TOKEN instead.") from None
    if not value:
        raise ConfigError(f"ROLLBOOK_MC_TOKEN_FILE points at {path}, which is empty.",
                          hint="Write the MC token into it or export ROLLBOOK_MC_TOKEN instead.")
    return Secret(value)
