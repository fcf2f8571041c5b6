"""Length-bucketed batches of a prepared split, a pure function of (seed, epoch).

The batches of an epoch are built as in fairseq: the sentences are put in a random order, then
stably sorted by size (so sentences of equal size come in a fresh random order every epoch),
cut greedily into batches under the budget, and the batches are shuffled. Everything random
comes from ``numpy.random.default_rng([seed, epoch])``, so the trainer resumes mid-epoch by
recomputing the epoch's batches and skipping the k it has done. The number of batches is the
same in every epoch (the sorted size sequence, and so the greedy cuts, never change).

Budget: a batch of B sentences whose largest size is S costs ``B * S`` padded positions (fairseq's
``max_tokens`` rule); it must not exceed `max_tokens`, and B must not exceed `max_sentences`.
The size of a sentence is ``max(src_len, tgt_len)`` (the padded length of the longer side, as in
fairseq) or, with ``measure="sum"``, ``src_len + tgt_len`` (models that run one sequence over
``[source; target]``, like CoMMA). Mel sides count frames. The budget is for the global batch,
the one an optimizer step sees; under DistributedDataParallel each rank takes
:func:`rank_share` of it.

Collation: token sides (int32 ids without eos in the split) become int64 ``[B, L]`` padded with
the pad id 0; mel sides (float32 ``[T, n_mels]``) become float32 ``[B, T, n_mels]`` padded with
zeros; lengths are int64 ``[B]``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from comma.data.packed import Split
from comma.data.vocab import PAD, SPECIALS

PAD_ID = SPECIALS.index(PAD)  # 0
MEASURES = ("max", "sum")

__all__ = [
    "Batch",
    "TeacherTargets",
    "teacher_targets_of",
    "BatchPlan",
    "collate",
    "make_batches",
    "pad_sequences",
    "rank_share",
    "sentence_sizes",
]


@dataclass(frozen=True)
class TeacherTargets:
    """The AR teacher's alignment targets of a batch's sentences (built by
    :meth:`comma.alignment.store.TeacherAlignment.batch_targets`), padded to the batch's longest
    teacher lengths. They travel in the :class:`Batch`, like its tokens, to the constrained
    models' losses, which ask for them at their own padded shape."""

    src_lengths: torch.Tensor  # [B] the teacher's source positions (after its pre-net)
    tgt_lengths: torch.Tensor  # [B] the teacher's target tokens or frames
    indices: torch.Tensor  # [B] the sentences' positions in the split, for messages
    attention: torch.Tensor | None = None  # [B, T, M] float32, rows sum to 1 (eq. 6-8 targets)
    windows: torch.Tensor | None = None  # [B, T, M] bool, the ASR window (section 5.1)
    token_durations: torch.Tensor | None = None  # [B, M] int64, frames per phoneme (TTS)
    # [B, L, H, T, M] float32: every decoder layer and head of the teacher, rows sum to 1
    # (the per-head targets of eq. 6 and 8)
    head_attention: torch.Tensor | None = None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TeacherTargets:
        return TeacherTargets(
            *(
                None if t is None else t.to(device, non_blocking=non_blocking)
                for t in (
                    self.src_lengths,
                    self.tgt_lengths,
                    self.indices,
                    self.attention,
                    self.windows,
                    self.token_durations,
                    self.head_attention,
                )
            )
        )

    def check_lengths(self, src_len: torch.Tensor, tgt_len: torch.Tensor) -> None:
        """Raise unless the student's lengths ``[B]`` equal the teacher's, sentence by sentence."""
        for name, mine, theirs in (
            ("source", self.src_lengths, src_len),
            ("target", self.tgt_lengths, tgt_len),
        ):
            theirs = theirs.to(mine.device, mine.dtype)
            if not torch.equal(mine, theirs):
                row = int((mine != theirs).nonzero()[0, 0])
                raise ValueError(
                    f"sentence {int(self.indices[row])}: the teacher's alignment has {name} length "
                    f"{int(mine[row])} but the student has {int(theirs[row])}; align the same "
                    "corpus, with the same pre-net subsampling, as the student trains on"
                )

    def _padded(self, name: str, tensor: torch.Tensor | None, shape: tuple[int, ...]):
        if tensor is None:
            raise ValueError(f"the batch's teacher targets hold no {name}")
        if any(have > want for have, want in zip(tensor.shape[1:], shape, strict=True)):
            raise ValueError(
                f"the teacher's {name} {tuple(tensor.shape[1:])} is beyond the student's batch "
                f"{shape}: the student's corpus or pre-net does not match the teacher's"
            )
        pads = []
        for have, want in reversed(list(zip(tensor.shape[1:], shape, strict=True))):
            pads += [0, want - have]
        return torch.nn.functional.pad(tensor, pads)

    def attention_map(self, tgt_max: int, src_max: int) -> torch.Tensor:
        """float32 ``[B, tgt_max, src_max]``: each sentence's teacher map, zero padding."""
        return self._padded("attention", self.attention, (tgt_max, src_max))

    def constraint_maps(self, kind: str, tgt_max: int, src_max: int) -> torch.Tensor:
        """The attention constraint's targets of `kind`: "head_attention", every teacher
        layer's and head's map ``[B, L, H, tgt_max, src_max]``, or "attention", the one map
        ``[B, tgt_max, src_max]``."""
        if kind == "head_attention":
            return self.head_attention_maps(tgt_max, src_max)
        if kind == "attention":
            return self.attention_map(tgt_max, src_max)
        raise ValueError(f"unknown attention target {kind!r}: head_attention or attention")

    def head_attention_maps(self, tgt_max: int, src_max: int) -> torch.Tensor:
        """float32 ``[B, L, H, tgt_max, src_max]``: every teacher layer's and head's map, zero
        padding."""
        if self.head_attention is None:
            raise ValueError("the batch's teacher targets hold no head_attention")
        layers_heads = tuple(self.head_attention.shape[1:3])
        return self._padded(
            "head_attention", self.head_attention, (*layers_heads, tgt_max, src_max)
        )

    def window(self, tgt_max: int, src_max: int) -> torch.Tensor:
        """bool ``[B, tgt_max, src_max]``: the ASR attention window, False padding."""
        return self._padded("windows", self.windows, (tgt_max, src_max))

    def durations(self, src_max: int) -> torch.Tensor:
        """int64 ``[B, src_max]``: phoneme durations in frames, zero padding."""
        return self._padded("durations", self.token_durations, (src_max,))


@dataclass(frozen=True)
class Batch:
    src: torch.Tensor  # [B, S] int64 ids (pad 0) or [B, S, n_mels] float32 frames (pad 0.0)
    src_lengths: torch.Tensor  # [B] int64
    tgt: torch.Tensor  # [B, T] int64 ids or [B, T, n_mels] float32 frames
    tgt_lengths: torch.Tensor  # [B] int64
    indices: torch.Tensor  # [B] int64, the sentences' positions in the split
    teacher: TeacherTargets | None = None  # the teacher's alignment targets (constrained runs)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(
            *(
                t.to(device, non_blocking=non_blocking)
                for t in (self.src, self.src_lengths, self.tgt, self.tgt_lengths, self.indices)
            ),
            teacher=None if self.teacher is None else self.teacher.to(device, non_blocking),
        )

    def with_teacher(self, teacher: TeacherTargets | None) -> Batch:
        return dataclasses.replace(self, teacher=teacher)

    @property
    def num_src_tokens(self) -> int:
        """Real (non-padding) source positions: tokens or frames."""
        return int(self.src_lengths.sum())

    @property
    def num_tgt_tokens(self) -> int:
        """Real (non-padding) target positions: tokens or frames."""
        return int(self.tgt_lengths.sum())


def teacher_targets_of(
    batch: Batch, who: str, src_len: torch.Tensor, tgt_len: torch.Tensor
) -> TeacherTargets:
    """`batch`'s teacher targets for a constrained model's loss (`who`, for the message),
    checked to be there and to match the student's lengths ``[B]``."""
    if batch.teacher is None:
        raise RuntimeError(
            f"{who} needs the teacher alignment's targets in its batches: train it through "
            "comma.stages.training.train_model with the alignment, or attach "
            "TeacherAlignment.batch_targets(batch.indices, ...) with batch.with_teacher"
        )
    batch.teacher.check_lengths(src_len, tgt_len)
    return batch.teacher


def pad_sequences(
    sequences: Sequence[torch.Tensor], pad_value: float = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences ``[L_k]`` or ``[L_k, F]`` -> padded ``[B, L_max(, F)]`` and lengths ``[B]``.

    Integer ids become int64 (what embeddings and losses index with); frames keep their dtype.
    """
    if not sequences:
        raise ValueError("cannot pad an empty list of sequences")
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.int64)
    first = sequences[0]
    dtype = first.dtype if first.dtype.is_floating_point else torch.int64
    padded = torch.full(
        (len(sequences), int(lengths.max()), *first.shape[1:]), pad_value, dtype=dtype
    )
    for k, seq in enumerate(sequences):
        padded[k, : len(seq)] = seq
    return padded, lengths


def collate(split: Split, indices: Sequence[int] | np.ndarray | torch.Tensor) -> Batch:
    """The sentences `indices` of `split`, padded (ids with 0, frames with 0.0)."""
    indices = torch.as_tensor(np.asarray(indices, dtype=np.int64))
    order = indices.tolist()
    src, src_lengths = pad_sequences([split.src[k] for k in order], PAD_ID)
    tgt, tgt_lengths = pad_sequences([split.tgt[k] for k in order], PAD_ID)
    return Batch(src, src_lengths, tgt, tgt_lengths, indices)


def sentence_sizes(split: Split, measure: str = "max") -> np.ndarray:
    """int64 ``[n]``: each sentence's size for the budget, ``max`` or ``sum`` of its sides."""
    if measure not in MEASURES:
        raise ValueError(f"unknown size measure {measure!r}, choose from {MEASURES}")
    src, tgt = split.src.lengths.numpy(), split.tgt.lengths.numpy()
    return (np.maximum(src, tgt) if measure == "max" else src + tgt).astype(np.int64)


def make_batches(
    sizes: np.ndarray,
    max_tokens: int | None = None,
    max_sentences: int | None = None,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
) -> list[np.ndarray]:
    """Cut sentences with `sizes` ``[n]`` into batches of sentence indices (int64 arrays).

    With `shuffle`, the result is a pure function of (sizes, budget, seed, epoch); without, the
    batches follow increasing size (ties by index), e.g. for evaluation. Every sentence is in
    exactly one batch. Raises ValueError if a single sentence exceeds `max_tokens`."""
    if max_tokens is None and max_sentences is None:
        raise ValueError("give a budget: max_tokens and/or max_sentences")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if max_sentences is not None and max_sentences < 1:
        raise ValueError(f"max_sentences must be >= 1, got {max_sentences}")
    sizes = np.asarray(sizes, dtype=np.int64)
    if max_tokens is not None and sizes.size and int(sizes.max()) > max_tokens:
        k = int(sizes.argmax())
        raise ValueError(
            f"sentence {k} has size {int(sizes[k])} > max_tokens {max_tokens}: raise max_tokens "
            "or filter long sentences out"
        )
    if shuffle:
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(sizes))
        order = order[np.argsort(sizes[order], kind="stable")]  # by size, ties in random order
    else:
        order = np.argsort(sizes, kind="stable")
    batches, start, largest = [], 0, 0
    for pos, k in enumerate(order):
        count = pos - start + 1
        largest_if_added = max(largest, int(sizes[k]))
        over_tokens = max_tokens is not None and count * largest_if_added > max_tokens
        over_sentences = max_sentences is not None and count > max_sentences
        if count > 1 and (over_tokens or over_sentences):
            batches.append(order[start:pos])
            start, largest_if_added = pos, int(sizes[k])
        largest = largest_if_added
    if len(order):
        batches.append(order[start:])
    if shuffle:
        batches = [batches[k] for k in rng.permutation(len(batches))]
    return [np.ascontiguousarray(b, dtype=np.int64) for b in batches]


def rank_share(indices: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """The part of a global batch that `rank` of `world_size` processes computes.

    Strided, so every rank gets sentences of similar size (batches are sorted by size). May be
    empty when the batch has fewer sentences than ranks."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    return indices[rank::world_size]


class BatchPlan:
    """The batches of one split under a budget, per epoch; see the module docstring."""

    def __init__(
        self,
        split: Split,
        max_tokens: int | None = None,
        max_sentences: int | None = None,
        seed: int = 0,
        shuffle: bool = True,
        measure: str = "max",
        teacher_targets: Callable[[torch.Tensor], TeacherTargets] | None = None,
        order_of: Split | None = None,
    ):
        """`teacher_targets`: given a batch's sentence indices, the teacher's targets that
        travel with it (a constrained run's alignment). `order_of`: a split of the same
        sentences (the same ids in the same order) whose sizes plan the batches instead of
        `split`'s: a KD run planned by its rawkept twin sees the same sentences in the same
        batches in the same order as the twin, so that the targets are the only difference
        (the budget then holds for the twin's sizes)."""
        if len(split) == 0:
            raise ValueError("cannot batch an empty split")
        self.split = split
        self.teacher_targets = teacher_targets
        self.max_tokens = max_tokens
        self.max_sentences = max_sentences
        self.seed = seed
        self.shuffle = shuffle
        if order_of is not None and list(order_of.ids) != list(split.ids):
            raise ValueError(
                "the split that plans the batches holds other sentences (or another order) than "
                f"the training split: {len(order_of)} vs {len(split)} sentences"
            )
        # The plan's sizes; the budget check also covers the split's own (a sentence alone
        # must fit, whoever plans).
        self.sizes = sentence_sizes(split if order_of is None else order_of, measure)
        largest = np.maximum(self.sizes, sentence_sizes(split, measure))
        if max_tokens is not None and int(largest.max()) > max_tokens:
            k = int(largest.argmax())
            raise ValueError(
                f"sentence {split.ids[k]!r} has size {int(largest[k])} ({measure} of its "
                f"sides) > max_tokens {max_tokens}: raise max_tokens or filter it out"
            )
        # The count is the same in every epoch (see the module docstring).
        self._num_batches = len(self.epoch_batches(0))

    def __len__(self) -> int:
        """Batches per epoch."""
        return self._num_batches

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        return make_batches(
            self.sizes, self.max_tokens, self.max_sentences, self.seed, epoch, self.shuffle
        )

    def collate(self, indices: np.ndarray) -> Batch:
        batch = collate(self.split, indices)
        if self.teacher_targets is not None:
            batch = batch.with_teacher(self.teacher_targets(batch.indices))
        return batch

    def iterate(
        self, epoch: int, start: int = 0, rank: int = 0, world_size: int = 1
    ) -> Iterator[Batch]:
        """This rank's share of batches ``start, start + 1, ...`` of `epoch` (empty shares are
        skipped; the trainer handles them itself)."""
        for indices in self.epoch_batches(epoch)[start:]:
            share = rank_share(indices, rank, world_size)
            if len(share):
                yield self.collate(share)
