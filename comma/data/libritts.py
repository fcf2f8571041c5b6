"""Reader of one LibriTTS subset (Zen et al. 2019) in the layout the openslr archives unpack to.

    LibriTTS/<subset>/<speaker>/<chapter>/<speaker>_<chapter>_<para>_<sent>.wav
    LibriTTS/<subset>/<speaker>/<chapter>/<id>.normalized.txt   one line, UTF-8, no newline
    (also <id>.original.txt and per-chapter .book.tsv / .trans.tsv, which we do not read)

`read_libritts(subset_dir)` pairs every wav with its normalized transcript (the text with
numbers and abbreviations spelled out) and returns them sorted by utterance id. A wav without a
transcript, a transcript without a wav, an id that does not start with its folders'
`<speaker>_<chapter>_`, non-UTF-8 or empty text are errors naming the file.
"""

from __future__ import annotations

from pathlib import Path

from comma.data.lines import read_lines
from comma.data.utterances import Utterance, check_wav
from comma.errors import InputError

SAMPLE_RATE = 24000  # of the real corpus, which extract_corpus_mels expects
TRANSCRIPT_SUFFIX = ".normalized.txt"


def read_transcript(path: Path) -> str:
    lines = [line.strip() for line in read_lines(path)]
    text_lines = [k for k, line in enumerate(lines, 1) if line]
    if not text_lines:
        raise InputError(path, "empty transcript")
    if len(text_lines) > 1:
        raise InputError(path, "transcript spans more than one line", text_lines[1])
    return lines[text_lines[0] - 1]


def files_by_id(subset_dir: Path, suffix: str) -> dict[str, Path]:
    """<speaker>/<chapter>/<id><suffix> files by id; an id in two folders is an error."""
    found: dict[str, Path] = {}
    for path in sorted(subset_dir.glob(f"*/*/*{suffix}")):
        utt_id = path.name.removesuffix(suffix)
        if utt_id in found:
            raise InputError(path, f"utterance id {utt_id} also found at {found[utt_id]}")
        found[utt_id] = path
    return found


def read_libritts(subset_dir: str | Path) -> list[Utterance]:
    """The utterances of one LibriTTS subset folder (e.g. LibriTTS/dev-clean), sorted by id."""
    subset_dir = Path(subset_dir)
    if not subset_dir.is_dir():
        raise InputError(subset_dir, "LibriTTS subset folder not found")
    wavs = files_by_id(subset_dir, ".wav")
    transcripts = files_by_id(subset_dir, TRANSCRIPT_SUFFIX)
    for utt_id, transcript in sorted(transcripts.items()):
        if utt_id not in wavs:
            raise InputError(transcript.with_name(f"{utt_id}.wav"), "audio file not found")
    if not wavs:
        raise InputError(subset_dir, "no <speaker>/<chapter>/<id>.wav files found")
    utterances = []
    for utt_id, wav_path in sorted(wavs.items()):
        speaker, chapter = wav_path.parent.parent.name, wav_path.parent.name
        if not utt_id.startswith(f"{speaker}_{chapter}_"):
            raise InputError(
                wav_path,
                f"utterance id {utt_id} does not start with its folders' {speaker}_{chapter}_",
            )
        transcript = wav_path.with_name(f"{utt_id}{TRANSCRIPT_SUFFIX}")
        if utt_id not in transcripts:
            raise InputError(transcript, f"transcript of utterance {utt_id} not found")
        check_wav(wav_path, str(subset_dir))
        utterances.append(Utterance(utt_id, read_transcript(transcript), wav_path, speaker))
    return utterances
