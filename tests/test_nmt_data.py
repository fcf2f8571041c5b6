"""NMT data path: IWSLT14 readers, the mini corpus generator, and fairseq-style preparation."""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

import pytest
import torch

from comma.data.iwslt14 import (
    read_iwslt14,
    read_train_tags,
    read_xml,
    read_xml_pair,
    read_xml_segments,
)
from comma.data.nmt import (
    OUTPUT_FILES,
    clean_corpus,
    clean_reason,
    prepare_nmt,
    split_train_valid,
)
from comma.data.packed import load_split
from comma.data.text import BpeSegmenter, MosesPipeline
from comma.data.vocab import Vocabulary
from comma.errors import InputError
from comma.io import read_json
from comma.mini.nmt import (
    MAX_TOKENS,
    MIN_TOKENS,
    REGISTER_PRIOR,
    REGISTERS,
    SentenceSampler,
    generate_mini_iwslt14,
    register_markers,
)

TRAIN_DE = """\
<url>http://www.ted.com/talks/lang/de/stephen_palumbi_following_the_mercury_trail.html</url>
<keywords>talks, business, animals, oceans</keywords>
<speaker>Stephen Palumbi</speaker>
<talkid>1</talkid>
<title>Stephen Palumbi: Folgen Sie dem Quecksilber</title>
<description>TED Talk Untertitel und Transkript: Palumbi erzählt.</description>
Es kann eine sehr komplizierte Sache sein, der Ozean.
Und es kann eine sehr komplizierte Sache sein, die menschliche Gesundheit.
<url>http://www.ted.com/talks/lang/de/a_b.html</url>
<keywords>talks</keywords>
<talkid>2</talkid>
Hallo „Welt“ – 3 × 4.
"""
TRAIN_EN = """\
<url>http://www.ted.com/talks/stephen_palumbi_following_the_mercury_trail.html</url>
<keywords>talks, business, animals, oceans</keywords>
<speaker>Stephen Palumbi</speaker>
<talkid>1</talkid>
<title>Stephen Palumbi: Following the mercury trail</title>
<description>TED Talk Subtitles and Transcript: Palumbi tells.</description>
It can be a very complicated thing, the ocean.
And it can be a very complicated thing, what human health is.
<url>http://www.ted.com/talks/a_b.html</url>
<keywords>talks</keywords>
<talkid>2</talkid>
Hello "world" – 3 × 4.
"""


def xml_text(role: str, segments: list[tuple[str, str, str]]) -> str:
    """An mteval file like the released ones; segments are (docid, segid, text)."""
    opening = {
        "src": '<srcset setid="iwslt2014-tst2010" srclang="german">',
        "ref": '<refset setid="iwslt2014-tst2010" srclang="german" trglang="english" refid="ref">',
    }[role]
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<mteval>", opening]
    docid = None
    for doc, seg, text in segments:
        if doc != docid:
            if docid is not None:
                lines.append("</doc>")
            lines += [f'<doc docid="{doc}" genre="lectures">', "<url>http://x/y.html</url>"]
            lines += ["<keywords>talks, seg</keywords>", f"<talkid>{doc}</talkid>"]
            lines += ["<title>Eine Überschrift</title>"]
            docid = doc
        lines.append(f'<seg id="{seg}">{text}</seg>')
    lines += ["</doc>", "</srcset>" if role == "src" else "</refset>", "</mteval>"]
    return "\n".join(lines) + "\n"


def write_corpus(root: Path, extra_sets: tuple[str, ...] = ()) -> Path:
    folder = root / "de-en"
    folder.mkdir(parents=True)
    (folder / "train.tags.de-en.de").write_text(TRAIN_DE, encoding="utf-8")
    (folder / "train.tags.de-en.en").write_text(TRAIN_EN, encoding="utf-8")
    sets = {
        "IWSLT14.TED.tst2010": [
            ("7", "1", " Guten Tag . "),
            ("7", "2", "Wie geht’s?"),
            ("8", "1", "Ja."),
        ],
        "IWSLT14.TEDX.dev2012": [("9", "1", "  Danke.  ")],
        "IWSLT14.TED.dev2010": [("3", "1", "Eins."), ("3", "2", "Zwei.")],
    }
    english = {"Guten Tag .": "Good day .", "Wie geht’s?": "How’s it going?", "Ja.": "Yes."}
    english |= {"Danke.": "Thanks.", "Eins.": "One.", "Zwei.": "Two."}
    for name in (*sets, *extra_sets):
        segments = sets.get(name, [("1", "1", "Extra.")])
        en = [(d, s, english.get(t.strip(), t)) for d, s, t in segments]
        (folder / f"{name}.de-en.de.xml").write_text(xml_text("src", segments), encoding="utf-8")
        (folder / f"{name}.de-en.en.xml").write_text(xml_text("ref", en), encoding="utf-8")
    return folder


# ---------------------------------------------------------------------------------------------
# Readers


def test_train_tags_drop_url_talkid_keywords_and_strip_title_description(tmp_path):
    folder = write_corpus(tmp_path)
    pairs = read_train_tags(folder / "train.tags.de-en.de", folder / "train.tags.de-en.en")
    assert pairs == [
        # fairseq's script keeps <speaker> lines: so does the reader
        ("<speaker>Stephen Palumbi</speaker>", "<speaker>Stephen Palumbi</speaker>"),
        (
            "Stephen Palumbi: Folgen Sie dem Quecksilber",
            "Stephen Palumbi: Following the mercury trail",
        ),
        (
            "TED Talk Untertitel und Transkript: Palumbi erzählt.",
            "TED Talk Subtitles and Transcript: Palumbi tells.",
        ),
        (
            "Es kann eine sehr komplizierte Sache sein, der Ozean.",
            "It can be a very complicated thing, the ocean.",
        ),
        (
            "Und es kann eine sehr komplizierte Sache sein, die menschliche Gesundheit.",
            "And it can be a very complicated thing, what human health is.",
        ),
        ("Hallo „Welt“ – 3 × 4.", 'Hello "world" – 3 × 4.'),
    ]


def test_train_lines_split_on_newline_only(tmp_path):
    # U+2028 inside a transcript line must not break the line parallelism (str.splitlines would)
    de, en = tmp_path / "a.de", tmp_path / "a.en"
    de.write_text("eins\u2028zwei\r\ndrei\n", encoding="utf-8")
    en.write_text("one two\nthree\n", encoding="utf-8")
    assert read_train_tags(de, en) == [("eins\u2028zwei", "one two"), ("drei", "three")]


def test_xml_keeps_only_segments_with_their_ids(tmp_path):
    folder = write_corpus(tmp_path)
    path = folder / "IWSLT14.TED.tst2010.de-en.de.xml"
    assert read_xml_segments(path) == ["Guten Tag .", "Wie geht’s?", "Ja."]
    segments = read_xml(path)
    assert [(s.docid, s.segid) for s in segments] == [("7", "1"), ("7", "2"), ("8", "1")]
    assert segments[0].line == 9  # 1-based line of the first <seg> in the file
    pairs, _ = read_xml_pair(path, folder / "IWSLT14.TED.tst2010.de-en.en.xml")
    assert pairs[1] == ("Wie geht’s?", "How’s it going?")


def test_read_iwslt14_selects_test_sets_by_glob_sorted_by_name(tmp_path):
    write_corpus(tmp_path, extra_sets=("IWSLT14.TED.tst2011",))
    corpus = read_iwslt14(tmp_path, ["IWSLT14.TED*.xml"])  # the parent of de-en/ works too
    assert corpus["test_sets"] == [
        "IWSLT14.TED.dev2010.de-en",
        "IWSLT14.TED.tst2010.de-en",
        "IWSLT14.TED.tst2011.de-en",
        "IWSLT14.TEDX.dev2012.de-en",
    ]
    assert [de for de, _ in corpus["test"]] == [
        "Eins.",
        "Zwei.",
        "Guten Tag .",
        "Wie geht’s?",
        "Ja.",
        "Extra.",
        "Danke.",
    ]
    assert corpus["test_ids"][:3] == [
        "IWSLT14.TED.dev2010.de-en:3:1",
        "IWSLT14.TED.dev2010.de-en:3:2",
        "IWSLT14.TED.tst2010.de-en:7:1",
    ]
    assert len(corpus["train"]) == 6
    only = read_iwslt14(tmp_path / "de-en", ["*tst2010*.en.xml"])  # one side's name suffices
    assert only["test_sets"] == ["IWSLT14.TED.tst2010.de-en"]
    assert len(only["test"]) == 3


# ---------------------------------------------------------------------------------------------
# Bad input: InputError naming the file, the line and the cause


def test_unequal_training_files_name_both_files_and_counts(tmp_path):
    folder = write_corpus(tmp_path)
    en = folder / "train.tags.de-en.en"
    en.write_text(TRAIN_EN + "One more line.\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        read_train_tags(folder / "train.tags.de-en.de", en)
    message = str(err.value)
    assert "train.tags.de-en.de" in message and str(en) in message
    assert "12 lines" in message and "13" in message


def test_metadata_facing_a_sentence_is_a_misalignment(tmp_path):
    folder = write_corpus(tmp_path)
    de = folder / "train.tags.de-en.de"
    de.write_text(TRAIN_DE.replace("<talkid>2</talkid>", "Ein Satz."), encoding="utf-8")
    with pytest.raises(InputError) as err:
        read_train_tags(de, folder / "train.tags.de-en.en")
    assert err.value.line == 11
    assert "train.tags.de-en.en" in str(err.value) and "misaligned" in str(err.value)


@pytest.mark.parametrize("name", ["train.tags.de-en.en", "IWSLT14.TED.tst2010.de-en.de.xml"])
def test_non_utf8_bytes_name_file_and_line(tmp_path, name):
    folder = write_corpus(tmp_path)
    path = folder / name
    lines = path.read_bytes().split(b"\n")
    lines[9] = lines[9][:3] + b"\xe4" + lines[9][3:]  # a Latin-1 umlaut on line 10
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(InputError) as err:
        read_iwslt14(folder, ["IWSLT14.TED*.xml"])
    assert err.value.path == path
    assert err.value.line == 10
    assert "0xe4" in str(err.value) and "column 4" in str(err.value)


def test_xml_segment_counts_must_agree(tmp_path):
    folder = write_corpus(tmp_path)
    en = folder / "IWSLT14.TED.tst2010.de-en.en.xml"
    en.write_text(xml_text("ref", [("7", "1", "Good day.")]), encoding="utf-8")
    with pytest.raises(InputError) as err:
        read_iwslt14(folder, ["IWSLT14.TED.tst2010*"])
    message = str(err.value)
    assert "IWSLT14.TED.tst2010.de-en.de.xml" in message and str(en) in message
    assert "3 segments" in message and "has 1" in message


def test_xml_segment_ids_must_agree(tmp_path):
    folder = write_corpus(tmp_path)
    en = folder / "IWSLT14.TED.tst2010.de-en.en.xml"
    segments = [("7", "1", "Good day."), ("7", "3", "How?"), ("8", "1", "Yes.")]
    en.write_text(xml_text("ref", segments), encoding="utf-8")
    with pytest.raises(InputError) as err:
        read_iwslt14(folder, ["IWSLT14.TED.tst2010*"])
    assert err.value.path.name == "IWSLT14.TED.tst2010.de-en.de.xml"
    assert err.value.line == 10
    assert f"{en}:10" in str(err.value) and "'3'" in str(err.value)


def test_malformed_segment_line(tmp_path):
    folder = write_corpus(tmp_path)
    de = folder / "IWSLT14.TED.dev2010.de-en.de.xml"
    de.write_text(de.read_text(encoding="utf-8").replace("Zwei.</seg>", "Zwei."), encoding="utf-8")
    with pytest.raises(InputError) as err:
        read_xml(de)
    assert err.value.path == de and err.value.line == 10


def test_missing_files(tmp_path):
    folder = write_corpus(tmp_path)
    (folder / "IWSLT14.TEDX.dev2012.de-en.en.xml").unlink()
    with pytest.raises(InputError) as err:
        read_iwslt14(folder, ["IWSLT14.TED*.xml"])
    assert err.value.path == folder / "IWSLT14.TEDX.dev2012.de-en.en.xml"
    assert "IWSLT14.TEDX.dev2012.de-en.de.xml" in str(err.value)
    with pytest.raises(InputError, match="no de/en .xml file matches"):
        read_iwslt14(folder, ["IWSLT15*.xml"])
    (folder / "train.tags.de-en.en").unlink()
    with pytest.raises(InputError) as err:
        read_iwslt14(folder, ["IWSLT14.TED.tst2010*"])
    assert err.value.path == folder / "train.tags.de-en.en" and "not found" in str(err.value)


# ---------------------------------------------------------------------------------------------
# Cleaning and splitting


def words(n: int) -> list[str]:
    return [f"w{k}" for k in range(n)]


@pytest.mark.parametrize(
    ("n_src", "n_tgt", "reason"),
    [
        (2, 3, None),  # ratio exactly 1.5 is kept (the script drops only > ratio)
        (3, 2, None),
        (10, 16, "ratio"),  # 1.6
        (16, 10, "ratio"),
        (1, 1, None),  # min_tokens = 1 is inclusive
        (175, 175, None),  # max_tokens = 175 is inclusive
        (176, 175, "length"),
        (175, 176, "length"),
        (0, 1, "empty"),
        (1, 0, "empty"),
        (1, 2, "ratio"),
    ],
)
def test_clean_reason_follows_clean_corpus_n(n_src, n_tgt, reason):
    got = clean_reason(words(n_src), words(n_tgt), min_tokens=1, max_tokens=175, ratio=1.5)
    assert got == reason


def test_clean_reason_min_length_and_word_length():
    assert clean_reason(words(2), words(3), min_tokens=3, max_tokens=9, ratio=9) == "length"
    assert clean_reason(words(3), words(3), min_tokens=3, max_tokens=9, ratio=9) is None
    # the length check comes before the ratio check, as in the perl script
    assert clean_reason(words(1), words(20), min_tokens=1, max_tokens=9, ratio=1.5) == "length"
    long_word = ["x" * 1001]
    assert clean_reason(long_word, ["y"], min_tokens=1, max_tokens=9, ratio=9) == "word_length"
    assert clean_reason(["x" * 1000], ["y"], min_tokens=1, max_tokens=9, ratio=9) is None


def test_clean_corpus_counts():
    pairs = [(words(3), words(3)), ([], words(2)), (words(2), words(5)), (words(12), words(12))]
    kept, counts = clean_corpus(pairs, min_tokens=1, max_tokens=10, ratio=1.5)
    assert kept == [0]
    assert counts == {
        "read": 4,
        "kept": 1,
        "dropped_empty": 1,
        "dropped_length": 1,
        "dropped_ratio": 1,
        "dropped_word_length": 0,
    }


def test_valid_is_every_23rd_line_counted_from_one():
    indices = list(range(100, 200))
    train, valid = split_train_valid(indices, 23)
    assert valid == [122, 145, 168, 191]
    assert len(train) == 96 and not set(train) & set(valid)
    assert sorted(train + valid) == indices


# ---------------------------------------------------------------------------------------------
# The mini corpus


@pytest.fixture(scope="module")
def mini_corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mini") / "de-en"
    generate_mini_iwslt14(out, train=600, test=40, seed=3)
    return out


def test_generator_writes_the_real_layout_that_the_reader_parses(mini_corpus):
    assert sorted(p.name for p in mini_corpus.iterdir()) == sorted(
        [
            "train.tags.de-en.de",
            "train.tags.de-en.en",
            *(
                f"IWSLT14.TED.{name}.de-en.{lang}.xml"
                for name in ("dev2010", "tst2010", "tst2011", "tst2012")
                for lang in ("de", "en")
            ),
        ]
    )
    raw = (mini_corpus / "train.tags.de-en.en").read_text(encoding="utf-8")
    assert raw.startswith("<url>http://www.ted.com/talks/") and "\n<talkid>" in raw
    assert "<title>" in raw and "<description>" in raw
    corpus = read_iwslt14(mini_corpus, ["IWSLT14.TED*.xml"])
    assert len(corpus["train"]) == 600 and len(corpus["test"]) == 40
    # 40 segments shared like the real dev2010/tst2010/tst2011/tst2012 (887/1565/1433/1700)
    assert [len(read_xml_segments(p)) for p in sorted(mini_corpus.glob("*.de.xml"))] == [
        7,
        11,
        10,
        12,
    ]
    for de, en in corpus["train"] + corpus["test"]:
        assert "<" not in de + en
        assert de[0].isupper() and en[0].isupper() and en[-1] in ".?" and de[-1] == en[-1]


def test_generator_is_deterministic_for_a_seed(mini_corpus, tmp_path):
    generate_mini_iwslt14(tmp_path / "again", train=600, test=40, seed=3)
    generate_mini_iwslt14(tmp_path / "other", train=600, test=40, seed=4)
    for path in mini_corpus.iterdir():
        assert (tmp_path / "again" / path.name).read_bytes() == path.read_bytes()
    other = (tmp_path / "other" / "train.tags.de-en.en").read_bytes()
    assert other != (mini_corpus / "train.tags.de-en.en").read_bytes()
    # the test set does not depend on the training size
    generate_mini_iwslt14(tmp_path / "bigger", train=700, test=40, seed=3)
    name = "IWSLT14.TED.tst2012.de-en.en.xml"
    assert (tmp_path / "bigger" / name).read_bytes() == (mini_corpus / name).read_bytes()


def test_generator_leaves_nothing_on_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        generate_mini_iwslt14(tmp_path / "de-en", train=0, test=4, seed=1)
    assert list(tmp_path.iterdir()) == []


def test_sentences_are_within_the_length_limits():
    sampler = SentenceSampler(random.Random(0))
    tokenizers = {
        "de": MosesPipeline("de", lowercase=True),
        "en": MosesPipeline("en", lowercase=True),
    }
    for _ in range(300):
        de, en, _ = sampler.pair()
        n_de, n_en = len(tokenizers["de"](de)), len(tokenizers["en"](en))
        assert MIN_TOKENS <= n_de <= MAX_TOKENS and MIN_TOKENS <= n_en <= MAX_TOKENS
        assert max(n_de / n_en, n_en / n_de) <= 1.5


def marker_registers(sentence: str, markers: dict[str, set[str]]) -> list[str]:
    tokens = re.findall(r"[a-z]+", sentence.lower())
    return [register for token in tokens for register, words in markers.items() if token in words]


def test_targets_carry_the_hidden_register(mini_corpus):
    markers = {register: set(words) for register, words in register_markers().items()}
    assert all(len(words) > 100 for words in markers.values())
    english = [en for _, en in read_iwslt14(mini_corpus, ["IWSLT14.TED*.xml"])["train"]]
    found = [marker_registers(en, markers) for en in english]
    # nearly every sentence shows its register, most through several words
    assert sum(1 for regs in found if regs) / len(found) > 0.95
    assert sum(len(regs) for regs in found) / len(found) > 2.5
    # within a sentence, marked words always agree ...
    assert all(len(set(regs)) <= 1 for regs in found)
    # ... across sentences they disagree as often as independent draws from the prior would
    labels = [regs[0] for regs in found if regs]
    rng = random.Random(0)
    pairs = [rng.sample(labels, 2) for _ in range(2000)]
    across = sum(a != b for a, b in pairs) / len(pairs)
    expected = 1 - sum(p * p for p in REGISTER_PRIOR)  # 0.62
    assert abs(across - expected) < 0.06
    shares = Counter(labels)
    for register, prior in zip(REGISTERS, REGISTER_PRIOR, strict=True):
        assert abs(shares[register] / len(labels) - prior) < 0.06


def test_the_german_source_does_not_show_the_register():
    # the same German sentence, drawn under different registers, gets different English
    sampler = SentenceSampler(random.Random(1))
    by_german: dict[str, dict[int, str]] = {}
    for _ in range(20000):
        de, en, register = sampler.pair()
        by_german.setdefault(de, {})[register] = en
    repeated = [renderings for renderings in by_german.values() if len(renderings) > 1]
    assert len(repeated) >= 10
    differing = sum(len(set(r.values())) == len(r) for r in repeated)
    assert differing / len(repeated) > 0.8


# ---------------------------------------------------------------------------------------------
# Preparation


PREPARE = dict(
    lowercase=True,
    clean_ratio=1.5,
    min_tokens=1,
    max_tokens=175,
    valid_every=23,
    bpe_merges=200,
    test_sets=["IWSLT14.TED*.xml"],
)


@pytest.fixture(scope="module")
def prepared(mini_corpus, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("prepared") / "nmt"
    return out, prepare_nmt(mini_corpus, out, **PREPARE)


def test_prepare_writes_exactly_the_declared_files(prepared):
    out, stats = prepared
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    assert read_json(out / "stats.json") == stats
    assert stats["task"] == "nmt"
    assert stats["cleaning"]["read"] == 600 and stats["cleaning"]["kept"] == 600
    assert stats["splits"]["valid"]["sequences"] == 600 // 23
    assert stats["splits"]["train"]["sequences"] == 600 - 600 // 23
    assert stats["splits"]["test"]["sequences"] == 40
    assert stats["bpe"]["merges_learned"] == 200


def test_prepared_splits_are_consistent_with_vocab_and_stats(prepared, mini_corpus):
    out, stats = prepared
    src_vocab, tgt_vocab = (
        Vocabulary.load(out / "dict.src.txt"),
        Vocabulary.load(out / "dict.tgt.txt"),
    )
    assert stats["vocab"] == {"src": len(src_vocab), "tgt": len(tgt_vocab)}
    for name in ("train", "valid", "test"):
        split = load_split(out / f"{name}.pt")
        assert split.src.values.dtype == split.tgt.values.dtype == torch.int32
        assert len(split) == stats["splits"][name]["sequences"]
        assert int(split.src.lengths.sum()) == stats["splits"][name]["src_len"]["total"]
        for side, values in (("src", split.src.values), ("tgt", split.tgt.values)):
            # no pad, bos, eos or mask; unknown pieces (unseen in train) only as counted
            assert not torch.isin(values, torch.tensor([0, 1, 2, 4], dtype=torch.int32)).any()
            assert int((values == 3).sum()) == stats["unknown_pieces"][name][side]
        assert int(split.src.values.max()) < len(src_vocab)
        assert int(split.tgt.values.max()) < len(tgt_vocab)
    train, valid = load_split(out / "train.pt"), load_split(out / "valid.pt")
    assert valid.ids[:2] == ["train-000023", "train-000046"]
    assert train.ids[21:23] == ["train-000022", "train-000024"]
    assert stats["unknown_pieces"]["train"] == {"src": 0, "tgt": 0}
    test = load_split(out / "test.pt")
    assert test.ids[0] == "IWSLT14.TED.dev2010.de-en:5001:1"


def test_bpe_round_trip_gives_back_the_tokenized_text(prepared, mini_corpus):
    out, _ = prepared
    corpus = read_iwslt14(mini_corpus, ["IWSLT14.TED*.xml"])
    en = MosesPipeline("en", lowercase=True)
    de = MosesPipeline("de", lowercase=True)
    tgt_vocab, src_vocab = (
        Vocabulary.load(out / "dict.tgt.txt"),
        Vocabulary.load(out / "dict.src.txt"),
    )
    segmenter = BpeSegmenter(out / "bpe.codes")
    test = load_split(out / "test.pt")
    refs = (out / "test.ref.txt").read_text(encoding="utf-8").splitlines()
    assert len(refs) == len(test) == 40
    split_words = 0
    for k, (de_text, en_text) in enumerate(corpus["test"]):
        for text, tokenizer, vocab, ids in (
            (en_text, en, tgt_vocab, test.tgt[k]),
            (de_text, de, src_vocab, test.src[k]),
        ):
            tokens = tokenizer(text)
            pieces = segmenter(tokens)
            split_words += sum(p.endswith("@@") for p in pieces)
            assert BpeSegmenter.join(pieces) == tokens
            assert ids.tolist() == vocab.encode(pieces)
        assert refs[k] == " ".join(en(en_text))
    assert split_words > 0  # BPE did split words, so the round trip means something
    # pieces seen in training are all known: ids -> pieces -> tokens gives the text back
    train = load_split(out / "train.pt")
    for k in range(0, len(train), 50):
        pair = int(train.ids[k].removeprefix("train-")) - 1
        pieces = tgt_vocab.decode(train.tgt[k].tolist())
        assert BpeSegmenter.join(pieces) == en(corpus["train"][pair][1])


def test_prepare_cleans_like_fairseq_on_a_handmade_corpus(tmp_path):
    folder = tmp_path / "de-en"
    folder.mkdir()
    de_lines, en_lines = (
        ["<url>u</url>", "<talkid>1</talkid>"],
        ["<url>u</url>", "<talkid>1</talkid>"],
    )
    for k in range(50):
        de_lines.append(f"Satz Nummer {k} ist hier.")  # 6 tokens
        en_lines.append(f"Sentence number {k} is here.")
    de_lines[2 + 4], en_lines[2 + 4] = "", "Empty on the German side."
    de_lines[2 + 7], en_lines[2 + 7] = "Kurz.", "This is far too long for the German one."
    en_lines[2 + 9] = "Sentence number nine is here , and there too."  # 11 vs 6 tokens
    (folder / "train.tags.de-en.de").write_text("\n".join(de_lines) + "\n", encoding="utf-8")
    (folder / "train.tags.de-en.en").write_text("\n".join(en_lines) + "\n", encoding="utf-8")
    segments = [("1", "1", "Ein Test ’s.")]
    (folder / "IWSLT14.TED.tst2010.de-en.de.xml").write_text(
        xml_text("src", segments), encoding="utf-8"
    )
    (folder / "IWSLT14.TED.tst2010.de-en.en.xml").write_text(
        xml_text("ref", [("1", "1", "A Test’s Case.")]), encoding="utf-8"
    )
    out = tmp_path / "out"
    stats = prepare_nmt(folder, out, **{**PREPARE, "bpe_merges": 30})
    assert stats["cleaning"] == {
        "read": 50,
        "kept": 47,
        "dropped_empty": 1,
        "dropped_length": 0,
        "dropped_ratio": 2,
        "dropped_word_length": 0,
    }
    valid = load_split(out / "valid.pt")
    # pairs 5, 8 and 10 were dropped: the 23rd kept pair is pair 26, the 46th pair 49
    assert valid.ids == ["train-000026", "train-000049"]
    assert (out / "test.ref.txt").read_text(encoding="utf-8") == "a test &apos;s case .\n"
    # max_tokens = 5 drops every 6-token pair: too little left for both train and valid
    with pytest.raises(InputError, match="survive cleaning"):
        prepare_nmt(folder, tmp_path / "none", **{**PREPARE, "max_tokens": 5})
    assert not (tmp_path / "none").exists() or list((tmp_path / "none").iterdir()) == []


def test_prepare_fails_cleanly_when_no_test_set_matches(mini_corpus, tmp_path):
    out = tmp_path / "nmt"
    with pytest.raises(InputError, match="no de/en .xml file matches"):
        prepare_nmt(mini_corpus, out, **{**PREPARE, "test_sets": ["IWSLT99*.xml"]})
    assert not out.exists() or list(out.iterdir()) == []
    assert [p.name for p in tmp_path.iterdir()] in ([], ["nmt"])


# ---------------------------------------------------------------------------------------------
# Malformed input: each names the file and the cause


def test_a_byte_order_mark_is_not_part_of_the_first_sentence(tmp_path):
    de, en = tmp_path / "a.de", tmp_path / "a.en"
    de.write_bytes(b"\xef\xbb\xbfeins\nzwei\n")
    en.write_text("one\ntwo\n", encoding="utf-8")
    assert read_train_tags(de, en) == [("eins", "one"), ("zwei", "two")]


def test_cr_only_line_endings_are_named(tmp_path):
    de, en = tmp_path / "a.de", tmp_path / "a.en"
    de.write_bytes(b"eins\rzwei\rdrei\r")
    en.write_text("one\ntwo\nthree\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"a\.de: has CR-only line endings"):
        read_train_tags(de, en)


def test_an_empty_training_file_is_named_as_empty(tmp_path):
    de, en = tmp_path / "a.de", tmp_path / "a.en"
    de.write_text("", encoding="utf-8")
    en.write_text("one\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"a\.de: is empty"):
        read_train_tags(de, en)


def test_empty_test_segments_are_left_out_and_counted(tmp_path, caplog):
    folder = write_corpus(tmp_path)
    path = folder / "IWSLT14.TED.tst2010.de-en.en.xml"
    path.write_text(path.read_text(encoding="utf-8").replace("Yes.", ""), encoding="utf-8")
    corpus = read_iwslt14(tmp_path, ["IWSLT14.TED.tst2010*"])
    assert ("Ja.", "") not in corpus["test"] and len(corpus["test"]) == 2
    assert corpus["test_dropped_empty"] == ["IWSLT14.TED.tst2010.de-en.en.xml doc 8 seg 1"]
    assert "left out 1 empty test segment" in caplog.text


def test_a_split_with_an_empty_sentence_or_nan_is_named(tmp_path):
    from comma.data.packed import PackedSequences, Split, save_split

    tokens = PackedSequences.from_list([torch.tensor([5, 6]), torch.tensor([], dtype=torch.long)])
    frames = [torch.zeros(3, 2), torch.zeros(2, 2)]
    save_split(tmp_path / "t.pt", Split(tokens, PackedSequences.from_list(frames), ["a", "b"]))
    with pytest.raises(InputError, match=r"t\.pt: 'b' \(sentence 1\) has an empty source"):
        load_split(tmp_path / "t.pt")
    frames[1][1, 0] = float("nan")
    nan = Split(tokens, PackedSequences.from_list(frames), ["a", "b"])
    with pytest.raises(InputError, match=r"n\.pt: target of 'b' \(sentence 1\) holds NaN"):
        save_split(tmp_path / "n.pt", nan)
    assert not (tmp_path / "n.pt").exists()


def test_a_bad_dict_file_is_named_by_line(tmp_path):
    from comma.data.vocab import Vocabulary

    cases = {
        "repeat": ("der 5\ndie 4\nder 3\n", "symbol 'der' repeats line 1", 3),
        "special": ("der 5\n<unk> 4\n", "'<unk>' is a special symbol", 2),
        "no_count": ("der 5\ndie\n", "expected 'symbol count', got 'die'", 2),
    }
    for name, (text, message, line) in cases.items():
        path = tmp_path / f"{name}.txt"
        path.write_text(text)
        with pytest.raises(InputError, match=message) as error:
            Vocabulary.load(path)
        assert (error.value.path, error.value.line) == (path, line)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("über 3\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        Vocabulary.load(latin1)


def test_a_special_symbol_in_the_data_keeps_the_counts_aligned(tmp_path):
    from comma.data.vocab import Vocabulary

    vocab = Vocabulary.build([["a", "<unk>", "b", "a"], ["<unk>", "<unk>"]])
    assert vocab.symbols[5:] == ["a", "b"] and vocab.counts == [2, 1]
    vocab.save(tmp_path / "dict.txt")
    assert (tmp_path / "dict.txt").read_text() == "a 2\nb 1\n"


def test_nan_in_a_prepared_split_is_named_when_it_is_loaded(tmp_path):
    """A train.pt damaged after prepare (NaN in one frame) stops the job that loads it, naming
    the file and the sentence, before a training step or a metrics line."""
    from comma.data.packed import PackedSequences, Split, save_split
    from comma.io import torch_save
    from comma.stages.comma import train_comma

    tokens = PackedSequences.from_list([torch.tensor([5, 6]), torch.tensor([7])])
    frames = PackedSequences.from_list([torch.zeros(3, 2), torch.zeros(2, 2)])
    path = tmp_path / "train.pt"
    save_split(path, Split(tokens, frames, ["a", "b"]))
    data = torch.load(path, weights_only=True)
    data["tgt"]["values"][4, 1] = float("nan")  # the second frame of 'b'
    torch_save(data, path)
    message = r"train\.pt: target of 'b' \(sentence 1\) holds NaN or inf values: the file changed"
    with pytest.raises(InputError, match=message):
        load_split(path)
    metrics = tmp_path / "metrics.jsonl"
    with pytest.raises(InputError, match=message):
        train_comma("tts", tmp_path, tmp_path / "model.pt", metrics, architecture={})
    assert not metrics.exists() and not (tmp_path / "model.pt").exists()


def _small_corpus(root: Path, test: list[tuple[str, str, str, str]]) -> Path:
    """50 six-token training pairs and one test set of (docid, segid, de, en) segments."""
    folder = root / "de-en"
    folder.mkdir(parents=True)
    de_lines, en_lines = ["<talkid>1</talkid>"], ["<talkid>1</talkid>"]
    for k in range(50):
        de_lines.append(f"Satz Nummer {k} ist hier.")
        en_lines.append(f"Sentence number {k} is here.")
    (folder / "train.tags.de-en.de").write_text("\n".join(de_lines) + "\n", encoding="utf-8")
    (folder / "train.tags.de-en.en").write_text("\n".join(en_lines) + "\n", encoding="utf-8")
    for role, lang, column in (("src", "de", 2), ("ref", "en", 3)):
        segments = [(seg[0], seg[1], seg[column]) for seg in test]
        path = folder / f"IWSLT14.TED.tst2010.de-en.{lang}.xml"
        path.write_text(xml_text(role, segments), encoding="utf-8")
    return folder


def test_a_very_long_test_segment_is_left_out_and_named(tmp_path, caplog):
    """One 40-token test segment over max_tokens 20 (in IWSLT14: 5,000 tokens, which asked
    measure_ratio for 3 GB): left out of test.pt and test.ref.txt, and named with its file,
    doc and segment id in the log and stats.json."""
    long_de = " ".join(["sehr"] * 39) + "."
    folder = _small_corpus(
        tmp_path, [("4", "1", "Ein Test.", "A test."), ("4", "2", long_de, "Very long.")]
    )
    out = tmp_path / "nmt"
    stats = prepare_nmt(folder, out, **{**PREPARE, "bpe_merges": 30, "max_tokens": 20})
    named = "IWSLT14.TED.tst2010.de-en.de.xml doc 4 seg 2: 40 tokens"
    assert stats["test_dropped_long"] == {"count": 1, "segments": [named]}
    assert "left out 1 test segment(s) longer than prepare.nmt.max_tokens (20 tokens)" in (
        caplog.text
    )
    assert named in caplog.text
    test = load_split(out / "test.pt")
    assert test.ids == ["IWSLT14.TED.tst2010.de-en:4:1"]
    assert (out / "test.ref.txt").read_text(encoding="utf-8") == "a test .\n"
    assert read_json(out / "stats.json")["test_dropped_long"]["count"] == 1
    # every test segment too long: nothing to test on, said with the bound
    folder = _small_corpus(tmp_path / "long", [("4", "2", long_de, "Very long.")])
    with pytest.raises(InputError, match=r"hold no segment of at most prepare.nmt.max_tokens"):
        prepare_nmt(folder, tmp_path / "none", **{**PREPARE, "bpe_merges": 30, "max_tokens": 20})
    assert not (tmp_path / "none").exists()


def test_prepare_nmt_removes_a_killed_runs_temporary_folder(tmp_path, monkeypatch):
    """A SIGKILLed prepare_nmt leaves work/data/.nmt.*.tmp: the next run removes it, and a run
    that fails leaves neither its temporary folder nor any output file."""
    import comma.data.nmt

    folder = _small_corpus(tmp_path / "raw", [("4", "1", "Ein Test.", "A test.")])
    data = tmp_path / "data"
    stale = data / ".nmt.k1ll3d.tmp"
    stale.mkdir(parents=True)
    (stale / "train.pt").write_bytes(b"half")
    settings = {**PREPARE, "bpe_merges": 30}

    def disk_full(path, split):
        raise OSError(28, f"No space left on device, while writing {path}")

    monkeypatch.setattr(comma.data.nmt, "save_split", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        prepare_nmt(folder, data / "nmt", **settings)
    assert sorted(p.name for p in data.iterdir()) == ["nmt"]
    assert list((data / "nmt").iterdir()) == []
    monkeypatch.undo()
    prepare_nmt(folder, data / "nmt", **settings)
    assert sorted(p.name for p in data.iterdir()) == ["nmt"]
    assert sorted(p.name for p in (data / "nmt").iterdir()) == sorted(OUTPUT_FILES)
