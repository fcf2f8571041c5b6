"""Reading a text file of a dataset line by line: UTF-8 (a byte-order mark is dropped), split on
"\\n" only, with errors that name the file, line and column."""

from __future__ import annotations

import codecs
from pathlib import Path

from comma.errors import InputError

__all__ = ["read_lines"]


def read_lines(path: str | Path) -> list[str]:
    """Lines of a UTF-8 text file, split on '\\n' only (like grep/sed), '\\r' and '\\n' removed;
    CR-only line endings and bytes that are not UTF-8 raise InputError naming the file.

    str.splitlines would also split at U+2028, U+0085 and the like, which occur in TED
    transcripts and would break the line parallelism of the two training files."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)  # a BOM is not part of line 1
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise InputError(
            path,
            f"not UTF-8: byte 0x{data[err.start]:02x} at column {column} ({err.reason})",
            line,
        ) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line.removesuffix("\r") for line in lines]
    lone_cr = sum(line.count("\r") for line in lines)
    if lone_cr and lone_cr >= len(lines):
        raise InputError(
            path,
            f"has CR-only line endings ({lone_cr} carriage returns in {len(lines)} line(s)): "
            "convert them to LF, e.g. tr '\\r' '\\n'",
        )
    return lines
