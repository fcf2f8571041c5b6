"""What the speech corpora's readers share: one utterance and an early check of a listed WAV
file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import soundfile

from comma.errors import InputError

__all__ = ["Utterance", "check_wav"]


@dataclass(frozen=True)
class Utterance:
    """One recording of a corpus: its id, normalized transcript, WAV file and speaker if known."""

    id: str
    text: str
    wav_path: Path
    speaker: str | None


def check_wav(path: Path, listed_in: str) -> None:
    """Fail early, naming the WAV file, if it is missing or its header is unreadable;
    `listed_in` says where the corpus refers to it."""
    if not path.is_file():
        raise InputError(path, f"audio file not found (listed in {listed_in})")
    try:
        soundfile.info(path)
    except soundfile.SoundFileError as err:
        raise InputError(path, f"unreadable audio file (listed in {listed_in}): {err}") from None
