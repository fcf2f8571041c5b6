"""Reader of the LJSpeech-1.1 layout (Ito & Johnson 2017), as the real archive unpacks it.

    LJSpeech-1.1/metadata.csv   one line per clip: `ID|transcription|normalized transcription`
    LJSpeech-1.1/wavs/ID.wav    22,050 Hz mono 16-bit PCM

metadata.csv is UTF-8 with "|" as the only separator and no quoting: transcripts contain
unbalanced double quotes (`the "lower-case" being ...`), so it must never go through a CSV
parser with quote handling. We keep the normalized transcription (numbers and abbreviations
spelled out), the one TTS front ends phonemize. Utterances come in metadata.csv order.
"""

from __future__ import annotations

from pathlib import Path

from comma.data.lines import read_lines
from comma.data.utterances import Utterance, check_wav
from comma.errors import InputError

METADATA = "metadata.csv"
FIELDS = 3
SAMPLE_RATE = 22050  # of the real corpus, which extract_corpus_mels expects


def read_ljspeech(root: str | Path) -> list[Utterance]:
    """The clips of an LJSpeech-1.1 folder, checked: three fields per line, unique non-empty
    ids, a non-empty normalized transcript, and a readable wavs/ID.wav for each."""
    root = Path(root)
    metadata = root / METADATA
    if not root.is_dir():
        raise InputError(root, "LJSpeech folder not found")
    utterances: list[Utterance] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(read_lines(metadata), 1):
        fields = line.split("|")
        if len(fields) != FIELDS:
            raise InputError(
                metadata,
                f"expected {FIELDS} '|'-separated fields (ID|transcription|normalized "
                f"transcription), found {len(fields)}",
                lineno,
            )
        utt_id, _, normalized = (field.strip() for field in fields)
        if not utt_id:
            raise InputError(metadata, "empty utterance id", lineno)
        if utt_id in seen:
            raise InputError(metadata, f"utterance id {utt_id} repeats line {seen[utt_id]}", lineno)
        seen[utt_id] = lineno
        if not normalized:
            raise InputError(metadata, f"utterance {utt_id} has no normalized transcript", lineno)
        wav_path = root / "wavs" / f"{utt_id}.wav"
        check_wav(wav_path, f"{metadata}:{lineno}")
        utterances.append(Utterance(utt_id, normalized, wav_path, None))
    if not utterances:
        raise InputError(metadata, "no utterances listed")
    return utterances
