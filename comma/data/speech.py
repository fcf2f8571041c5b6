"""Preparation of the speech corpora: TTS (LJSpeech) and ASR (LibriTTS) as packed splits.

TTS, `prepare_tts`: each LJSpeech clip's normalized transcription -> ARPAbet phonemes
(`comma.data.phonemes.Phonemizer`) -> ids of a vocabulary built on the training split; the
target is the clip's log-mel frames from `extract_corpus_mels`. LJSpeech has no official split:
`valid` and `test` clips are drawn at random with `seed`, the rest is train. Writes
`train.pt valid.pt test.pt` (src = phoneme ids int32, tgt = frames [T, n_mels] float32),
`dict.src.txt` and `stats.json`.

ASR, `prepare_asr`: each LibriTTS utterance's normalized transcript -> Moses normalization and
tokenization, optionally lowercased (`comma.data.text.MosesPipeline`, the NMT pipeline's
settings, so `'` becomes `&apos;`) -> BPE learned on the training subset -> ids; the source is
the utterance's log-mel frames. The splits are LibriTTS's own subsets. Writes `train.pt valid.pt
test.pt` (src = frames float32, tgt = BPE ids int32), `dict.tgt.txt`, `bpe.codes`,
`test.ref.txt` (the test transcripts as target-side tokens before BPE, one per line in test.pt
order, the reference for WER) and `stats.json`.

Both leave out clips outside `seconds` = (min, max) and, with `max_chars_per_second`, clips whose
transcript has more characters per second of their audio than anyone speaks (natural speech
is about 15; a corrupt transcript of thousands of tokens on a short clip would ask a training
or measure_ratio batch for gigabytes): each such clip is named by file and utterance id in
the log and in stats.json's `text_filter`, and counted. Characters, not phonemes or BPE pieces,
so that one bound fits any unit settings; either unit is at most about one per character.

Token sequences are stored without BOS/EOS; models add them. Utterances keep corpus order
within a split. Everything is checked and computed before the first file is written, and each
file is written atomically (comma.io), so a failure leaves no half-written file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from comma.data.audio import CorpusMels, load_corpus_mels
from comma.data.libritts import TRANSCRIPT_SUFFIX, read_libritts
from comma.data.ljspeech import METADATA, read_ljspeech
from comma.data.packed import SPLITS, PackedSequences, Split, save_split, split_stats
from comma.data.phonemes import PUNCTUATION, Phonemizer
from comma.data.text import BpeSegmenter, MosesPipeline, learn_bpe
from comma.data.utterances import Utterance
from comma.data.vocab import Vocabulary
from comma.errors import InputError
from comma.io import write_json, write_lines

log = logging.getLogger(__name__)


def mel_frames(mels: CorpusMels, utterances: Sequence[Utterance], corpus: Path) -> PackedSequences:
    """The log-mel frames of `utterances`, in their order; InputError if one has none."""
    index = mels.index()
    missing = [utt.id for utt in utterances if utt.id not in index]
    if missing:
        raise InputError(
            mels.path,
            f"no log-mel frames for {len(missing)} utterance(s) of {corpus}, e.g. "
            f"{', '.join(missing[:3])} (features extracted from another corpus?)",
        )
    rows = [index[utt.id] for utt in utterances]
    if rows == list(range(len(mels.ids))):
        return mels.mels  # already in order: no copy (LibriTTS train-clean-100 is ~5 GB)
    return mels.mels.select(rows)


def within_duration(
    utterances: Sequence[Utterance],
    frames: PackedSequences,
    frames_per_second: float,
    seconds: tuple[float, float] | None,
    where: Path,
) -> tuple[list[Utterance], PackedSequences, dict]:
    """The utterances (and their frames) whose duration lies in `seconds` = (min, max), and a
    record of those left out; InputError naming `where` if none is left."""
    if seconds is None:
        return list(utterances), frames, {"left_out": 0}
    low, high = seconds
    durations = frames.lengths.double() / frames_per_second
    inside = (durations >= low) & (durations <= high)
    keep, out = inside.nonzero().squeeze(1).tolist(), (~inside).nonzero().squeeze(1).tolist()
    record = {
        "min_seconds": low,
        "max_seconds": high,
        "left_out": len(out),
        "too_short": int((durations < low).sum()),
        "too_long": int((durations > high).sum()),
        "examples": [f"{utterances[k].id} ({float(durations[k]):.2f} s)" for k in out[:10]],
    }
    if out:
        log.warning(
            "%s: left out %d of %d utterances outside %g-%g s: %s",
            where,
            len(out),
            len(utterances),
            low,
            high,
            ", ".join(record["examples"]),
        )
    if not keep:
        raise InputError(where, f"no utterance lasts between {low} and {high} seconds")
    if not out:
        return list(utterances), frames, record
    return [utterances[k] for k in keep], frames.select(keep), record


def within_speaking_rate(
    utterances: Sequence[Utterance],
    frames: PackedSequences,
    frames_per_second: float,
    max_chars_per_second: float | None,
    transcript_of: Callable[[Utterance], str],
    where: Path,
) -> tuple[list[Utterance], PackedSequences, dict]:
    """The utterances (and their frames) whose transcript has at most `max_chars_per_second`
    characters per second of audio, and a record of those left out, each named by its
    transcript file (`transcript_of`) and utterance id; InputError naming `where` if none is
    left."""
    if max_chars_per_second is None:
        return list(utterances), frames, {"left_out": 0}
    seconds = frames.lengths.double() / frames_per_second
    keep, out = [], []
    for k, utt in enumerate(utterances):
        chars, duration = len(utt.text), float(seconds[k])
        if chars <= max_chars_per_second * duration:
            keep.append(k)
            continue
        out.append(
            f"{transcript_of(utt)} utterance {utt.id}: {chars} characters in {duration:.2f} s "
            f"({chars / duration if duration else float('inf'):.0f} per second)"
        )
    record = {"max_chars_per_second": max_chars_per_second, "left_out": len(out), "utterances": out}
    if out:
        log.warning(
            "left out %d of %d utterances with more than %g transcript characters per second "
            "of audio: %s",
            len(out),
            len(utterances),
            max_chars_per_second,
            "; ".join(out[:20]),
        )
    if not keep:
        raise InputError(
            where,
            f"no utterance's transcript has at most {max_chars_per_second:g} characters per "
            "second of its audio",
        )
    if not out:
        return list(utterances), frames, record
    return [utterances[k] for k in keep], frames.select(keep), record


def token_ids(vocab: Vocabulary, sequences: Sequence[Sequence[str]]) -> PackedSequences:
    return PackedSequences.from_list(
        [torch.tensor(vocab.encode(seq), dtype=torch.int32) for seq in sequences],
        dtype=torch.int32,
    )


def unk_rate(vocab: Vocabulary, sequences: Sequence[Sequence[str]]) -> float:
    total = sum(len(s) for s in sequences)
    unknown = sum(1 for s in sequences for token in s if token not in vocab)
    return round(unknown / total, 6) if total else 0.0


def random_split(n: int, valid: int, test: int, seed: int) -> dict[str, list[int]]:
    """Indices 0..n-1 drawn into valid/test (sizes given) and train (the rest), each sorted."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return {
        "valid": sorted(order[:valid]),
        "test": sorted(order[valid : valid + test]),
        "train": sorted(order[valid + test :]),
    }


def prepare_tts(
    ljspeech_root: str | Path,
    mels_path: str | Path,
    out_dir: str | Path,
    *,
    valid: int,
    test: int,
    seed: int,
    seconds: tuple[float, float] | None = None,
    max_chars_per_second: float | None = None,
) -> dict:
    """LJSpeech -> phoneme ids (src) and log-mel frames (tgt), split at random by `seed`;
    clips outside `seconds` = (min, max), or whose transcript has more than
    `max_chars_per_second` characters per second, are left out first (counted in the stats)."""
    ljspeech_root, out_dir = Path(ljspeech_root), Path(out_dir)
    metadata = ljspeech_root / METADATA
    utterances = read_ljspeech(ljspeech_root)

    def check_split_sizes(stage: str) -> None:
        if valid < 1 or test < 1 or valid + test >= len(utterances):
            raise InputError(
                metadata,
                f"{len(utterances)} utterances ({stage}) cannot be split into {valid} valid, "
                f"{test} test and a non-empty training set",
            )

    check_split_sizes("listed")  # before the features are read: the cheap error first
    mels = load_corpus_mels(mels_path)
    frames = mel_frames(mels, utterances, ljspeech_root)
    fps = mels.features()["frames_per_second"]
    utterances, frames, duration = within_duration(utterances, frames, fps, seconds, metadata)
    utterances, frames, text = within_speaking_rate(
        utterances, frames, fps, max_chars_per_second, lambda utt: str(metadata), metadata
    )
    check_split_sizes("within the duration and speaking-rate bounds")

    phonemizer = Phonemizer()
    phonemes = []
    for utt in tqdm(utterances, desc="g2p", unit="utt"):
        seq = phonemizer(utt.text)
        if all(p in PUNCTUATION for p in seq):
            raise InputError(metadata, f"utterance {utt.id}: no phonemes in {utt.text!r}")
        phonemes.append(seq)

    rows = random_split(len(utterances), valid, test, seed)
    vocab = Vocabulary.build([phonemes[k] for k in rows["train"]])
    splits = {
        name: Split(
            token_ids(vocab, [phonemes[k] for k in rows[name]]),
            frames.select(rows[name]),
            [utterances[k].id for k in rows[name]],
        )
        for name in SPLITS
    }
    stats = {
        "task": "tts",
        "corpus": str(ljspeech_root),
        "seed": seed,
        "splits": {name: split_stats(split) for name, split in splits.items()},
        "vocab": {"src": len(vocab), "tgt": None},
        "unk_rate": {
            name: unk_rate(vocab, [phonemes[k] for k in rows[name]]) for name in ("valid", "test")
        },
        "features": mels.features(),
        "duration_filter": duration,
        "text_filter": text,
        "units": {"src": "ARPAbet phonemes (g2p_en, no word boundaries)", "tgt": "log-mel frames"},
    }
    for name, split in splits.items():
        save_split(out_dir / f"{name}.pt", split)
    vocab.save(out_dir / "dict.src.txt")
    write_json(out_dir / "stats.json", stats)
    log.info("prepared TTS corpus in %s: %s", out_dir, stats["splits"])
    return stats


def transcript_path(utt: Utterance) -> Path:
    """The LibriTTS transcript file of an utterance, beside its wav."""
    return utt.wav_path.with_name(f"{utt.id}{TRANSCRIPT_SUFFIX}")


def prepare_asr(
    libritts_root: str | Path,
    mels_paths: Mapping[str, str | Path],
    out_dir: str | Path,
    *,
    subsets: Mapping[str, str],
    lowercase: bool,
    bpe_merges: int,
    seconds: tuple[float, float] | None = None,
    max_chars_per_second: float | None = None,
) -> dict:
    """LibriTTS subsets -> log-mel frames (src) and BPE ids of the transcripts (tgt); clips
    outside `seconds` = (min, max), or whose transcript has more than `max_chars_per_second`
    characters per second, are left out of every split (counted in the stats)."""
    libritts_root, out_dir = Path(libritts_root), Path(out_dir)
    for name, mapping in (("mels_paths", mels_paths), ("subsets", subsets)):
        if set(mapping) != set(SPLITS):
            raise ValueError(f"{name} must have exactly the keys {SPLITS}, got {sorted(mapping)}")
    pipeline = MosesPipeline("en", lowercase)
    utterances, frames, tokens, features, duration, text = {}, {}, {}, None, {}, {}
    for name in SPLITS:
        subset_dir = libritts_root / subsets[name]
        utterances[name] = read_libritts(subset_dir)
        mels = load_corpus_mels(mels_paths[name])
        if features is None:
            features = mels.features()
        elif mels.features() != features:
            raise InputError(
                mels.path, f"features {mels.features()} differ from the train split's {features}"
            )
        frames[name] = mel_frames(mels, utterances[name], subset_dir)
        utterances[name], frames[name], duration[name] = within_duration(
            utterances[name], frames[name], features["frames_per_second"], seconds, subset_dir
        )
        utterances[name], frames[name], text[name] = within_speaking_rate(
            utterances[name],
            frames[name],
            features["frames_per_second"],
            max_chars_per_second,
            transcript_path,
            subset_dir,
        )
        tokens[name] = []
        for utt in tqdm(utterances[name], desc=f"tokenize {subsets[name]}", unit="utt"):
            seq = pipeline(utt.text)
            if not seq:
                raise InputError(transcript_path(utt), f"no tokens in transcript {utt.text!r}")
            tokens[name].append(seq)

    codes_path = out_dir / "bpe.codes"
    learn_bpe(tokens["train"], bpe_merges, codes_path)
    segmenter = BpeSegmenter(codes_path)
    pieces = {name: [segmenter(seq) for seq in tokens[name]] for name in SPLITS}
    vocab = Vocabulary.build(pieces["train"])
    splits = {
        name: Split(frames[name], token_ids(vocab, pieces[name]), [u.id for u in utterances[name]])
        for name in SPLITS
    }
    stats = {
        "task": "asr",
        "corpus": str(libritts_root),
        "subsets": dict(subsets),
        "lowercase": lowercase,
        "bpe_merges": bpe_merges,
        "splits": {name: split_stats(split) for name, split in splits.items()},
        "speakers": {name: len({u.speaker for u in utterances[name]}) for name in SPLITS},
        "vocab": {"src": None, "tgt": len(vocab)},
        "unk_rate": {name: unk_rate(vocab, pieces[name]) for name in ("valid", "test")},
        "features": features,
        "duration_filter": duration,
        "text_filter": text,
        "units": {"src": "log-mel frames", "tgt": "BPE pieces of Moses tokens"},
    }
    for name, split in splits.items():
        save_split(out_dir / f"{name}.pt", split)
    vocab.save(out_dir / "dict.tgt.txt")
    write_lines(out_dir / "test.ref.txt", [" ".join(seq) for seq in tokens["test"]])
    write_json(out_dir / "stats.json", stats)
    log.info("prepared ASR corpus in %s: %s", out_dir, stats["splits"])
    return stats
