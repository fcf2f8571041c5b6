"""Text preparation shared by NMT and ASR: Moses normalization/tokenization and joint BPE.

Thin wrappers around sacremoses and subword-nmt, fixed to the behaviour of fairseq's
`examples/translation/prepare-iwslt14.sh` (Moses tokenizer with its default escaping, BPE
with the `@@ ` separator), so our corpora are comparable with fairseq's.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path

from sacremoses import MosesPunctNormalizer, MosesTokenizer
from subword_nmt.apply_bpe import BPE
from subword_nmt.learn_bpe import learn_bpe as _subword_nmt_learn_bpe

from comma.io import atomic_path

BPE_SEPARATOR = "@@"


class MosesPipeline:
    """Punctuation normalization, tokenization and optional lowercasing for one language."""

    def __init__(self, lang: str, lowercase: bool):
        self.normalizer = MosesPunctNormalizer(lang=lang)
        self.tokenizer = MosesTokenizer(lang=lang)
        self.lowercase = lowercase

    def __call__(self, line: str) -> list[str]:
        text = self.normalizer.normalize(line.strip())
        tokens = self.tokenizer.tokenize(text, escape=True)
        if self.lowercase:
            tokens = [t.lower() for t in tokens]
        return tokens


def learn_bpe(tokenized: Iterable[Sequence[str]], merges: int, codes_path: str | Path) -> None:
    """Learn `merges` BPE merge operations on tokenized sentences (joint: pass both sides)."""
    text = io.StringIO("".join(" ".join(tokens) + "\n" for tokens in tokenized))
    out = io.StringIO()
    _subword_nmt_learn_bpe(text, out, merges, min_frequency=2)
    with atomic_path(codes_path) as tmp:
        tmp.write_text(out.getvalue(), encoding="utf-8")


class BpeSegmenter:
    """Applies learned BPE codes to tokenized sentences; `join` undoes it."""

    def __init__(self, codes_path: str | Path):
        with open(codes_path, encoding="utf-8") as f:
            self.bpe = BPE(f, separator=BPE_SEPARATOR)

    def __call__(self, tokens: Sequence[str]) -> list[str]:
        return self.bpe.segment_tokens(list(tokens))

    @staticmethod
    def join(pieces: Sequence[str]) -> list[str]:
        """BPE pieces back to tokens (fairseq's `--remove-bpe`)."""
        text = " ".join(pieces).replace(f"{BPE_SEPARATOR} ", "")
        if text.endswith(BPE_SEPARATOR):
            text = text[: -len(BPE_SEPARATOR)]
        return text.split()
