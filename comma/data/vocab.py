"""Token vocabularies with the special symbols every model of the project shares."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from comma.data.lines import read_lines
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
        counts = list(counts) if counts is not None else [0] * len(symbols)
        if len(counts) != len(symbols):
            raise ValueError(f"{len(symbols)} symbols but {len(counts)} counts")
        # A special met in the data (a literal "<unk>") keeps its id; its count is dropped
        # with it, so the counts stay aligned with the symbols they belong to.
        kept = [(s, c) for s, c in zip(symbols, counts, strict=True) if s not in SPECIALS]
        self.symbols = list(SPECIALS) + [s for s, _ in kept]
        self.counts = [c for _, c in kept]
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
        """A `dict.txt` (``symbol count`` per line); a malformed line, a repeated symbol or a
        listed special symbol (they are implicit: ids 0-4) raise InputError naming the line."""
        path = Path(path)
        symbols, counts, first_seen = [], [], {}
        for lineno, line in enumerate(read_lines(path), 1):
            parts = line.split(" ")
            if len(parts) != 2 or not parts[1].isdigit():
                raise InputError(path, f"expected 'symbol count', got {line!r}", lineno)
            symbol = parts[0]
            if symbol in SPECIALS:
                raise InputError(
                    path,
                    f"{symbol!r} is a special symbol, implicit in the dict format (ids 0-4 are "
                    f"{', '.join(SPECIALS)}): a dict lists only the other symbols",
                    lineno,
                )
            if symbol in first_seen:
                raise InputError(
                    path, f"symbol {symbol!r} repeats line {first_seen[symbol]}", lineno
                )
            first_seen[symbol] = lineno
            symbols.append(symbol)
            counts.append(int(parts[1]))
        return cls(symbols, counts)
