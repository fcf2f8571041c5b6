"""Sequence-level knowledge distillation (paper section 4.1, eq. 4): the trained AR teacher
re-generates the target of every training source, and the student trains on (source, teacher
output) pairs instead of the raw corpus.

* NMT and ASR: beam search with ``decoding.{task}`` (beam, lenpen, max_len_a, max_len_b,
  batch_sentences), the best hypothesis per sentence (``comma.engine.decode.decode_split``);
* TTS: greedy autoregressive mel generation with ``decoding.tts`` (max_len_a, max_len_b,
  stop_threshold, batch_sentences; ``comma.engine.decode.generate_split``). The TTS teacher
  keeps its
  decoder pre-net dropout on at inference, so torch is seeded with :func:`shard_seed` (a
  function of the run's seed and the shard only) right before each shard is generated.

The work is cut into shards (cluster jobs): shard k of n is the k-th contiguous block of
``numpy.array_split(range(len(train)), n)``, so concatenating the shards in order gives the
training split's order. Outputs that cannot be a training target are left out and counted:

* ``max_length``: a token hypothesis with as many tokens as its limit
  ``floor(max_len_a * src_len + max_len_b)`` (beam search forced its EOS there);
* ``not_stopped``: a mel generation cut at its limit without its stop token firing;
* ``empty``: a hypothesis without a single token (EOS first) or frame.

Shard file (:func:`distill_shard`, ``work/distill/{task}/shard{k}.pt``; ``torch.save`` of a
dict that loads with ``weights_only=True``)::

    {"format": "comma-distill-shard-v1",
     "split": {"src": {...}, "tgt": {...}, "ids": [...]},  # the kept pairs, save_split's layout
     "kept": int64 [kept],               # their positions in the training split
     "raw_tgt_lengths": int64 [sentences],  # raw target lengths of every sentence of the shard
     "stats": {...}}                     # JSON-able: counts, timings, settings (see below)

``stats`` keys: task, teacher, shard, shards, first_index, sentences, kept, dropped
(max_length, not_stopped, empty), unit ("tokens" or "frames"), generated_units (tokens before
EOS, or frames, of every output kept or not), kept_units, seconds, sentences_per_second,
units_per_second, decoding, torch_seed, exact_matches (token tasks: kept outputs identical to
the raw target; null for TTS).

:func:`merge_distilled` concatenates the shards into the KD corpus ``work/data/{task}/kd/
train.pt``, in exactly the raw training split's format (``comma.data.packed.save_split``: same
dtypes, token or mel sides, ``n_mels``, vocabulary; sources and ids are the raw ones), and
writes a JSON report (``results/distill/{task}.json``) with the keys documented there.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from comma.data.packed import PackedSequences, Split, load_split, save_split
from comma.engine.decode import decode_split, generate_split, max_lengths
from comma.engine.decode_settings import DecodingSettings
from comma.engine.device import for_inference
from comma.errors import InputError
from comma.io import torch_load, torch_save, write_json
from comma.models.registry import load_teacher
from comma.models.teacher import TransformerTTS
from comma.models.teacher_base import TokenTeacher
from comma.tasks import TASKS

__all__ = [
    "SHARD_FORMAT",
    "DROP_CAUSES",
    "shard_indices",
    "shard_seed",
    "distill_shard",
    "load_shard",
    "merge_distilled",
]

log = logging.getLogger(__name__)

SHARD_FORMAT = "comma-distill-shard-v1"
DROP_CAUSES = ("max_length", "not_stopped", "empty")
PERCENTILES = (5, 25, 50, 75, 95)


def shard_indices(n: int, shard: int, shards: int) -> np.ndarray:
    """Positions (int64, ascending, contiguous) of shard `shard` of `shards` in a split of `n`
    sentences: ``numpy.array_split(range(n), shards)[shard]``."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    if not 0 <= shard < shards:
        raise ValueError(f"shard index {shard} is outside 0..{shards - 1} ({shards} shards)")
    return np.array_split(np.arange(n, dtype=np.int64), shards)[shard]


def shard_seed(seed: int, shard: int) -> int:
    """The torch seed of one shard's generation: a function of (seed, shard) only (numpy's
    SeedSequence), so a shard's output does not depend on what ran before it."""
    return int(np.random.SeedSequence([int(seed), int(shard)]).generate_state(1)[0])


def _empty_packed(like: PackedSequences) -> PackedSequences:
    values = like.values.new_empty((0, *like.values.shape[1:]))
    return PackedSequences(values, torch.zeros(1, dtype=torch.int64))


def _concat_packed(parts: Sequence[PackedSequences]) -> PackedSequences:
    """Packed sequences one after another (offsets shifted), dtype and shape kept."""
    offsets, base = [torch.zeros(1, dtype=torch.int64)], 0
    for part in parts:
        offsets.append(part.offsets[1:] + base)
        base += int(part.values.shape[0])
    values = torch.cat([part.values for part in parts])
    return PackedSequences(values.contiguous(), torch.cat(offsets))


def _select(split: Split, indices: Sequence[int]) -> Split:
    if len(indices):
        return split.select(list(indices))
    return Split(_empty_packed(split.src), _empty_packed(split.tgt), [])


def _check_corpus(task: str, split: Split, model: Any, train_path: Path, teacher: Path) -> None:
    """The training split must be the kind this teacher reads and writes (the task's log-mel
    sides, :attr:`comma.tasks.Task.mel_sides`)."""
    spec = TASKS[task]
    kind = {True: "tokens", False: "mel frames"}
    for name, side, want in (
        ("source", split.src, not spec.is_mel("src")),
        ("target", split.tgt, not spec.is_mel("tgt")),
    ):
        if side.is_tokens != want:
            raise InputError(
                train_path,
                f"{name} side holds {kind[side.is_tokens]}, but the {task} teacher {teacher} "
                f"expects {kind[want]} (is this the {task} corpus?)",
            )
    if spec.is_mel("tgt") and int(split.tgt.values.shape[1]) != int(model.config.n_mels):
        raise InputError(
            train_path,
            f"targets have {split.tgt.values.shape[1]} mel bins, the teacher {teacher} "
            f"generates {model.config.n_mels}",
        )


def _rate(count: float, seconds: float) -> float | None:
    return float(count) / seconds if seconds > 0 else None


def distill_shard(
    teacher_path: str | Path,
    train_path: str | Path,
    out_path: str | Path,
    *,
    shard: int,
    shards: int,
    decoding: dict,
    seed: int,
    progress: bool = True,
) -> dict:
    """Decode shard `shard` of `shards` of the training split `train_path` with the teacher
    `teacher_path`; write the kept (raw source, teacher output) pairs and the shard's stats to
    `out_path` (format in the module docstring, written atomically) and return the stats.

    `decoding`: ``decoding.{task}`` of the config; `seed`: the run's seed (TTS generation is
    seeded with :func:`shard_seed` of it)."""
    teacher_path, train_path = Path(teacher_path), Path(train_path)
    shard, shards = int(shard), int(shards)
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    if not 0 <= shard < shards:
        raise ValueError(f"shard index {shard} is outside 0..{shards - 1} ({shards} shards)")
    if not teacher_path.is_file():
        raise InputError(teacher_path, "teacher model not found (run the train_teacher rule)")
    model = load_teacher(teacher_path)
    task = model.config.task
    settings = DecodingSettings.from_config(decoding, task)
    train = load_split(train_path)
    _check_corpus(task, train, model, train_path, teacher_path)
    indices = shard_indices(len(train), shard, shards)
    part = _select(train, indices.tolist())
    first = int(indices[0]) if len(indices) else len(train)
    log.info(
        "%s shard %d/%d: sentences %d..%d of %d in %s",
        task,
        shard,
        shards,
        first,
        first + len(part) - 1,
        len(train),
        train_path,
    )

    # bf16 on a GPU, as evaluate_teacher; the search itself scores in float32
    model, precision = for_inference(model)
    torch_seed = shard_seed(seed, shard)
    torch.manual_seed(torch_seed)  # TTS: the decoder pre-net's inference-time dropout
    dropped = dict.fromkeys(DROP_CAUSES, 0)
    outputs: list[torch.Tensor] = []
    keep: list[int] = []  # positions within the shard
    seconds = 0.0
    if len(part) and isinstance(model, TransformerTTS):
        with precision:
            generated, seconds = generate_split(
                model, part, **settings.arguments(), progress=progress
            )
        for k, (mel, stopped) in enumerate(zip(generated.frames, generated.stopped, strict=True)):
            if not len(mel):
                dropped["empty"] += 1
            elif not stopped:
                dropped["not_stopped"] += 1
            else:
                keep.append(k)
            outputs.append(mel.to(train.tgt.values.dtype))
    elif len(part):
        if not isinstance(model, TokenTeacher):
            raise TypeError(f"{teacher_path}: not a token or TTS teacher: {type(model).__name__}")
        with precision:
            hypotheses, seconds = decode_split(
                model, part, **settings.arguments(), progress=progress
            )
        caps = max_lengths(part.src.lengths, **settings.limits).tolist()
        for k, (hypothesis, cap) in enumerate(zip(hypotheses, caps, strict=True)):
            tokens = torch.tensor(hypothesis.tokens, dtype=train.tgt.values.dtype)
            if not len(tokens):
                dropped["empty"] += 1
            elif len(tokens) >= cap:
                dropped["max_length"] += 1
            else:
                keep.append(k)
            outputs.append(tokens)

    kept_src = part.src.select(keep) if keep else _empty_packed(train.src)
    kept_tgt = (
        PackedSequences.from_list([outputs[k] for k in keep], dtype=train.tgt.values.dtype)
        if keep
        else _empty_packed(train.tgt)
    )
    kd = Split(kept_src, kept_tgt, [part.ids[k] for k in keep])
    generated_units = sum(len(o) for o in outputs)
    exact = None
    mel_target = TASKS[task].is_mel("tgt")
    if not mel_target:
        exact = sum(bool(torch.equal(outputs[k], part.tgt[k])) for k in keep)
    stats = {
        "task": task,
        "teacher": str(teacher_path),
        "shard": shard,
        "shards": shards,
        "first_index": first,
        "sentences": len(part),
        "kept": len(keep),
        "dropped": dropped,
        "unit": "frames" if mel_target else "tokens",
        "generated_units": int(generated_units),
        "kept_units": int(kd.tgt.values.shape[0]),
        "seconds": seconds,
        "sentences_per_second": _rate(len(part), seconds),
        "units_per_second": _rate(generated_units, seconds),
        "decoding": settings.arguments(),
        "torch_seed": torch_seed,
        "exact_matches": exact,
    }
    n_dropped = sum(dropped.values())
    log.info(
        "%s shard %d/%d: kept %d of %d in %.1f s (%s sentences/s, %s %s/s)",
        task,
        shard,
        shards,
        len(keep),
        len(part),
        seconds,
        _fmt(stats["sentences_per_second"]),
        _fmt(stats["units_per_second"]),
        stats["unit"],
    )
    if n_dropped:
        log.warning(
            "%s shard %d/%d: dropped %d of %d outputs: %s",
            task,
            shard,
            shards,
            n_dropped,
            len(part),
            {cause: n for cause, n in dropped.items() if n},
        )
    shard_data = {
        "format": SHARD_FORMAT,
        "split": {"src": kd.src.to_dict(), "tgt": kd.tgt.to_dict(), "ids": list(kd.ids)},
        "kept": torch.as_tensor(indices[keep] if keep else [], dtype=torch.int64),
        "raw_tgt_lengths": part.tgt.lengths.clone(),
        "stats": stats,
    }
    torch_save(shard_data, out_path)
    return stats


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def load_shard(path: str | Path) -> tuple[Split, dict, torch.Tensor, torch.Tensor]:
    """A shard written by :func:`distill_shard` -> (kept pairs, stats, kept positions in the
    training split, raw target lengths of the shard's sentences)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "distillation shard not found (run the distill rule)")
    data = torch_load(path)
    if not isinstance(data, dict) or data.get("format") != SHARD_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise InputError(path, f"not a distillation shard (format {found!r})")
    try:
        split = Split(
            PackedSequences.from_dict(data["split"]["src"], path),
            PackedSequences.from_dict(data["split"]["tgt"], path),
            list(data["split"]["ids"]),
        )
        return split, data["stats"], data["kept"], data["raw_tgt_lengths"]
    except KeyError as err:
        raise InputError(path, f"distillation shard lacks the key {err}") from None


def _length_stats(lengths: torch.Tensor) -> dict[str, float | int] | None:
    if not len(lengths):
        return None
    values = lengths.double().numpy()
    stats: dict[str, float | int] = {
        "sequences": int(len(values)),
        "total": int(values.sum()),
        "mean": round(float(values.mean()), 3),
        "std": round(float(values.std()), 3),
        "min": int(values.min()),
        "max": int(values.max()),
    }
    for q in PERCENTILES:
        stats[f"p{q}"] = round(float(np.percentile(values, q)), 3)
    return stats


def _raw_pairs_of(kd: Split, raw_train_path: str | Path, sentences: int) -> Split:
    """The raw training pairs of the KD corpus's sentences, in its order."""
    raw = load_split(raw_train_path)
    if len(raw) != sentences:
        raise InputError(
            raw_train_path,
            f"has {len(raw)} sentences, but the distillation shards decoded {sentences}: "
            "shards of another training split?",
        )
    position = {sentence_id: k for k, sentence_id in enumerate(raw.ids)}
    unknown = [i for i in kd.ids if i not in position]
    if unknown:
        raise InputError(
            raw_train_path, f"lacks {len(unknown)} KD sentence id(s), e.g. {unknown[0]!r}"
        )
    return raw.select([position[i] for i in kd.ids])


def merge_distilled(
    shard_paths: Sequence[str | Path],
    out_path: str | Path,
    report_path: str | Path,
    *,
    raw_train_path: str | Path | None = None,
    raw_kept_path: str | Path | None = None,
) -> dict:
    """Concatenate the shards of one task, in order, into the KD training split `out_path`
    (``save_split``, atomic) and write the JSON report `report_path`; return the report.

    With `raw_train_path` and `raw_kept_path`, also write the raw training pairs of exactly
    the kept sentences (in the KD corpus's order) to `raw_kept_path`: training on it and on
    the KD corpus compares raw and KD targets on the same sources (a paired comparison).

    Report keys: task, teacher, decoding, shards, sentences, kept, kept_fraction, dropped
    (per cause), dropped_total, unit, generated_units, decode_seconds (summed over shards),
    sentences_per_second, units_per_second, target_length (``raw``: every raw target,
    ``raw_kept``: the raw targets of the kept sentences, ``kd``: the teacher's; each with
    sequences, total, mean, std, min, max, p5, p25, p50, p75, p95), kd_to_raw_length_ratio (mean
    over kept sentences of KD / raw target length), exact_match_fraction (token tasks: kept KD
    targets identical to the raw one; null for TTS), and per_shard (each shard's stats)."""
    paths = [Path(p) for p in shard_paths]
    if not paths:
        raise ValueError("no distillation shards to merge")
    splits, stats, raw_lengths, kept_raw_lengths = [], [], [], []
    for k, path in enumerate(paths):
        split, shard_stats, kept, raw = load_shard(path)
        if shard_stats["shard"] != k or shard_stats["shards"] != len(paths):
            raise InputError(
                path,
                f"is shard {shard_stats['shard']} of {shard_stats['shards']}, expected shard "
                f"{k} of {len(paths)} (pass every shard, in order)",
            )
        if stats:
            previous = stats[-1]
            if shard_stats["task"] != previous["task"]:
                raise InputError(
                    path, f"is a {shard_stats['task']} shard, the others are {previous['task']}"
                )
            if shard_stats["first_index"] != previous["first_index"] + previous["sentences"]:
                raise InputError(
                    path, "does not continue the previous shard (shards of different runs?)"
                )
            if splits[0].tgt.values.shape[1:] != split.tgt.values.shape[1:] or (
                splits[0].tgt.values.dtype != split.tgt.values.dtype
            ):
                raise InputError(path, "target format differs from the first shard's")
        elif shard_stats["first_index"] != 0:
            raise InputError(path, "the first shard does not start at sentence 0")
        splits.append(split)
        stats.append(shard_stats)
        raw_lengths.append(raw)
        kept_raw_lengths.append(raw[kept - shard_stats["first_index"]])
    merged = Split(
        _concat_packed([s.src for s in splits]),
        _concat_packed([s.tgt for s in splits]),
        [i for s in splits for i in s.ids],
    )
    task = stats[0]["task"]
    sentences = sum(s["sentences"] for s in stats)
    if not len(merged):
        raise ValueError(
            f"the {task} KD corpus would be empty: the teacher's output was dropped for all "
            f"{sentences} training sentences ({', '.join(map(str, paths))}); is the teacher "
            "trained, and are decoding.max_len_a/max_len_b large enough?"
        )
    if len(set(merged.ids)) != len(merged.ids):
        raise ValueError(f"{task} KD corpus: duplicate sentence ids across the shards")
    dropped = {cause: sum(s["dropped"][cause] for s in stats) for cause in DROP_CAUSES}
    seconds = float(sum(s["seconds"] for s in stats))
    generated = int(sum(s["generated_units"] for s in stats))
    raw_all = torch.cat(raw_lengths)
    raw_kept = torch.cat(kept_raw_lengths)
    kd_lengths = merged.tgt.lengths
    exact = None
    if not TASKS[task].is_mel("tgt"):
        exact = sum(s["exact_matches"] for s in stats) / len(merged)
    report = {
        "task": task,
        "teacher": stats[0]["teacher"],
        "decoding": stats[0]["decoding"],
        "shards": len(paths),
        "sentences": sentences,
        "kept": len(merged),
        "kept_fraction": len(merged) / sentences,
        "dropped": dropped,
        "dropped_total": sum(dropped.values()),
        "unit": stats[0]["unit"],
        "generated_units": generated,
        "decode_seconds": seconds,
        "sentences_per_second": _rate(sentences, seconds),
        "units_per_second": _rate(generated, seconds),
        "target_length": {
            "raw": _length_stats(raw_all),
            "raw_kept": _length_stats(raw_kept),
            "kd": _length_stats(kd_lengths),
        },
        "kd_to_raw_length_ratio": float((kd_lengths.double() / raw_kept.double()).mean()),
        "exact_match_fraction": exact,
        "per_shard": stats,
    }
    if (raw_train_path is None) != (raw_kept_path is None):
        raise ValueError("give both raw_train_path and raw_kept_path, or neither")
    raw_kept_split = None
    if raw_train_path is not None:
        raw_kept_split = _raw_pairs_of(merged, raw_train_path, sentences)
    save_split(out_path, merged)
    if raw_kept_split is not None:
        save_split(raw_kept_path, raw_kept_split)
    write_json(report_path, report)
    log.info(
        "%s KD corpus: %d of %d sentences kept (%s dropped), mean target length %.2f -> %.2f "
        "%s; %s",
        task,
        len(merged),
        sentences,
        dropped,
        report["target_length"]["raw_kept"]["mean"],
        report["target_length"]["kd"]["mean"],
        report["unit"],
        out_path,
    )
    return report
