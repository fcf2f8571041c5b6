"""IWSLT14 De-En in its released layout: readers for preparation, writers for the mini corpus.

The archive fairseq mirrors (`de-en.tgz`, top-level folder `de-en/`) holds:

- `train.tags.de-en.de` / `train.tags.de-en.en`: TED talk transcripts, one sentence per line,
  the two files line-parallel. Each talk starts with metadata lines such as
  `<url>...</url>`, `<keywords>...</keywords>`, `<talkid>...</talkid>`, `<title>...</title>`,
  `<description>...</description>`.
- `IWSLT14.TED.dev2010.de-en.{de,en}.xml`, `IWSLT14.TED.tst201{0,1,2}.de-en.{de,en}.xml`,
  `IWSLT14.TEDX.dev2012.de-en.{de,en}.xml`: mteval-style xml, the German file a `<srcset>`,
  the English one a `<refset>`, talks as `<doc docid=".." genre="lectures">`, one segment per
  line as `<seg id="N"> text </seg>` (ids restart in every doc).

The readers keep exactly what fairseq's `examples/translation/prepare-iwslt14.sh` keeps, line
based like its grep/sed pipeline (the files are not always well-formed xml):

- train: drop every line containing `<url>`, `<talkid>` or `<keywords>`; delete the tags
  `<title>`, `</title>`, `<description>`, `</description>` and keep those lines' text as
  sentence pairs. Nothing else is filtered: the script does not drop `<speaker>` (or later
  releases' `<reviewer>`/`<translator>`) lines, so neither do we; empty lines are kept here
  and dropped by cleaning, as by `clean-corpus-n.perl`.
- xml: keep only lines containing `<seg id`; the text is what lies between `<seg id="N">` and
  `</seg>`, stripped of surrounding whitespace. Entities are left as they are (fairseq does not
  unescape them either).

Unlike the shell pipeline, the readers refuse inputs that would silently misalign: parallel
files of unequal length, metadata on a line of one file but not the other, de/en xml files
whose segments (doc and seg ids) differ, and bytes that are not UTF-8.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from comma.data.lines import read_lines
from comma.errors import InputError
from comma.io import atomic_path

log = logging.getLogger(__name__)

SRC_LANG, TGT_LANG = "de", "en"
PAIR = f"{SRC_LANG}-{TGT_LANG}"
TRAIN_PREFIX = f"train.tags.{PAIR}"
# Lines containing one of these are dropped from the training files (prepare-iwslt14.sh).
DROPPED_TRAIN_MARKERS = ("<url>", "<talkid>", "<keywords>")
# Tags deleted from the lines that are kept (their text becomes a sentence pair).
STRIPPED_TRAIN_TAGS = ("<title>", "</title>", "<description>", "</description>")
SEG_MARKER = "<seg id"
_SEG_RE = re.compile(r'<seg id="(\d*)">\s*(.*?)\s*</seg>')
_DOC_RE = re.compile(r'<doc\s[^>]*docid="([^"]*)"')
LANGUAGE_NAMES = {"de": "german", "en": "english"}


@dataclass(frozen=True)
class XmlSegment:
    """One `<seg>` of an mteval xml file, with the doc it belongs to and its 1-based file line."""

    docid: str
    segid: str
    text: str
    line: int


@dataclass(frozen=True)
class TrainTalk:
    """One talk of `train.tags.de-en.*`: metadata, title, description and transcript pairs."""

    talkid: int
    url: tuple[str, str]  # (de, en)
    keywords: tuple[str, str]
    title: tuple[str, str] | None
    description: tuple[str, str] | None
    lines: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class XmlDoc:
    """One `<doc>` of an mteval xml file; segments are numbered 1.. in the order given."""

    docid: str
    url: str
    keywords: str
    title: str
    description: str
    segments: list[str]


def _is_dropped_train_line(line: str) -> bool:
    return any(marker in line for marker in DROPPED_TRAIN_MARKERS)


def _strip_train_tags(line: str) -> str:
    for tag in STRIPPED_TRAIN_TAGS:
        line = line.replace(tag, "")
    return line


def read_train_tags(de_path: str | Path, en_path: str | Path) -> list[tuple[str, str]]:
    """(German, English) sentence pairs of `train.tags.de-en.{de,en}`, metadata removed."""
    de_lines, en_lines = read_lines(de_path), read_lines(en_path)
    for path, lines in ((de_path, de_lines), (en_path, en_lines)):
        if not any(line.strip() for line in lines):
            raise InputError(path, "is empty: a training file needs sentences")
    if len(de_lines) != len(en_lines):
        raise InputError(
            de_path,
            f"has {len(de_lines)} lines but its parallel file {en_path} has {len(en_lines)}: "
            "the two training files must be line-parallel",
        )
    pairs = []
    for lineno, (de, en) in enumerate(zip(de_lines, en_lines, strict=True), 1):
        de_dropped, en_dropped = _is_dropped_train_line(de), _is_dropped_train_line(en)
        if de_dropped != en_dropped:
            meta, text = (de_path, en_path) if de_dropped else (en_path, de_path)
            raise InputError(
                de_path,
                f"metadata line in {meta} faces a sentence in {text}: the files are misaligned",
                lineno,
            )
        if not de_dropped:
            pairs.append((_strip_train_tags(de), _strip_train_tags(en)))
    return pairs


def read_xml(path: str | Path) -> list[XmlSegment]:
    """Every `<seg>` line of an mteval xml file, in file order, with its doc and seg ids."""
    segments = []
    docid = ""
    for lineno, line in enumerate(read_lines(path), 1):
        doc = _DOC_RE.search(line)
        if doc:
            docid = doc.group(1)
        if SEG_MARKER not in line:
            continue
        seg = _SEG_RE.search(line)
        if seg is None:
            raise InputError(
                path,
                f'expected `<seg id="N"> text </seg>` on one line, got {line.strip()!r}',
                lineno,
            )
        segments.append(XmlSegment(docid, seg.group(1), seg.group(2), lineno))
    return segments


def read_xml_segments(path: str | Path) -> list[str]:
    """The texts of every `<seg>` of an mteval xml file, tags and surrounding spaces removed."""
    return [segment.text for segment in read_xml(path)]


def read_xml_pair(
    de_path: str | Path, en_path: str | Path
) -> tuple[list[tuple[str, str]], list[XmlSegment]]:
    """Parallel segments of a German srcset and its English refset; the segments' ids must agree.

    Returns the (de, en) pairs and the German segments (for their doc/seg ids)."""
    de_segments, en_segments = read_xml(de_path), read_xml(en_path)
    if len(de_segments) != len(en_segments):
        raise InputError(
            de_path,
            f"has {len(de_segments)} segments but its parallel file {en_path} has "
            f"{len(en_segments)}",
        )
    for de, en in zip(de_segments, en_segments, strict=True):
        if (de.docid, de.segid) != (en.docid, en.segid):
            raise InputError(
                de_path,
                f"segment doc {de.docid!r} seg {de.segid!r} faces doc {en.docid!r} seg "
                f"{en.segid!r} at {en_path}:{en.line}",
                de.line,
            )
    return [
        (de.text, en.text) for de, en in zip(de_segments, en_segments, strict=True)
    ], de_segments


def corpus_dir(root: str | Path) -> Path:
    """The folder holding the files: `root` itself, or `root/de-en` as the tarball unpacks."""
    root = Path(root)
    if (root / f"{TRAIN_PREFIX}.{SRC_LANG}").is_file() or not (root / PAIR).is_dir():
        return root
    return root / PAIR


def find_test_sets(root: str | Path, test_globs: Sequence[str]) -> list[tuple[str, Path, Path]]:
    """(set name, de xml, en xml) for every xml file matching one of the globs, sorted by name.

    A glob may match the German file, the English file or both; each set is listed once. The
    set name is the file name without `.de.xml`, e.g. `IWSLT14.TED.tst2010.de-en`."""
    folder = corpus_dir(root)
    if not folder.is_dir():
        raise InputError(folder, "IWSLT14 corpus folder not found")
    suffixes = {f".{SRC_LANG}.xml": SRC_LANG, f".{TGT_LANG}.xml": TGT_LANG}
    names = set()
    for entry in sorted(folder.iterdir()):
        if not any(fnmatch.fnmatchcase(entry.name, glob) for glob in test_globs):
            continue
        for suffix in suffixes:
            if entry.name.endswith(suffix):
                names.add(entry.name.removesuffix(suffix))
    if not names:
        raise InputError(folder, f"no {SRC_LANG}/{TGT_LANG} .xml file matches {list(test_globs)}")
    found = []
    for name in sorted(names):
        de, en = folder / f"{name}.{SRC_LANG}.xml", folder / f"{name}.{TGT_LANG}.xml"
        for path, other in ((de, en), (en, de)):
            if not path.is_file():
                raise InputError(path, f"file not found: the parallel file of {other}")
        found.append((name, de, en))
    return found


def read_iwslt14(root: str | Path, test_globs: Sequence[str]) -> dict:
    """Training pairs and the test pairs of the xml files matching `test_globs`.

    Returns {"train": [(de, en)], "test": [(de, en)], "test_ids": ["{set}:{docid}:{segid}"],
    "test_sets": [set names]}; test sets are concatenated in name order."""
    folder = corpus_dir(root)
    train = read_train_tags(
        folder / f"{TRAIN_PREFIX}.{SRC_LANG}", folder / f"{TRAIN_PREFIX}.{TGT_LANG}"
    )
    test, test_ids, test_sets, dropped = [], [], [], []
    for name, de, en in find_test_sets(folder, test_globs):
        pairs, segments = read_xml_pair(de, en)
        for (src, tgt), segment in zip(pairs, segments, strict=True):
            # fairseq does not clean test pairs, but an empty side has nothing to translate or
            # score; real test sets have such segments
            if not src.strip() or not tgt.strip():
                side = de if not src.strip() else en
                dropped.append(f"{Path(side).name} doc {segment.docid} seg {segment.segid}")
                continue
            test.append((src, tgt))
            test_ids.append(f"{name}:{segment.docid}:{segment.segid}")
        test_sets.append(name)
    if dropped:
        log.warning("left out %d empty test segment(s): %s", len(dropped), "; ".join(dropped[:20]))
    return {
        "train": train,
        "test": test,
        "test_ids": test_ids,
        "test_sets": test_sets,
        "test_dropped_empty": dropped,
    }


def _check_text(text: str, what: str) -> str:
    # The formats are line based and the readers find metadata by its tags: text that holds a
    # newline or angle brackets could not be read back as written.
    if any(ch in text for ch in "\n\r<>"):
        raise ValueError(f"{what} cannot hold newlines or angle brackets: {text!r}")
    return text


def write_train_tags(de_path: str | Path, en_path: str | Path, talks: Sequence[TrainTalk]) -> None:
    """Write `train.tags.de-en.{de,en}` as released: per talk the metadata lines, then the text."""
    sides: tuple[list[str], list[str]] = ([], [])
    for talk in talks:
        for side, lines in enumerate(sides):
            lines.append(f"<url>{_check_text(talk.url[side], 'url')}</url>")
            lines.append(f"<keywords>{_check_text(talk.keywords[side], 'keywords')}</keywords>")
            lines.append(f"<talkid>{talk.talkid}</talkid>")
            if talk.title is not None:
                lines.append(f"<title>{_check_text(talk.title[side], 'title')}</title>")
            if talk.description is not None:
                text = _check_text(talk.description[side], "description")
                lines.append(f"<description>{text}</description>")
            lines.extend(_check_text(pair[side], "sentence") for pair in talk.lines)
    for path, lines in zip((de_path, en_path), sides, strict=True):
        with atomic_path(path) as tmp:
            tmp.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def write_xml(path: str | Path, docs: Sequence[XmlDoc], *, setid: str, lang: str) -> None:
    """Write one mteval xml file: a `<srcset>` for German, a `<refset>` for English."""
    if lang not in (SRC_LANG, TGT_LANG):
        raise ValueError(f"lang must be {SRC_LANG!r} or {TGT_LANG!r}, not {lang!r}")
    src_name, tgt_name = LANGUAGE_NAMES[SRC_LANG], LANGUAGE_NAMES[TGT_LANG]
    if lang == SRC_LANG:
        open_set, close_set = f'<srcset setid="{setid}" srclang="{src_name}">', "</srcset>"
    else:
        open_set = f'<refset setid="{setid}" srclang="{src_name}" trglang="{tgt_name}" refid="ref">'
        close_set = "</refset>"
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<mteval>", open_set]
    for doc in docs:
        lines.append(f'<doc docid="{doc.docid}" genre="lectures">')
        lines.append(f"<url>{_check_text(doc.url, 'url')}</url>")
        lines.append(f"<description>{_check_text(doc.description, 'description')}</description>")
        lines.append(f"<keywords>{_check_text(doc.keywords, 'keywords')}</keywords>")
        lines.append(f"<talkid>{doc.docid}</talkid>")
        lines.append(f"<title>{_check_text(doc.title, 'title')}</title>")
        for k, text in enumerate(doc.segments, 1):
            lines.append(f'<seg id="{k}"> {_check_text(text, "segment")} </seg>')
        lines.append("</doc>")
    lines += [close_set, "</mteval>"]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
