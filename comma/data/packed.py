"""Packed corpora: every prepared split is one tensor per side plus offsets.

A split file `work/data/{task}/{split}.pt` holds, for the source and the target side, the
concatenation of all sequences (`values`, token ids `[total]` int32 or log-mel frames
`[total, n_mels]` float32) and `offsets` `[n + 1]` int64, so sequence k is
`values[offsets[k]:offsets[k + 1]]`. Utterance/sentence ids travel with it. Files load with
`torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from comma.errors import InputError
from comma.io import torch_load, torch_save

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class PackedSequences:
    values: torch.Tensor  # [total] token ids, or [total, n_mels] frames
    offsets: torch.Tensor  # [n + 1] int64, offsets[0] == 0, offsets[-1] == total

    @classmethod
    def from_list(cls, sequences: Sequence[torch.Tensor], dtype: torch.dtype | None = None):
        if not sequences:
            raise ValueError("cannot pack an empty list of sequences")
        lengths = torch.tensor([len(s) for s in sequences], dtype=torch.int64)
        offsets = torch.zeros(len(sequences) + 1, dtype=torch.int64)
        offsets[1:] = torch.cumsum(lengths, 0)
        values = torch.cat([torch.as_tensor(s) for s in sequences])
        if dtype is not None:
            values = values.to(dtype)
        return cls(values.contiguous(), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, k: int) -> torch.Tensor:
        return self.values[self.offsets[k] : self.offsets[k + 1]]

    @property
    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    @property
    def is_tokens(self) -> bool:
        return self.values.dim() == 1

    def first_nonfinite(self) -> tuple[int, int] | None:
        """(sequence, position in it) of the first NaN or inf value; None if all are finite
        (token ids always are)."""
        if not self.values.dtype.is_floating_point:
            return None
        bad = ~torch.isfinite(self.values)
        if bad.dim() > 1:
            bad = bad.flatten(1).any(1)
        if not bool(bad.any()):
            return None
        row = int(bad.nonzero()[0, 0])
        k = int(torch.searchsorted(self.offsets, torch.tensor(row), right=True)) - 1
        return k, row - int(self.offsets[k])

    def select(self, indices: Sequence[int]) -> PackedSequences:
        return PackedSequences.from_list([self[k] for k in indices], dtype=self.values.dtype)

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {"values": self.values, "offsets": self.offsets}

    @classmethod
    def from_dict(cls, d: dict[str, torch.Tensor], where: str | Path = "<dict>"):
        try:
            packed = cls(d["values"], d["offsets"])
        except KeyError as err:
            raise InputError(where, f"packed sequences lack the key {err}") from None
        if packed.offsets.dim() != 1 or int(packed.offsets[0]) != 0:
            raise InputError(where, "offsets must be 1-D and start at 0")
        if int(packed.offsets[-1]) != packed.values.shape[0]:
            raise InputError(
                where,
                f"offsets end at {int(packed.offsets[-1])} but there are "
                f"{packed.values.shape[0]} values",
            )
        if bool((packed.lengths < 0).any()):
            raise InputError(where, "offsets are not non-decreasing")
        return packed


@dataclass(frozen=True)
class Split:
    """One split of a prepared corpus: aligned source and target sequences with their ids."""

    src: PackedSequences
    tgt: PackedSequences
    ids: list[str]

    def __post_init__(self):
        if not (len(self.src) == len(self.tgt) == len(self.ids)):
            raise ValueError(
                f"split sides differ in size: src {len(self.src)}, tgt {len(self.tgt)}, "
                f"ids {len(self.ids)}"
            )

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, indices: Sequence[int]) -> Split:
        return Split(
            self.src.select(indices), self.tgt.select(indices), [self.ids[k] for k in indices]
        )


def _check_finite(split: Split, path: str | Path, hint: str = "") -> None:
    """NaN or inf in a float side would only show as a non-finite loss steps later: name the
    file and the sentence now."""
    for side, packed in (("source", split.src), ("target", split.tgt)):
        found = packed.first_nonfinite()
        if found is not None:
            k = found[0]
            raise InputError(
                path, f"{side} of {split.ids[k]!r} (sentence {k}) holds NaN or inf values{hint}"
            )


def _check_nonempty(split: Split, path: str | Path) -> None:
    for side, packed in (("source", split.src), ("target", split.tgt)):
        empty = (packed.lengths == 0).nonzero()
        if len(empty):
            k = int(empty[0, 0])
            raise InputError(
                path,
                f"{split.ids[k]!r} (sentence {k}) has an empty {side}, which no model can read "
                f"({len(empty)} such sentence(s)): prepare the corpus again",
            )


def save_split(path: str | Path, split: Split) -> None:
    """Write `split` to `path` (a prepared split's format); float values must be finite."""
    _check_finite(split, path)
    torch_save(
        {"src": split.src.to_dict(), "tgt": split.tgt.to_dict(), "ids": list(split.ids)}, path
    )


def load_split(path: str | Path) -> Split:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "prepared split not found (run the prepare rule first)")
    data = torch_load(path)
    try:
        split = Split(
            PackedSequences.from_dict(data["src"], path),
            PackedSequences.from_dict(data["tgt"], path),
            list(data["ids"]),
        )
        _check_nonempty(split, path)
        # written finite (save_split checks), so damaged since: say so before any training
        _check_finite(split, path, ": the file changed after it was written; prepare it again")
        return split
    except KeyError as err:
        raise InputError(path, f"not a prepared split: no key {err}") from None
    except ValueError as err:
        if isinstance(err, InputError):
            raise
        raise InputError(path, str(err)) from None


def length_stats(lengths: torch.Tensor) -> dict[str, float | int]:
    lengths = lengths.to(torch.float64)
    return {
        "total": int(lengths.sum()),
        "mean": round(float(lengths.mean()), 3),
        "min": int(lengths.min()),
        "max": int(lengths.max()),
        "p95": int(torch.quantile(lengths, 0.95)),
    }


def split_stats(split: Split) -> dict:
    """Counts and lengths of one split, as written to `stats.json` and read by the report."""
    return {
        "sequences": len(split),
        "src_len": length_stats(split.src.lengths),
        "tgt_len": length_stats(split.tgt.lengths),
    }


def prepared_corpus_sizes(data_dir: str | Path, train_split: Split | None = None) -> dict:
    """What a model needs to know of a prepared corpus `work/data/{task}`: `src_vocab` /
    `tgt_vocab` for its token sides (from dict.src.txt / dict.tgt.txt) and `n_mels` for a
    mel side (from the training split, loaded unless given)."""
    from comma.data.vocab import Vocabulary

    data_dir = Path(data_dir)
    sizes: dict[str, int] = {}
    for side in ("src", "tgt"):
        dictionary = data_dir / f"dict.{side}.txt"
        if dictionary.is_file():
            sizes[f"{side}_vocab"] = len(Vocabulary.load(dictionary))
    if train_split is None:
        train_split = load_split(data_dir / "train.pt")
    for side in (train_split.src, train_split.tgt):
        if not side.is_tokens:
            sizes["n_mels"] = int(side.values.shape[1])
    return sizes
