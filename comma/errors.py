"""Errors for bad input, always naming the file (and line or key) and the cause."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Input data that cannot be used: names the file, the line if any, and the cause."""

    def __init__(self, path: str | Path, message: str, line: int | None = None):
        self.path = Path(path)
        self.line = line
        self.reason = message
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")
