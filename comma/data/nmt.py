"""IWSLT14 De-En preparation, step for step as fairseq's `prepare-iwslt14.sh`.

1. Read `train.tags.de-en.{de,en}` (metadata removed) and the test xml files matching
   `test_sets` (comma.data.iwslt14).
2. Moses punctuation normalization and tokenization (German source, English target), with
   Moses' escaping (`&apos;`, `&quot;`, ...), lowercased if asked. The test segments get
   fairseq's `’` -> `'` replacement first.
3. Clean the training pairs as `clean-corpus-n.perl -ratio R CORPUS de en OUT MIN MAX` does,
   in its order of checks: drop a pair if a side is empty, if a side has more than MAX or fewer
   than MIN tokens, if one side is more than R times longer than the other (a ratio of exactly
   R is kept), or if a token is longer than 1,000 characters. (The script also deletes `|`
   characters; Moses escaping leaves none.) Test pairs are not cleaned, as in fairseq, but a
   test segment with a side of more than MAX tokens is left out, named by file, doc and segment
   id in the log and in stats.json's `test_dropped_long` (one such segment asks measure_ratio
   for gigabytes and lets a teacher's beam search run to thousands of tokens).
4. Valid = every `valid_every`-th cleaned training pair (awk's `NR % 23 == 0`, 1-based), train
   = the rest.
5. Joint BPE: `bpe_merges` merges learned on train.de followed by train.en (subword-nmt, minimum
   pair frequency 2), applied to every split with the `@@ ` separator.
6. One vocabulary per side from the train BPE tokens; ids packed per split.

Output (exactly these files in `out_dir`, written to a temporary folder first and moved in
only when all are complete: `comma.io.atomic_files`): `train.pt`, `valid.pt`, `test.pt`
(comma.data.packed splits:
src = German BPE ids, tgt = English BPE ids, int32, no eos; ids `train-000123` = the 123rd pair
of train.tags after metadata removal, for train and valid alike, and `{set}:{docid}:{segid}`
for test), `dict.src.txt`, `dict.tgt.txt` (fairseq dict format), `bpe.codes`, `test.ref.txt`
(the tokenized English test references before BPE, one per line, for tokenized BLEU) and
`stats.json`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from comma.data.iwslt14 import SRC_LANG, TGT_LANG, corpus_dir, read_iwslt14
from comma.data.packed import PackedSequences, Split, save_split, split_stats
from comma.data.text import BpeSegmenter, MosesPipeline, learn_bpe
from comma.data.vocab import Vocabulary
from comma.errors import InputError
from comma.io import atomic_files, write_json, write_lines

# clean-corpus-n.perl's default --max-word-length.
MAX_WORD_LENGTH = 1000
OUTPUT_FILES = (
    "train.pt",
    "valid.pt",
    "test.pt",
    "dict.src.txt",
    "dict.tgt.txt",
    "bpe.codes",
    "test.ref.txt",
    "stats.json",
)
CLEANING_REASONS = ("empty", "length", "ratio", "word_length")

Tokens = list[str]
log = logging.getLogger(__name__)


def clean_reason(
    src: Sequence[str],
    tgt: Sequence[str],
    *,
    min_tokens: int,
    max_tokens: int,
    ratio: float,
    max_word_length: int = MAX_WORD_LENGTH,
) -> str | None:
    """Why clean-corpus-n.perl would drop this tokenized pair (one of CLEANING_REASONS), or None."""
    if not src or not tgt:
        return "empty"
    n_src, n_tgt = len(src), len(tgt)
    if max(n_src, n_tgt) > max_tokens or min(n_src, n_tgt) < min_tokens:
        return "length"
    if n_tgt / n_src > ratio or n_src / n_tgt > ratio:
        return "ratio"
    if any(len(token) > max_word_length for token in (*src, *tgt)):
        return "word_length"
    return None


def clean_corpus(
    pairs: Sequence[tuple[Sequence[str], Sequence[str]]],
    *,
    min_tokens: int,
    max_tokens: int,
    ratio: float,
) -> tuple[list[int], dict[str, int]]:
    """Indices of the pairs clean-corpus-n.perl keeps, and the counts for stats.json."""
    kept, dropped = [], Counter()
    for k, (src, tgt) in enumerate(pairs):
        reason = clean_reason(src, tgt, min_tokens=min_tokens, max_tokens=max_tokens, ratio=ratio)
        if reason is None:
            kept.append(k)
        else:
            dropped[reason] += 1
    counts = {"read": len(pairs), "kept": len(kept)}
    counts.update({f"dropped_{reason}": dropped[reason] for reason in CLEANING_REASONS})
    return kept, counts


def split_train_valid(indices: Sequence[int], valid_every: int) -> tuple[list[int], list[int]]:
    """(train, valid): valid takes every `valid_every`-th item, counted from 1 (awk NR)."""
    train = [k for n, k in enumerate(indices, 1) if n % valid_every != 0]
    valid = [k for n, k in enumerate(indices, 1) if n % valid_every == 0]
    return train, valid


def _tokenize(pipeline: MosesPipeline, lines: Sequence[str], desc: str) -> list[Tokens]:
    return [pipeline(line) for line in tqdm(lines, desc=desc, unit="line", leave=False)]


def _pack(sequences: Sequence[Sequence[int]]) -> PackedSequences:
    return PackedSequences.from_list([torch.tensor(s, dtype=torch.int32) for s in sequences])


def _encode(
    segmenter: BpeSegmenter, vocab: Vocabulary, sentences: Sequence[Tokens], desc: str
) -> tuple[PackedSequences, int]:
    """BPE-segmented ids of tokenized sentences, and how many pieces were unknown."""
    ids = []
    for tokens in tqdm(sentences, desc=desc, unit="line", leave=False):
        ids.append(vocab.encode(segmenter(tokens)))
    unknown = sum(row.count(vocab.unk) for row in ids)
    return _pack(ids), unknown


def _bound_test(
    test_ids: Sequence[str], src: Sequence[Tokens], tgt: Sequence[Tokens], max_tokens: int
) -> tuple[list[int], list[str]]:
    """The test segments to keep, and each one left out for a side longer than `max_tokens`
    tokens (the training pairs' bound), as "FILE doc D seg S: N tokens". fairseq does not clean
    test pairs, but one 5,000-token segment asks a batch of its attention for gigabytes and lets
    the teacher's beam search run to 12,000 tokens."""
    kept, long = [], []
    for k, test_id in enumerate(test_ids):
        sides = ((SRC_LANG, len(src[k])), (TGT_LANG, len(tgt[k])))
        lang, n = max(sides, key=lambda side: side[1])
        if n <= max_tokens:
            kept.append(k)
            continue
        name, rest = test_id.split(":", 1)
        docid, segid = rest.rsplit(":", 1)
        long.append(f"{name}.{lang}.xml doc {docid} seg {segid}: {n} tokens")
    if long:
        log.warning(
            "left out %d test segment(s) longer than prepare.nmt.max_tokens (%d tokens): %s",
            len(long),
            max_tokens,
            "; ".join(long[:20]),
        )
    return kept, long


def prepare_nmt(
    raw_dir: str | Path,
    out_dir: str | Path,
    *,
    lowercase: bool,
    clean_ratio: float,
    min_tokens: int,
    max_tokens: int,
    valid_every: int,
    bpe_merges: int,
    test_sets: list[str],
) -> dict:
    """Prepare the IWSLT14 De-En folder `raw_dir` into `out_dir`; returns stats.json's content."""
    if not (0 < min_tokens <= max_tokens) or clean_ratio <= 0 or valid_every < 2 or bpe_merges < 0:
        raise ValueError(
            f"bad preparation settings: min_tokens={min_tokens}, max_tokens={max_tokens}, "
            f"clean_ratio={clean_ratio}, valid_every={valid_every}, bpe_merges={bpe_merges}"
        )
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    corpus = read_iwslt14(raw_dir, test_sets)
    src_pipe, tgt_pipe = MosesPipeline(SRC_LANG, lowercase), MosesPipeline(TGT_LANG, lowercase)

    train_src = _tokenize(src_pipe, [de for de, _ in corpus["train"]], "tokenize train.de")
    train_tgt = _tokenize(tgt_pipe, [en for _, en in corpus["train"]], "tokenize train.en")
    # fairseq's sed on the test xml only; the Moses normalizer would map it anyway.
    test_src = _tokenize(
        src_pipe, [de.replace("’", "'") for de, _ in corpus["test"]], "tokenize test.de"
    )
    test_tgt = _tokenize(
        tgt_pipe, [en.replace("’", "'") for _, en in corpus["test"]], "tokenize test.en"
    )

    kept, cleaning = clean_corpus(
        list(zip(train_src, train_tgt, strict=True)),
        min_tokens=min_tokens,
        max_tokens=max_tokens,
        ratio=clean_ratio,
    )
    train_idx, valid_idx = split_train_valid(kept, valid_every)
    train_file = corpus_dir(raw_dir) / "train.tags.de-en.de"
    if not train_idx or not valid_idx:
        raise InputError(
            train_file,
            f"{len(kept)} training pairs survive cleaning; with every {valid_every}th for "
            f"valid, train has {len(train_idx)} and valid {len(valid_idx)} (both need some)",
        )
    test_kept, test_long = _bound_test(corpus["test_ids"], test_src, test_tgt, max_tokens)
    if not test_kept:
        raise InputError(
            raw_dir,
            f"the test sets {corpus['test_sets']} hold no segment"
            + (f" of at most prepare.nmt.max_tokens ({max_tokens}) tokens" if test_long else ""),
        )
    test_src, test_tgt = [test_src[k] for k in test_kept], [test_tgt[k] for k in test_kept]
    test_ids = [corpus["test_ids"][k] for k in test_kept]

    with atomic_files(out_dir, OUTPUT_FILES) as tmp:
        codes_path = tmp / "bpe.codes"
        learn_bpe(
            [train_src[k] for k in train_idx] + [train_tgt[k] for k in train_idx],
            bpe_merges,
            codes_path,
        )
        segmenter = BpeSegmenter(codes_path)
        src_vocab = Vocabulary.build(
            segmenter(train_src[k]) for k in tqdm(train_idx, desc="vocab de", leave=False)
        )
        tgt_vocab = Vocabulary.build(
            segmenter(train_tgt[k]) for k in tqdm(train_idx, desc="vocab en", leave=False)
        )
        src_vocab.save(tmp / "dict.src.txt")
        tgt_vocab.save(tmp / "dict.tgt.txt")

        def train_ids(indices: list[int]) -> list[str]:
            return [f"train-{k + 1:06d}" for k in indices]

        sides = {
            "train": ([train_src[k] for k in train_idx], [train_tgt[k] for k in train_idx]),
            "valid": ([train_src[k] for k in valid_idx], [train_tgt[k] for k in valid_idx]),
            "test": (test_src, test_tgt),
        }
        ids = {"train": train_ids(train_idx), "valid": train_ids(valid_idx)}
        ids["test"] = test_ids
        splits_stats, unknown = {}, {}
        for name, (src, tgt) in sides.items():
            src_packed, src_unk = _encode(segmenter, src_vocab, src, f"bpe {name}.de")
            tgt_packed, tgt_unk = _encode(segmenter, tgt_vocab, tgt, f"bpe {name}.en")
            split = Split(src_packed, tgt_packed, ids[name])
            save_split(tmp / f"{name}.pt", split)
            splits_stats[name] = split_stats(split)
            unknown[name] = {"src": src_unk, "tgt": tgt_unk}
        write_lines(tmp / "test.ref.txt", [" ".join(tokens) for tokens in test_tgt])

        merges_learned = sum(
            1 for line in codes_path.read_text(encoding="utf-8").splitlines()
            if not line.startswith("#version")
        )  # fmt: skip
        stats = {
            "task": "nmt",
            "splits": splits_stats,
            "vocab": {"src": len(src_vocab), "tgt": len(tgt_vocab)},
            "cleaning": cleaning,
            "unknown_pieces": unknown,
            "bpe": {"merges_requested": bpe_merges, "merges_learned": merges_learned},
            "lowercase": lowercase,
            "test_sets": corpus["test_sets"],
            "test_dropped_empty": {
                "count": len(corpus["test_dropped_empty"]),
                "segments": corpus["test_dropped_empty"],
            },
            "test_dropped_long": {"count": len(test_long), "segments": test_long},
            "settings": {
                "clean_ratio": clean_ratio,
                "min_tokens": min_tokens,
                "max_tokens": max_tokens,
                "valid_every": valid_every,
                "test_globs": list(test_sets),
            },
        }
        write_json(tmp / "stats.json", stats)
    return stats
