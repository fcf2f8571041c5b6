"""What the speech corpora's readers share: one utterance, a UTF-8 line reader that names the
bad line, and an early check of a listed WAV file."""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path

import soundfile

from comma.errors import InputError

__all__ = ["Utterance", "read_utf8_lines", "check_wav"]


@dataclass(frozen=True)
class Utterance:
    """One recording of a corpus: its id, normalized transcript, WAV file and speaker if known."""

    id: str
    text: str
    wav_path: Path
    speaker: str | None


def read_utf8_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file (without line ends); InputError naming the first line
    that is not valid UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    raw = path.read_bytes().removeprefix(codecs.BOM_UTF8)  # a BOM is not part of line 1
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise InputError(
            path, f"not valid UTF-8 ({err.reason} at byte {err.start})", line
        ) from None
    # Split on "\n" only: str.splitlines would also break at form feeds and U+2028 and so
    # shift line numbers away from what an editor shows.
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def check_wav(path: Path, listed_in: str) -> None:
    """Fail early, naming the WAV file, if it is missing or its header is unreadable;
    `listed_in` says where the corpus refers to it."""
    if not path.is_file():
        raise InputError(path, f"audio file not found (listed in {listed_in})")
    try:
        soundfile.info(path)
    except soundfile.SoundFileError as err:
        raise InputError(path, f"unreadable audio file (listed in {listed_in}): {err}") from None
