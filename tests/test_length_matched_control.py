"""benchmarks/length_matched_control.py: the NMT corpus re-spelled in characters keeps every
sentence, its target and ids, and only lengthens the source."""

import torch
from conftest import load_benchmark

from comma.data.packed import PackedSequences, Split, load_split, save_split
from comma.data.vocab import Vocabulary

control = load_benchmark("length_matched_control")


def test_bpe_pieces_become_characters_with_word_boundaries():
    pieces = ["ich", "sa@@", "gte", ",", "da@@", "s"]
    assert "".join(control.source_characters(pieces)) == "ich▁sagte▁,▁das"


def test_the_character_corpus_keeps_sentences_targets_and_ids(tmp_path):
    nmt, out = tmp_path / "nmt", tmp_path / "chars"
    nmt.mkdir()
    src = Vocabulary(["ha@@", "us", "das", "ist"])
    tgt = Vocabulary(["this", "is", "house"])
    src.save(nmt / "dict.src.txt")
    tgt.save(nmt / "dict.tgt.txt")
    sentences = [(["das", "ist", "ha@@", "us"], ["this", "is", "house"]), (["das"], ["this"])]
    for name in ("train", "valid", "test"):
        split = Split(
            PackedSequences.from_list([torch.tensor(src.encode(s)) for s, _ in sentences]),
            PackedSequences.from_list([torch.tensor(tgt.encode(t)) for _, t in sentences]),
            [f"{name}{k}" for k in range(len(sentences))],
        )
        save_split(nmt / f"{name}.pt", split)
    control.character_source_corpus(nmt, out)
    chars = Vocabulary.load(out / "dict.src.txt")
    test, before = load_split(out / "test.pt"), load_split(nmt / "test.pt")
    assert "".join(chars.decode(test.src[0])) == "das▁ist▁haus"
    assert "".join(chars.decode(test.src[1])) == "das"
    assert torch.equal(test.tgt.values, before.tgt.values) and test.ids == before.ids
    assert (out / "dict.tgt.txt").read_bytes() == (nmt / "dict.tgt.txt").read_bytes()
