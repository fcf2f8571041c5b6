"""Train CoMMA on a prepared corpus and measure its attention density ratio R(p).

The entry points of the `train_comma` and `measure_ratio` rules, usable from
Python as well:

* :func:`train_comma` builds CoMMA for a task from the prepared corpus's vocabularies and
  feature size, trains it with the project's trainer (resumable), and saves the weights with
  the architecture.
* :func:`measure_ratio` masks the test set at each p of a grid (a fixed mask seed, so every
  seed and variant sees the same masks), runs CoMMA with explicit attention weights, and writes
  per-run tables: R(p) (eq. 3) with a bootstrap CI over sentences, T (the raw target share of
  attention), D(p) (the masked-loss dependency of :mod:`comma.dependency`, from the same
  masks), the mean source and target lengths M and N, and R per layer and head.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from comma.data.batching import Batch, collate, make_batches, sentence_sizes
from comma.data.packed import Split, load_split
from comma.dependency import corpus_dependency, dependency_ci, loss_dependency
from comma.io import write_csv
from comma.models.comma import CoMMA, target_rows_paper_order
from comma.models.registry import load_comma
from comma.nn.transformer import padding_mask
from comma.ratio import (
    attention_density_ratio,
    bootstrap_ci,
    ratio_over_corpus,
    target_attention_share,
)
from comma.stages.training import load_alignment_for, train_model

log = logging.getLogger(__name__)


def train_comma(
    task: str,
    data_dir: str | Path,
    model_path: str | Path,
    metrics_path: str | Path,
    *,
    architecture: dict,
    train_path: str | Path | None = None,
    alignment_path: str | Path | None = None,
    ac_weight: float = 0.0,
    ac_mode: str = "head",
    probe: dict | None = None,
    order_path: str | Path | None = None,
    **settings,
) -> None:
    """Train CoMMA for `task` (:func:`comma.stages.training.train_model`).

    The training split is `train_path` (default `data_dir`/train.pt; the KD corpus for the
    kd variant); vocabularies come from `data_dir`. With `alignment_path` (the teacher's
    :class:`~comma.alignment.store.TeacherAlignment` of that training split) the eq. 8 attention
    constraint is added with weight `ac_weight` (the ac variant), per head or broadcast by
    `ac_mode` (:class:`~comma.models.comma.CoMMAConfig`). `architecture`: CoMMAConfig
    fields other than task, sizes and ac_weight; `settings`: training, seed, resume_path,
    threads, as :func:`train_model` takes them. `probe` (``sentences``, ``p_grid``,
    ``mask_seed``): R(p) on the first sentences of `data_dir`/valid.pt at every checkpoint,
    into the metrics as ``R@p`` (the convergence curve behind the step counts). `order_path`:
    the split whose sizes plan the batches (the kd run: its rawkept twin, so that the two see
    the same sentence ids in the same batches and order; :func:`train_model`)."""
    train_path = Path(train_path or Path(data_dir) / "train.pt")
    split = load_split(train_path)
    if alignment_path is not None and ac_weight <= 0:
        raise ValueError(f"an alignment is given but ac_weight is {ac_weight}; it must be > 0")
    alignment = None
    if alignment_path is not None:
        alignment = load_alignment_for(alignment_path, split, train_path)
    train_model(
        "comma",
        task,
        data_dir,
        model_path,
        metrics_path,
        architecture={
            **architecture,
            **({"ac_weight": ac_weight, "ac_mode": ac_mode} if alignment_path else {}),
        },
        split=split,
        alignment=alignment,
        inputs={"train": train_path, **({"alignment": alignment_path} if alignment_path else {})},
        probe=ratio_probe(load_split(Path(data_dir) / "valid.pt"), **probe) if probe else None,
        order_path=order_path,
        **settings,
    )


@dataclass
class RatioPass:
    ratio: torch.Tensor  # [B] eq. 2 on the attention averaged over the chosen layers/heads
    share: torch.Tensor  # [B] T, the raw target share of that attention
    per_head: torch.Tensor  # [B, layers, heads] eq. 2 for every single head
    src_lengths: torch.Tensor  # [B] M_b, source positions after the pre-net
    context_loss: torch.Tensor  # [B] summed loss of the predicted positions, target visible


@torch.no_grad()
def ratio_pass(
    model: CoMMA,
    batch: Batch,
    predicted: torch.Tensor,
    layers: Sequence[int],
    heads: Sequence[int],
) -> RatioPass:
    """One forward with attention weights: eq. 1-2 on its mix-attention, and the loss of the
    predicted positions (for the masked-loss dependency, :mod:`comma.dependency`)."""
    out = model(
        batch.src, batch.src_lengths, batch.tgt, batch.tgt_lengths, predicted, need_weights=True
    )
    context_loss = sum_per_sentence(model.masked_losses(out, batch.tgt, predicted), predicted)
    lengths = (out.src_lengths, batch.tgt_lengths)
    heads = list(heads)
    summed, per_head = None, []
    # Layer by layer, so only one layer's reordered rows exist at a time.
    for k, layer in enumerate(out.attention):
        rows = target_rows_paper_order(layer, out.src_max)  # [B, H, N, N + M]
        per_head.append(
            torch.stack(
                [
                    attention_density_ratio(rows[:, h], *lengths, predicted)
                    for h in range(rows.shape[1])
                ],
                dim=1,
            )
        )
        if k in layers:
            chosen = rows[:, heads].sum(dim=1)
            summed = chosen if summed is None else summed + chosen
    averaged = summed / (len(layers) * len(heads))  # [B, N, N + M]
    per_head = torch.stack(per_head, dim=1)  # [B, layers, heads]
    return RatioPass(
        attention_density_ratio(averaged, *lengths, predicted),
        target_attention_share(averaged, *lengths, predicted),
        per_head,
        out.src_lengths,
        context_loss,
    )


def sum_per_sentence(losses: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    """``[B]`` sums of the per-position `losses` ``[P]`` (``predicted.nonzero()`` order)."""
    rows = predicted.nonzero()[:, 0]
    return torch.zeros(len(predicted), dtype=losses.dtype, device=losses.device).index_add_(
        0, rows, losses
    )


@torch.no_grad()
def no_target_losses(model: CoMMA, batch: Batch) -> torch.Tensor:
    """``[B, N_max]`` the loss of every target position with the whole target masked (p = 1):
    CoMMA predicts from the source alone. Zero on padding."""
    everything = padding_mask(batch.tgt_lengths, batch.tgt.shape[1])  # [B, N]
    out = model(batch.src, batch.src_lengths, batch.tgt, batch.tgt_lengths, everything)
    losses = torch.zeros(everything.shape, dtype=torch.float32, device=everything.device)
    losses[everything] = model.masked_losses(out, batch.tgt, everything)
    return losses


@dataclass
class GridPoint:
    """Every sentence of a split masked at one p of the grid (batch order), one value each."""

    p: float
    ratio: torch.Tensor  # [S] eq. 2 on the attention averaged over the chosen layers/heads
    share: torch.Tensor  # [S] T, the raw target share
    per_head: torch.Tensor  # [S, layers, heads] eq. 2 for every single head
    src_lengths: torch.Tensor  # [S] M_b after the pre-net
    tgt_lengths: torch.Tensor  # [S] N_b
    predicted: torch.Tensor  # [S] masked positions
    context_loss: torch.Tensor  # [S] summed loss of the masked positions, target visible
    no_target_loss: torch.Tensor  # [S] the same positions' loss with the whole target masked
    sentences: torch.Tensor  # [S] index in the split


@torch.no_grad()
def grid_passes(
    model: CoMMA,
    split: Split,
    p_grid: Sequence[float],
    mask_seed: int,
    layers: Sequence[int],
    heads: Sequence[int],
    batch_sentences: int = 32,
):
    """Yield a :class:`GridPoint` per p of `p_grid`: the split in fixed batches, masked with a
    generator seeded by (`mask_seed`, index of p), so every seed and variant of a task sees
    the same masks; the p = 1 losses are computed once per batch for the whole grid. What
    :func:`measure_ratio` and the trainer's probe (:func:`ratio_probe`) both read."""
    device = next(model.parameters()).device
    batches = make_batches(sentence_sizes(split), max_sentences=batch_sentences, shuffle=False)
    collated = [collate(split, indices).to(device) for indices in batches]
    without_target = [no_target_losses(model, batch) for batch in collated]
    for p_index, p in enumerate(p_grid):
        generator = torch.Generator().manual_seed(mask_seed * 1000 + p_index)
        parts = []
        for batch, losses in zip(collated, without_target, strict=True):
            predicted = model.mask_targets(batch.tgt_lengths.cpu(), float(p), generator)
            predicted = predicted.to(device)
            result = ratio_pass(model, batch, predicted, layers, heads)
            parts.append(
                (
                    result.ratio,
                    result.share,
                    result.per_head,
                    result.src_lengths,
                    batch.tgt_lengths,
                    predicted.sum(dim=1),
                    result.context_loss,
                    (losses * predicted).sum(dim=1),
                    batch.indices,
                )
            )
        yield GridPoint(float(p), *(torch.cat(column).cpu() for column in zip(*parts, strict=True)))


def ratio_probe(
    split: Split, *, sentences: int, p_grid: Sequence[float], mask_seed: int, batch_sentences=32
):
    """A trainer probe on the first `sentences` of `split`, at each p of `p_grid`, with fixed
    masks -> ``{"R@p": R(p), "D@p": D(p)}``: R(p) (eq. 3, every layer and head) and the
    masked-loss dependency D(p) (:mod:`comma.dependency`), the convergence curves behind the
    step counts."""
    subset = split.select(range(min(sentences, len(split))))

    def probe(model: CoMMA) -> dict[str, float]:
        layers, heads = range(model.config.layers), range(model.config.heads)
        values = {}
        for point in grid_passes(model, subset, p_grid, mask_seed, layers, heads, batch_sentences):
            values[f"R@{point.p:g}"] = ratio_over_corpus(point.ratio.float())
            values[f"D@{point.p:g}"] = corpus_dependency(point.context_loss, point.no_target_loss)
        return values

    return probe


def _selection(choice: str | Sequence[int], count: int, what: str) -> list[int]:
    if choice == "all":
        return list(range(count))
    chosen = [int(k) for k in choice]
    if not chosen or min(chosen) < 0 or max(chosen) >= count:
        raise ValueError(f"{what} {chosen} outside 0..{count - 1} (or 'all')")
    return chosen


@torch.no_grad()
def measure_ratio(
    model_path: str | Path,
    test_path: str | Path,
    ratio_csv: str | Path,
    heads_csv: str | Path,
    *,
    labels: dict[str, Any],
    p_grid: Sequence[float],
    mask_seed: int,
    bootstrap: int,
    layers: str | Sequence[int] = "all",
    heads: str | Sequence[int] = "all",
    batch_sentences: int = 32,
    sentences_csv: str | Path | None = None,
) -> pd.DataFrame:
    """R(p) of one trained CoMMA on a test split, for every p in `p_grid`.

    The attention of the chosen `layers` and `heads` (default all) is averaged before eq. 1,
    as the ratio's contract asks. `labels` (task, variant, seed) are copied into every row.

    With `sentences_csv`, also writes one row per (p, test sentence with a predicted token):
    the labels, p, ``sentence`` (index in the test split), ``M`` and ``N`` (the positions CoMMA
    attends over), ``predicted`` (masked tokens), ``R`` (eq. 2: the mean alpha_i of the
    sentence), ``T`` (its raw target share), ``D`` (its own D_s) and the summed losses of its
    masked tokens with and without the visible target (``loss_context``, ``loss_no_target``),
    for length-matched comparisons."""
    model = load_comma(model_path)
    split = load_split(test_path)
    n_layers, n_heads = model.config.layers, model.config.heads
    chosen_layers = _selection(layers, n_layers, "layers")
    chosen_heads = _selection(heads, n_heads, "heads")
    rows, head_rows, sentence_tables = [], [], []
    grid = grid_passes(
        model, split, p_grid, mask_seed, chosen_layers, chosen_heads, batch_sentences
    )
    for point in grid:
        p, ratio, share, n_predicted = point.p, point.ratio, point.share, point.predicted
        src_len, tgt_len = point.src_lengths.double(), point.tgt_lengths.double()
        context_loss, no_target_loss = point.context_loss, point.no_target_loss
        low, high = bootstrap_ci(ratio, n_boot=bootstrap, seed=mask_seed)
        dependency = loss_dependency(context_loss, no_target_loss, n_predicted)
        d_low, d_high = dependency_ci(
            context_loss, no_target_loss, n_boot=bootstrap, seed=mask_seed
        )
        measured = ~ratio.isnan()
        if sentences_csv is not None:
            sentence_tables.append(
                pd.DataFrame(
                    {
                        **labels,
                        "p": float(p),
                        "sentence": point.sentences[measured].numpy(),
                        "M": src_len[measured].long().numpy(),
                        "N": tgt_len[measured].long().numpy(),
                        "predicted": n_predicted[measured].numpy(),
                        "R": ratio[measured].double().numpy(),
                        "T": share[measured].double().numpy(),
                        "D": dependency[measured].numpy(),
                        # Summed over the sentence's masked tokens: D(p) of any subset of
                        # sentences is 1 - sum(loss_context) / sum(loss_no_target).
                        "loss_context": context_loss[measured].numpy(),
                        "loss_no_target": no_target_loss[measured].numpy(),
                    }
                ).sort_values("sentence", kind="stable")
            )
        rows.append(
            {
                **labels,
                "p": float(p),
                "R": ratio_over_corpus(ratio),
                "R_ci_low": low,
                "R_ci_high": high,
                "T": ratio_over_corpus(share),
                "D": corpus_dependency(context_loss, no_target_loss),
                "D_ci_low": d_low,
                "D_ci_high": d_high,
                # Mean loss per predicted position, with and without the visible target.
                "loss_context": float(context_loss.sum() / n_predicted.sum()),
                "loss_no_target": float(no_target_loss.sum() / n_predicted.sum()),
                "M": float(src_len[measured].mean()),
                "N": float(tgt_len[measured].mean()),
                "M_over_N": float((src_len / tgt_len)[measured].mean()),
                "sentences": int(measured.sum()),
                "predicted": int(n_predicted.sum()),
            }
        )
        per_head = point.per_head  # [S, layers, heads]
        for k in range(n_layers):
            for h in range(n_heads):
                head_rows.append(
                    {
                        **labels,
                        "p": float(p),
                        "layer": k,
                        "head": h,
                        "R": ratio_over_corpus(per_head[:, k, h]),
                    }
                )
        log.info(
            "p=%.2f: R=%.4f [%.4f, %.4f], T=%.4f, D=%.4f",
            p,
            rows[-1]["R"],
            low,
            high,
            rows[-1]["T"],
            rows[-1]["D"],
        )
    table = pd.DataFrame(rows)
    write_csv(table, ratio_csv)
    write_csv(pd.DataFrame(head_rows), heads_csv)
    if sentences_csv is not None:
        # Four significant digits: R and T are means of attention weights, far noisier than that.
        write_csv(pd.concat(sentence_tables, ignore_index=True), sentences_csv, digits=4)
    return table
