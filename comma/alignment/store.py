"""The alignment store: one training corpus's alignments from its AR teacher, saved by the
alignment stage (:mod:`comma.stages.align`) and read by the NAR models' and CoMMA's AC
training, which look each batch's sentences up in it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from comma.alignment.calculators import window_mask
from comma.data.batching import TeacherTargets
from comma.data.packed import PackedSequences
from comma.errors import InputError
from comma.io import torch_load, torch_save

__all__ = ["ALIGNMENT_FORMAT", "ATTENTION_CHOICES", "TeacherAlignment"]


# v2: every decoder layer's and head's map (head_maps), for the per-head constraint
ALIGNMENT_FORMAT = "comma-alignment-v2"
ATTENTION_CHOICES = ("diagonal_head", "last_layer")
TARGET_KINDS = ("attention", "window", "durations", "head_attention")


def _gather_padded(packed: PackedSequences, indices: torch.Tensor, max_len: int) -> torch.Tensor:
    """Sequences `indices` of `packed` zero-padded to ``[B, max_len]`` (same dtype)."""
    out = packed.values.new_zeros(len(indices), max_len)
    for row, k in enumerate(indices.tolist()):
        seq = packed[k]
        out[row, : len(seq)] = seq
    return out


@dataclass(frozen=True)
class TeacherAlignment:
    """One training corpus's alignments from its AR teacher, sentence k = the corpus's k-th.

    Lengths are the teacher's: `tgt_lengths` target tokens (EOS excluded) or mel frames,
    `src_lengths` encoder positions after its pre-net (ASR: subsampled frames). A student
    batch's targets travel in the batch (:meth:`batch_targets`, attached by the trainer); the
    student's own lengths must match the teacher's, or its loss raises.

    Storage: `head_maps` holds each sentence's maps of every teacher decoder layer and head,
    ``[L, H, T_b, M_b]`` flattened in float16 (2 bytes a cell; `head_shape` = (L, H)): the
    per-head targets of eq. 6 and 8 (CoMMA's and NAT's ``ac_mode: head``). `maps` holds the
    one chosen map ``[T_b, M_b]`` (NMT, ASR; the broadcast mode's target). TTS stores no
    chosen map: its broadcast target is the hard alignment FastSpeech trains on, rebuilt from
    the durations (frame t -> the phoneme it belongs to). Durations are int32 per phoneme,
    expected positions int32 per target token (1-based, section 5.1)."""

    task: str
    src_lengths: torch.Tensor  # [n] int64
    tgt_lengths: torch.Tensor  # [n] int64
    focus_rate: torch.Tensor  # [n] float32, of the map the durations/expectations come from
    source: str  # which teacher attention: "layer L head H" or "last layer mean"
    maps: PackedSequences | None = None  # float16 [T_b * M_b] per sentence (nmt, asr)
    token_durations: PackedSequences | None = None  # int32 [M_b] (tts)
    expected: PackedSequences | None = None  # int32 [T_b] (asr)
    head_maps: PackedSequences | None = None  # float16 [L * H * T_b * M_b] per sentence
    head_shape: tuple[int, int] | None = None  # (L, H) of head_maps

    def __len__(self) -> int:
        return len(self.src_lengths)

    def _rows(self, indices: torch.Tensor, tgt_max: int, src_max: int) -> torch.Tensor:
        indices = torch.as_tensor(indices, dtype=torch.long).cpu()
        if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= len(self)):
            raise IndexError(f"sentence indices outside 0..{len(self) - 1} of the alignment")
        too_long = (self.tgt_lengths[indices] > tgt_max) | (self.src_lengths[indices] > src_max)
        if bool(too_long.any()):
            k = int(indices[too_long.nonzero()[0, 0]])
            raise ValueError(
                f"alignment of sentence {k} is {int(self.tgt_lengths[k])} x "
                f"{int(self.src_lengths[k])} (target x source), beyond the student's batch "
                f"{tgt_max} x {src_max}: the student's corpus or pre-net does not match the "
                "teacher's"
            )
        return indices

    def batch_targets(self, indices: torch.Tensor, kinds: tuple[str, ...]) -> TeacherTargets:
        """The targets `kinds` ("attention", "window", "durations") of sentences `indices`,
        padded to their longest teacher lengths, to travel in their training batch."""
        indices = torch.as_tensor(indices, dtype=torch.long).cpu()
        unknown = set(kinds) - set(TARGET_KINDS)
        if unknown:
            raise ValueError(
                f"unknown teacher targets {sorted(unknown)}; choose from {TARGET_KINDS}"
            )
        t_max, m_max = int(self.tgt_lengths[indices].max()), int(self.src_lengths[indices].max())
        return TeacherTargets(
            self.src_lengths[indices],
            self.tgt_lengths[indices],
            indices,
            attention=self.attention(indices, t_max, m_max) if "attention" in kinds else None,
            windows=self.window(indices, t_max, m_max) if "window" in kinds else None,
            token_durations=self.durations(indices, m_max) if "durations" in kinds else None,
            head_attention=(
                self.head_attention(indices, t_max, m_max) if "head_attention" in kinds else None
            ),
        )

    def head_attention(self, indices: torch.Tensor, tgt_max: int, src_max: int) -> torch.Tensor:
        """float32 ``[B, L, H, tgt_max, src_max]``: every teacher layer's and head's map of
        sentences `indices`, rows summing to 1 over the valid source, zero padding."""
        if self.head_maps is None or self.head_shape is None:
            raise ValueError(
                f"the {self.task} alignment stores no per-head maps (made by an older "
                "version): re-run extract_alignment, or set ac_mode: broadcast"
            )
        indices = self._rows(indices, tgt_max, src_max)
        layers, heads = self.head_shape
        out = torch.zeros(len(indices), layers, heads, tgt_max, src_max)
        for row, k in enumerate(indices.tolist()):
            t, m = int(self.tgt_lengths[k]), int(self.src_lengths[k])
            cell = self.head_maps[k].float().view(layers, heads, t, m)
            out[row, :, :, :t, :m] = cell / cell.sum(-1, keepdim=True).clamp_min(1e-12)
        return out

    def attention(self, indices: torch.Tensor, tgt_max: int, src_max: int) -> torch.Tensor:
        """float32 ``[B, tgt_max, src_max]``: each sentence's teacher map, rows summing to 1
        over its valid source, zero padding."""
        indices = self._rows(indices, tgt_max, src_max)
        out = torch.zeros(len(indices), tgt_max, src_max)
        for row, k in enumerate(indices.tolist()):
            t, m = int(self.tgt_lengths[k]), int(self.src_lengths[k])
            if self.maps is not None:
                cell = self.maps[k].float().view(t, m)
                out[row, :t, :m] = cell / cell.sum(-1, keepdim=True).clamp_min(1e-12)
            else:  # hard alignment from durations: frame t -> its phoneme
                owner = torch.repeat_interleave(torch.arange(m), self.token_durations[k].long())
                out[row, torch.arange(t), owner] = 1.0
        return out

    def window(self, indices: torch.Tensor, tgt_max: int, src_max: int) -> torch.Tensor:
        """bool ``[B, tgt_max, src_max]``: the ASR attention window of section 5.1
        (:func:`window_mask`) from the stored expected positions."""
        if self.expected is None:
            raise ValueError(f"the {self.task} alignment has no expected positions (ASR only)")
        indices = self._rows(indices, tgt_max, src_max)
        expected = _gather_padded(self.expected, indices, tgt_max).long()
        return window_mask(
            expected, self.src_lengths[indices], self.tgt_lengths[indices], max_src_len=src_max
        )

    def durations(self, indices: torch.Tensor, src_max: int) -> torch.Tensor:
        """long ``[B, src_max]``: phoneme durations in frames, zero padding (TTS)."""
        if self.token_durations is None:
            raise ValueError(f"the {self.task} alignment has no durations (TTS only)")
        indices = torch.as_tensor(indices, dtype=torch.long).cpu()
        if len(indices) and int(self.src_lengths[indices].max()) > src_max:
            raise ValueError(f"durations longer than the student's {src_max} source positions")
        return _gather_padded(self.token_durations, indices, src_max).long()

    def select(self, indices) -> TeacherAlignment:
        """The alignments of sentences `indices`, in that order (e.g. a filtered corpus)."""
        indices = [int(k) for k in indices]
        pick = torch.tensor(indices, dtype=torch.long)
        return TeacherAlignment(
            self.task,
            self.src_lengths[pick],
            self.tgt_lengths[pick],
            self.focus_rate[pick],
            self.source,
            *(
                None if packed is None else packed.select(indices)
                for packed in (self.maps, self.token_durations, self.expected, self.head_maps)
            ),
            head_shape=self.head_shape,
        )

    def save(self, path: str | Path) -> None:
        packed = {
            name: None if value is None else value.to_dict()
            for name, value in (
                ("maps", self.maps),
                ("token_durations", self.token_durations),
                ("expected", self.expected),
                ("head_maps", self.head_maps),
            )
        }
        torch_save(
            {
                "format": ALIGNMENT_FORMAT,
                "task": self.task,
                "source": self.source,
                "src_lengths": self.src_lengths,
                "tgt_lengths": self.tgt_lengths,
                "focus_rate": self.focus_rate,
                "head_shape": None if self.head_shape is None else list(self.head_shape),
                **packed,
            },
            path,
        )

    @classmethod
    def load(cls, path: str | Path) -> TeacherAlignment:
        """Memory-mapped: a training job reads its batches' maps, not the whole store."""
        saved = torch_load(path, mmap=True)
        if not isinstance(saved, dict) or saved.get("format") != ALIGNMENT_FORMAT:
            raise InputError(path, f"not a teacher alignment file (expected {ALIGNMENT_FORMAT})")
        packed = {
            name: None if saved.get(name) is None else PackedSequences.from_dict(saved[name], path)
            for name in ("maps", "token_durations", "expected", "head_maps")
        }
        head_shape = saved.get("head_shape")
        return cls(
            saved["task"],
            saved["src_lengths"],
            saved["tgt_lengths"],
            saved["focus_rate"],
            saved["source"],
            **packed,
            head_shape=None if head_shape is None else tuple(int(n) for n in head_shape),
        )
