"""Token vocabularies with the special symbols every model of the project shares."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from comma.errors import InputError
from comma.io import atomic_path

PAD, BOS, EOS, UNK, MASK = "<pad>", "<s>", "</s>", "<unk>", "<mask>"
SPECIALS = (PAD, BOS, EOS, UNK, MASK)


class Vocabulary:
    """Symbols <-> ids. Ids 0-4 are the specials (pad, bos, eos, unk, mask), then by frequency.

    Saved in fairseq's `dict.txt` format (`symbol count` per line, specials implicit), so a
    vocabulary can be read by eye and by fairseq alike.
    """

    def __init__(self, symbols: Sequence[str], counts: Sequence[int] | None = None):
        self.symbols = list(SPECIALS) + [s for s in symbols if s not in SPECIALS]
        self.counts = list(counts) if counts is not None else [0] * (len(self.symbols) - 5)
        self.index = {s: k for k, s in enumerate(self.symbols)}
        if len(self.index) != len(self.symbols):
            raise ValueError("vocabulary symbols are not unique")

    pad = property(lambda self: 0)
    bos = property(lambda self: 1)
    eos = property(lambda self: 2)
    unk = property(lambda self: 3)
    mask = property(lambda self: 4)

    def __len__(self) -> int:
        return len(self.symbols)

    def __contains__(self, symbol: str) -> bool:
        return symbol in self.index

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]]) -> Vocabulary:
        counter = Counter(token for sentence in sentences for token in sentence)
        # Ties broken by symbol so that the same corpus always gives the same ids.
        ranked = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
        return cls([s for s, _ in ranked], [c for _, c in ranked])

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return [self.index.get(t, self.unk) for t in tokens]

    def decode(self, ids: Iterable[int], strip_specials: bool = True) -> list[str]:
        out = []
        for k in ids:
            k = int(k)
            if strip_specials and k < len(SPECIALS):
                if k == self.eos:
                    break
                continue
            out.append(self.symbols[k])
        return out

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for symbol, count in zip(self.symbols[len(SPECIALS) :], self.counts, strict=True):
                f.write(f"{symbol} {count}\n")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        path = Path(path)
        symbols, counts = [], []
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                parts = line.rstrip("\n").split(" ")
                if len(parts) != 2 or not parts[1].isdigit():
                    raise InputError(
                        path, f"expected 'symbol count', got {line.rstrip()!r}", lineno
                    )
                symbols.append(parts[0])
                counts.append(int(parts[1]))
        return cls(symbols, counts)
