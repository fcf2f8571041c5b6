"""The alignment stage (rule ``extract_alignment``): run each AR teacher teacher-forced over a
training corpus and store one :class:`comma.alignment.store.TeacherAlignment` per corpus: per
sentence the teacher's attention maps of every decoder layer and head (float16), and what the
task's NAR student reads besides (its ``TEACHER_TARGETS``, :func:`stored_kinds`): durations
(FastSpeech, TTS) in place of the chosen map, expected positions for the windows (NAR-ASR), the
chosen map otherwise (NMT, ASR)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import torch
from tqdm import tqdm

from comma.alignment.calculators import durations_from_attention, expected_positions, focus_rate
from comma.alignment.store import ATTENTION_CHOICES, TeacherAlignment
from comma.data.batching import collate, make_batches
from comma.data.packed import PackedSequences, load_split
from comma.engine.decode import teacher_forced_attention
from comma.io import write_json
from comma.models.registry import NAR_MODELS, load_teacher

log = logging.getLogger(__name__)

__all__ = ["stored_kinds", "extract_alignment"]


def stored_kinds(task: str) -> frozenset[str]:
    """What the alignment of `task` stores beside the per-head maps, from what its NAR student
    reads (``TEACHER_TARGETS`` of ``NAR_MODELS[task]``; CoMMA reads maps, which every store
    gives): ``durations`` (FastSpeech's; they stand for the chosen map, whose hard alignment
    they give), ``expected`` positions (NAR-ASR's windows), else the chosen ``map``."""
    reads = set(getattr(NAR_MODELS[task], "TEACHER_TARGETS", ()))
    kinds = {"durations"} if "durations" in reads else {"map"}
    return frozenset(kinds | ({"expected"} if "window" in reads else set()))


@torch.no_grad()
def _teacher_attention_passes(model, split, batch_sentences: int, seed: int, progress: bool):
    """Yield (batch, TeacherForcedAttention) over the corpus in a fixed order; the same
    (seed, order) gives the same attention, also for the TTS teacher's inference dropout."""
    torch.manual_seed(seed)
    batches = make_batches(split.src.lengths.numpy(), max_sentences=batch_sentences, shuffle=False)
    for indices in tqdm(batches, desc="teacher attention", unit="batch", disable=not progress):
        batch = collate(split, indices)
        yield batch, teacher_forced_attention(model, batch)


def extract_alignment(
    teacher_path: str | Path,
    train_path: str | Path,
    out_path: str | Path,
    summary_path: str | Path,
    *,
    attention: str,
    min_focus_rate: float = 0.0,
    batch_sentences: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Teacher-forced attention of the AR teacher over a training corpus -> its alignments.

    `attention` picks each sentence's map: ``diagonal_head``, the (layer, head) of highest
    focus rate over the whole corpus (a first pass; ESPnet's duration calculator), or
    ``last_layer``, the mean over the last decoder layer's heads. From that map: TTS durations
    (:func:`durations_from_attention`; always from the diagonal head), ASR expected positions
    (:func:`expected_positions`), and for NMT and ASR the map itself. TTS utterances whose
    focus rate is below `min_focus_rate` are counted in the summary; the rule training
    FastSpeech drops them (their indices are in the summary's ``low_focus``).
    Writes the :class:`TeacherAlignment` to `out_path` and a JSON summary to `summary_path`."""
    if attention not in ATTENTION_CHOICES:
        raise ValueError(f"attention must be one of {ATTENTION_CHOICES}, got {attention!r}")
    model = load_teacher(teacher_path)
    task = model.config.task
    kinds = stored_kinds(task)
    with_durations, with_expected = "durations" in kinds, "expected" in kinds
    if with_durations:
        attention = "diagonal_head"  # durations are argmax counts of one consistent head
    split = load_split(train_path)
    layers, heads = model.config.decoder_layers, model.config.heads

    # Pass 1: focus rate of every (layer, head), summed over sentences, and each sentence's
    # teacher lengths, which place its per-head maps in the store.
    n = len(split)
    src_lengths = torch.zeros(n, dtype=torch.long)
    tgt_lengths = torch.zeros(n, dtype=torch.long)
    rate_sum = torch.zeros(layers * heads, dtype=torch.float64)
    for batch, forced in _teacher_attention_passes(model, split, batch_sentences, seed, progress):
        flat = forced.attention.flatten(1, 2)  # [B, L*H, T, S]
        rate_sum += focus_rate(flat, forced.src_lengths, forced.tgt_lengths).double().sum(0)
        src_lengths[batch.indices] = forced.src_lengths.cpu()
        tgt_lengths[batch.indices] = forced.tgt_lengths.cpu()
    head_rates = (rate_sum / len(split)).view(layers, heads)
    if attention == "diagonal_head":
        best = int(head_rates.flatten().argmax())
        layer, head = divmod(best, heads)
        source = f"layer {layer} head {head}"
    else:
        layer, head = layers - 1, None
        source = f"layer {layer} mean over heads"
    log.info("focus rate per decoder layer x head:\n%s; AC target: %s", head_rates, source)

    # Pass 2: every sentence's maps. The per-head maps are written straight into a scratch
    # file beside the output, not held in memory: at the paper's scale they are ~30 GB
    # (LJSpeech, float16), twice that while packing a list of them.
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    offsets = torch.cat(
        [torch.zeros(1, dtype=torch.long), (layers * heads * tgt_lengths * src_lengths).cumsum(0)]
    )
    rates = torch.zeros(n)
    maps: list[torch.Tensor | None] = [None] * n
    durations: list[torch.Tensor | None] = [None] * n
    expected: list[torch.Tensor | None] = [None] * n
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".head_maps.") as scratch:
        head_values = torch.from_file(
            str(Path(scratch) / "values.f16"),
            shared=True,
            size=int(offsets[-1]),
            dtype=torch.float16,
        )  # [sum over sentences of L * H * T_b * M_b]
        passes = _teacher_attention_passes(model, split, batch_sentences, seed, progress)
        for batch, forced in passes:
            every_head = forced.attention.float().cpu()  # [B, L, H, T, S]
            chosen = every_head[:, layer]  # [B, H, T, S]
            chosen = chosen.mean(1) if head is None else chosen[:, head]  # [B, T, S]
            s_len, t_len = forced.src_lengths.cpu(), forced.tgt_lengths.cpu()
            if not (
                torch.equal(s_len, src_lengths[batch.indices])
                and torch.equal(t_len, tgt_lengths[batch.indices])
            ):
                raise RuntimeError("the teacher's lengths changed between the two passes")
            batch_rates = focus_rate(chosen[:, None], s_len, t_len)[:, 0]
            batch_durations = (
                durations_from_attention(chosen, s_len, t_len) if with_durations else None
            )
            batch_expected = expected_positions(chosen, s_len, t_len) if with_expected else None
            for row, k in enumerate(batch.indices.tolist()):
                t, m = int(t_len[row]), int(s_len[row])
                rates[k] = batch_rates[row]
                head_values[offsets[k] : offsets[k + 1]] = every_head[row, :, :, :t, :m].reshape(-1)
                if with_durations:
                    durations[k] = batch_durations[row, :m].int()
                else:
                    maps[k] = chosen[row, :t, :m].reshape(-1).half()
                if with_expected:
                    expected[k] = batch_expected[row, :t].int()

        alignment = TeacherAlignment(
            task,
            src_lengths,
            tgt_lengths,
            rates,
            source,
            maps=PackedSequences.from_list(maps) if not with_durations else None,
            token_durations=PackedSequences.from_list(durations) if with_durations else None,
            expected=PackedSequences.from_list(expected) if with_expected else None,
            head_maps=PackedSequences(head_values, offsets),
            head_shape=(layers, heads),
        )
        alignment.save(out_path)  # copies the scratch file into the store, page by page
    low_focus = (rates < min_focus_rate).nonzero().squeeze(1).tolist() if with_durations else []
    summary = {
        "task": task,
        "sentences": n,
        "attention": source,
        "focus_rate_per_head": head_rates.tolist(),
        "focus_rate": {
            "mean": float(rates.mean()),
            "p10": float(rates.quantile(0.1)),
            "min": float(rates.min()),
        },
        "min_focus_rate": min_focus_rate,
        "low_focus": low_focus,
        # Size of the per-head maps (float16) against the one chosen map per sentence.
        "head_maps_bytes": int(offsets[-1]) * 2,
        "chosen_map_bytes": int((src_lengths * tgt_lengths).sum() * 2),
    }
    if with_durations:
        zero = sum(int((d == 0).sum()) for d in durations)
        phonemes = int(src_lengths.sum())
        summary["zero_duration_phonemes"] = {"count": zero, "share": zero / phonemes}
        log.info("%d of %d phonemes get no frame", zero, phonemes)
        if low_focus:
            log.warning(
                "%d of %d utterances have focus rate < %g: left out of FastSpeech's training",
                len(low_focus),
                n,
                min_focus_rate,
            )
    write_json(summary_path, summary)
    return summary
