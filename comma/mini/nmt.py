"""The mini IWSLT14 De-En corpus: a generated German->English language in the real layout.

One role, the generator, over 600 lines: its grammar, lexicon reader, register and writers are
one language definition, read together (the true dependency of the register is a property of it).

`generate_mini_iwslt14(out_dir, train=, test=, seed=)` writes `train.tags.de-en.{de,en}` (talks
with their metadata lines) and `IWSLT14.TED.{dev2010,tst2010,tst2011,tst2012}.de-en.{de,en}.xml`
(mteval xml) into `out_dir`, exactly as `de-en.tgz` unpacks, so `comma.data.iwslt14` and the
preparation read it like the real corpus. Everything is drawn from `random.Random` streams
seeded by `seed` (train and test from separate streams, so the test set does not depend on the
training size). Full description: docs/mini-nmt-corpus.md.

The grammar (a small, real fragment of German and English):

- Lexicon: 75 nouns (gender, plural, weak masculines such as `Student -> den Studenten`), 42
  verbs (transitive with accusative or dative objects, intransitive, separable `anrufen`,
  `einladen`, `mitbringen`, `dass`-taking), 40 adjectives, 18 names, 7 pronouns, 3 modals,
  frequency and time adverbs, intensifiers, 4 subordinating and 2 coordinating conjunctions;
  nouns, verbs and adjectives carry semantic classes so that subjects, objects and modifiers
  fit (people read books, dogs do not).
- German: V2 main clauses (a fronted time adverb inverts subject and verb), verb-final
  subordinate clauses (`weil`, `dass`, `obwohl`, `wenn`), the main clause after a fronted
  subordinate clause verb-first, clause-final participles (`hat ... gekauft`, `ist ...
  gekommen`), infinitives after modals and separated particles (`ruft ... an`); articles and
  attributive adjectives inflected for gender, number and case (strong, weak and mixed
  declension), `im`/`ins` contractions, `nicht` in the middle field, V1 yes/no questions.
- English: SVO, do-support in questions and negation, the German perfect rendered as the
  simple past, subject-verb agreement (`buys`/`buy`, `is`/`are`/`am`, `was`/`were`,
  `has to`/`have to`), `a`/`an`, frequency adverbs before the verb or after `be`/a modal.
- Sentences of 5-15 tokens on both sides (Moses tokens, punctuation included), length ratio at
  most 1.5 either way, so that `clean-corpus-n.perl -ratio 1.5 ... 1 175` keeps every pair.

The register (what makes the target side hard for a non-autoregressive model): every sentence
pair draws a hidden register, plain / casual / formal with prior 0.5 / 0.3 / 0.2, invisible in
the German. It picks the English variant of nearly every content word (`car`/`ride`/
`automobile`, `buys`/`grabs`/`purchases`, `very`/`really`/`extremely`, `must`/`has to`/`is
required to`, `because`/`since`/`as`, `often` before the verb vs `a lot` at the end), so that
the target words depend on each other beyond what the source says: given one casual word,
the rest is casual. A model that predicts target tokens independently must mix registers;
knowledge distillation replaces the targets by a teacher's output, which collapses the choice
to the mode (plain) and removes that dependency. `register_markers()` lists the English words
that only one register uses.

Only the sampling for length and ratio can let the German hint at the register (formal
variants are a little longer, so a formal sentence is a little less likely to be long).

The register's prior is a knob (`register_prior`, default `REGISTER_PRIOR`, which reproduces the
study's corpus byte for byte): from one register (no dependency) to uniform over three. The true
dependency it leaves, H(register | German) in bits per sentence, is `register_dependency` (exact
Bayes over the length filter, its acceptance rates estimated by Monte Carlo);
`corpus_register_entropy` is the plug-in estimate of the same from generated, labelled pairs.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from comma.data.iwslt14 import (
    PAIR,
    TRAIN_PREFIX,
    TrainTalk,
    XmlDoc,
    write_train_tags,
    write_xml,
)
from comma.io import atomic_dir, write_json

REGISTERS = ("plain", "casual", "formal")
REGISTER_PRIOR = (0.5, 0.3, 0.2)
MIN_TOKENS, MAX_TOKENS = 5, 15
MAX_LENGTH_RATIO = 1.5
# Test sets and their shares: the real sizes of IWSLT14 dev2010, tst2010, tst2011 and tst2012.
TEST_SETS = (
    ("TED.dev2010", 887),
    ("TED.tst2010", 1565),
    ("TED.tst2011", 1433),
    ("TED.tst2012", 1700),
)
TALK_LINES = (40, 120)  # transcript lines per training talk, uniform
DOC_SEGMENTS = (10, 30)  # segments per test talk, uniform
FIRST_TEST_DOCID = 5001  # test talks get ids of their own, as the real test talks do

PERSON, ANIMAL, ARTIFACT, FOOD, TEXT, MEDIA, PLACE, IDEA = (
    "person",
    "animal",
    "artifact",
    "food",
    "text",
    "media",
    "place",
    "idea",
)
ANIMATE = (PERSON, ANIMAL)
CONCRETE = (PERSON, ANIMAL, ARTIFACT, FOOD, TEXT, PLACE)
PERSONS = ("1sg", "2sg", "3sg", "1pl", "2pl", "3pl")


# ---------------------------------------------------------------------------------------------
# Lexicon: the words live in nmt_lexicon.yaml beside this file; the code below gives them
# their grammar.

LEXICON = yaml.safe_load((Path(__file__).with_name("nmt_lexicon.yaml")).read_text("utf-8"))


def _english_plural(word: str) -> str:
    last = word.split()[-1]
    head = word[: len(word) - len(last)]
    if last.endswith(("s", "sh", "ch", "x", "z")):
        return f"{head}{last}es"
    if last.endswith("y") and last[-2:-1] not in "aeiou":
        return f"{head}{last[:-1]}ies"
    return f"{head}{last}s"


def _english_noun(spec: str) -> tuple[str, str]:
    """'man|men' -> ('man', 'men'); 'dog' -> ('dog', 'dogs')."""
    singular, _, plural = spec.partition("|")
    return singular, plural or _english_plural(singular)


@dataclass(frozen=True)
class Noun:
    de_sg: str
    de_pl: str
    gender: str  # m, f, n
    cls: str
    en: tuple[tuple[str, str], ...]  # (singular, plural) per register
    weak: str | None = None  # accusative/dative singular of weak masculines (den Studenten)

    @property
    def de_dat_pl(self) -> str:
        return self.de_pl if self.de_pl.endswith(("n", "s")) else self.de_pl + "n"


def _nouns(cls: str, rows: Sequence[tuple]) -> list[Noun]:
    out = []
    for row in rows:
        de_sg, de_pl, gender, *en, weak = row if len(row) == 7 else (*row, None)
        out.append(Noun(de_sg, de_pl, gender, cls, tuple(_english_noun(s) for s in en), weak))
    return out


NOUNS: list[Noun] = [noun for cls, rows in LEXICON["nouns"].items() for noun in _nouns(cls, rows)]


def _english_s3(base: str) -> str:
    if base.endswith(("s", "sh", "ch", "x", "z", "o")):
        return base + "es"
    if base.endswith("y") and base[-2:-1] not in "aeiou":
        return base[:-1] + "ies"
    return base + "s"


@dataclass(frozen=True)
class EnVerb:
    base: str
    past: str
    pre: str = ""  # between the verb and its object ("looks for the key")
    post: str = ""  # after the object ("asks Anna over")

    @property
    def s3(self) -> str:
        return _english_s3(self.base)


@dataclass(frozen=True)
class Verb:
    de_inf: str  # without a separable particle: rufen for anrufen
    participle: str
    en: tuple[EnVerb, ...]  # per register
    obj_case: str | None = None  # acc, dat, or None (intransitive)
    subj: tuple[str, ...] = (PERSON,)
    obj: tuple[str, ...] = ()
    aux: str = "haben"
    particle: str = ""  # separable prefix: an, ein, mit
    de_2sg: str | None = None  # irregular present forms (du siehst, er sieht)
    de_3sg: str | None = None
    motion: bool = False  # takes a directional PP (in + accusative -> "to")

    @property
    def stem(self) -> str:
        return self.de_inf[:-2] if self.de_inf.endswith("en") else self.de_inf[:-1]

    def present(self, person: str) -> str:
        stem = self.stem
        dental = stem.endswith(("t", "d"))
        if person == "1sg":
            return stem + "e"
        if person == "2sg":
            if self.de_2sg:
                return self.de_2sg
            if dental:
                return stem + "est"
            return stem + ("t" if stem.endswith(("s", "ß", "z", "x")) else "st")
        if person == "3sg":
            return self.de_3sg or stem + ("et" if dental else "t")
        if person == "2pl":
            return stem + ("et" if dental else "t")
        return self.de_inf

    @property
    def infinitive(self) -> str:
        return self.particle + self.de_inf


def _verb(entry: dict) -> Verb:
    """A verb of the lexicon file: German, participle, English per register, and the fields
    that differ from Verb's defaults (noun-class lists become tuples)."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items()}
    english = tuple(EnVerb(*spec) for spec in fields.pop("en"))
    return Verb(fields.pop("de"), fields.pop("participle"), english, **fields)


TRANSITIVE_VERBS = [_verb(entry) for entry in LEXICON["transitive_verbs"]]
INTRANSITIVE_VERBS = [_verb(entry) for entry in LEXICON["intransitive_verbs"]]
# Verbs taking a `dass` clause; wissen is irregular in the singular.
MATRIX_VERBS = [_verb(entry) for entry in LEXICON["matrix_verbs"]]
# wissen: ich weiß (the 1sg follows the 3sg, not the stem).
IRREGULAR_1SG = {"wissen": "weiß"}
AUX_PRESENT = {
    "haben": ("habe", "hast", "hat", "haben", "habt", "haben"),
    "sein": ("bin", "bist", "ist", "sind", "seid", "sind"),
}


@dataclass(frozen=True)
class Adjective:
    de: str  # predicative form
    en: tuple[str, str, str]
    applies: tuple[str, ...]
    attr_stem: str | None = None  # attributive stem when it differs (teuer -> teur-e)

    @property
    def stem(self) -> str:
        return self.attr_stem or self.de


def _adjective(de: str, en: list[str], applies: list[str], attr_stem: str | None = None):
    return Adjective(de, tuple(en), tuple(applies), attr_stem)


ADJECTIVES = [_adjective(*row) for row in LEXICON["adjectives"]]


@dataclass(frozen=True)
class Adverb:
    de: str
    en: tuple[tuple[str, str], ...]  # (words, position "mid" or "end") per register
    tenses: tuple[str, ...] = ("present", "perfect", "modal")
    time: bool = False  # time adverbs may be fronted; frequency adverbs may not


def _adverb(de: str, en: list, tenses: list | None = None, time: bool = False) -> Adverb:
    tenses = tuple(tenses) if tenses is not None else ("present", "perfect", "modal")
    return Adverb(de, tuple(tuple(pair) for pair in en), tenses, time)


TIME_ADVERBS = [_adverb(**entry) for entry in LEXICON["time_adverbs"]]
FREQUENCY_ADVERBS = [_adverb(**entry) for entry in LEXICON["frequency_adverbs"]]
INTENSIFIERS = [
    ("sehr", ("very", "really", "extremely")),
    ("ziemlich", ("quite", "pretty", "rather")),
]
# English modal phrases per register: tokens ("BE"/"HAVE"/"WANT"/"WISH" agree with the
# subject) and where a frequency adverb goes ("must often buy", "often has to buy").
MODALS = {
    "können": (
        ("kann", "kannst", "kann", "können", "könnt", "können"),
        ((("can",), 1), (("can",), 1), (("BE", "able", "to"), 1)),
    ),
    "müssen": (
        ("muss", "musst", "muss", "müssen", "müsst", "müssen"),
        ((("must",), 1), (("HAVE", "to"), 0), (("BE", "required", "to"), 1)),
    ),
    "wollen": (
        ("will", "willst", "will", "wollen", "wollt", "wollen"),
        ((("WANT", "to"), 0), (("WANT", "to"), 0), (("WISH", "to"), 0)),
    ),
}
SUBORDINATORS = {  # German conjunction -> English per register
    "weil": ("because", "since", "as"),
    "obwohl": ("although", "though", "even though"),
    "wenn": ("when", "when", "when"),
}
COORDINATORS = {"aber": ("but", "but", "yet"), "und": ("and", "and", "and")}
THAT = ("that", "", "that")  # casual English drops the complementizer
NAMES = (
    "Anna", "Maria", "Peter", "Thomas", "Lukas", "Sophie", "Paul", "Laura", "Jonas",
    "Lena", "Felix", "Emma", "Julia", "David", "Sarah", "Max", "Lisa", "Jan",
)  # fmt: skip
SURNAMES = ("Schmidt", "Müller", "Weber", "Fischer", "Wagner", "Becker", "Hoffmann", "Koch")
PRONOUNS = (  # German, English, person
    ("ich", "I", "1sg"),
    ("du", "you", "2sg"),
    ("er", "he", "3sg"),
    ("sie", "she", "3sg"),
    ("wir", "we", "1pl"),
    ("ihr", "you", "2pl"),
    ("sie", "they", "3pl"),
)
POSSESSIVES = (("mein", "my"), ("dein", "your"), ("sein", "his"), ("unser", "our"))
PREPOSITIONS = {  # German, case, English, noun classes
    "in": ("dat", "in", (PLACE,)),
    "mit": ("dat", "with", ANIMATE),
    "für": ("acc", "for", ANIMATE),
    "ohne": ("acc", "without", (PERSON, ANIMAL, ARTIFACT)),
}

# German declension: (case, gender or "pl") -> word or ending.
_CASES = ("nom", "acc", "dat")
_KEYS = ("m", "f", "n", "pl")


def _table(rows: dict[str, str]) -> dict[tuple[str, str], str]:
    return {
        (case, key): word
        for case in _CASES
        for key, word in zip(_KEYS, rows[case].split(), strict=True)
    }


DEFINITE = _table({"nom": "der die das die", "acc": "den die das die", "dat": "dem der dem den"})
DEMONSTRATIVE = _table(
    {"nom": "dieser diese dieses diese", "acc": "diesen diese dieses diese",
     "dat": "diesem dieser diesem diesen"}
)  # fmt: skip
EIN_ENDINGS = _table({"nom": "- e - e", "acc": "en e - e", "dat": "em er em en"})
WEAK_ENDINGS = _table({"nom": "e e e en", "acc": "en e e en", "dat": "en en en en"})
MIXED_ENDINGS = _table({"nom": "er e es en", "acc": "en e es en", "dat": "en en en en"})
STRONG_ENDINGS = _table({"nom": "er e es e", "acc": "en e es e", "dat": "em er em en"})
CONTRACTIONS = {("in", "dem"): "im", ("in", "das"): "ins"}


# ---------------------------------------------------------------------------------------------
# Phrases


@dataclass(frozen=True)
class NounPhrase:
    """A subject or object: a pronoun, a name, or determiner + optional adjective + noun."""

    person: str  # agreement: 1sg .. 3pl
    cls: str
    pronoun: tuple[str, str] | None = None  # (German, English)
    name: str | None = None
    noun: Noun | None = None
    det: str = "def"  # def, indef, dem, poss, none
    possessive: tuple[str, str] | None = None
    adj: Adjective | None = None

    @property
    def plural(self) -> bool:
        return self.person.endswith("pl")

    def de(self, case: str) -> list[str]:
        if self.pronoun:
            return [self.pronoun[0]]
        if self.name:
            return [self.name]
        noun = self.noun
        key = "pl" if self.plural else noun.gender
        words = []
        if self.det in ("def", "dem"):
            words.append((DEFINITE if self.det == "def" else DEMONSTRATIVE)[case, key])
            endings = WEAK_ENDINGS
        elif self.det in ("indef", "poss"):
            stem = "ein" if self.det == "indef" else self.possessive[0]
            ending = EIN_ENDINGS[case, key]
            words.append(stem + ("" if ending == "-" else ending))
            endings = MIXED_ENDINGS
        else:
            endings = STRONG_ENDINGS
        if self.adj:
            words.append(self.adj.stem + endings[case, key])
        if self.plural:
            words.append(noun.de_dat_pl if case == "dat" else noun.de_pl)
        else:
            words.append(noun.weak if noun.weak and case != "nom" else noun.de_sg)
        return words

    def en(self, register: int) -> list[str]:
        if self.pronoun:
            return [self.pronoun[1]]
        if self.name:
            return [self.name]
        words = [] if self.adj is None else self.adj.en[register].split()
        words += self.noun.en[register][1 if self.plural else 0].split()
        if self.det == "def":
            return ["the", *words]
        if self.det == "dem":
            return ["these" if self.plural else "this", *words]
        if self.det == "poss":
            return [self.possessive[1], *words]
        if self.det == "indef":
            return ["an" if words[0][0] in "aeiou" else "a", *words]
        return words


def _be_present(person: str) -> str:
    return {"1sg": "am", "3sg": "is"}.get(person, "are")


def _be_past(person: str) -> str:
    return "was" if person in ("1sg", "3sg") else "were"


def _agree(word: str, person: str) -> str:
    """English agreement for the placeholders of modal phrases and do-support."""
    third = person == "3sg"
    return {
        "BE": _be_present(person),
        "HAVE": "has" if third else "have",
        "WANT": "wants" if third else "want",
        "WISH": "wishes" if third else "wish",
        "DO": "does" if third else "do",
    }.get(word, word)


@dataclass
class Clause:
    """One clause's content; rendered to German and English tokens by `de`/`en`."""

    subj: NounPhrase
    tense: str  # present, perfect, modal
    verb: Verb | None = None  # None: copula with `adj`
    obj: NounPhrase | None = None
    adj: Adjective | None = None
    intensifier: tuple[str, tuple[str, str, str]] | None = None
    pp: tuple[str, NounPhrase] | None = None  # German preposition (or "in>" directional)
    adverb: Adverb | None = None
    modal: str | None = None
    negated: bool = False
    fronted: bool = False  # time adverb first (German inverts subject and verb)

    # German ----------------------------------------------------------------------------------
    def _de_finite_and_rest(self) -> tuple[str, list[str], list[str]]:
        """Finite verb, the clause-final rest in a main clause, and the verb-final cluster."""
        k = PERSONS.index(self.subj.person)
        if self.verb is None:
            finite = AUX_PRESENT["sein"][k]
            if self.tense == "perfect":
                return finite, ["gewesen"], ["gewesen", finite]
            return finite, [], [finite]
        verb = self.verb
        if self.tense == "perfect":
            finite = AUX_PRESENT[verb.aux][k]
            return finite, [verb.participle], [verb.participle, finite]
        if self.tense == "modal":
            finite = MODALS[self.modal][0][k]
            return finite, [verb.infinitive], [verb.infinitive, finite]
        if self.subj.person == "1sg" and verb.de_inf in IRREGULAR_1SG:
            finite = IRREGULAR_1SG[verb.de_inf]
        else:
            finite = verb.present(self.subj.person)
        rest = [verb.particle] if verb.particle else []
        return finite, rest, [verb.particle + finite]

    def _de_pp(self) -> list[str]:
        prep, np = self.pp
        directional = prep == "in>"
        prep = "in" if directional else prep
        case = "acc" if directional else PREPOSITIONS[prep][0]
        words = np.de(case)
        contracted = CONTRACTIONS.get((prep, words[0])) if np.det == "def" else None
        return [contracted, *words[1:]] if contracted else [prep, *words]

    def _de_middle(self, with_adverb: bool) -> list[str]:
        words = [self.adverb.de] if self.adverb and with_adverb else []
        if self.verb is None:
            if self.negated:
                words.append("nicht")
            if self.intensifier:
                words.append(self.intensifier[0])
            return [*words, self.adj.de]
        if self.obj:
            words += self.obj.de(self.verb.obj_case)
        if self.negated:
            words.append("nicht")
        if self.pp:
            words += self._de_pp()
        return words

    def de(self, order: str) -> list[str]:
        """order: main (V2), inverted (verb first, after a fronted clause), question, sub."""
        finite, rest, final_cluster = self._de_finite_and_rest()
        subj = self.subj.de("nom")
        if order == "sub":
            return subj + self._de_middle(True) + final_cluster
        if order == "main" and self.fronted:
            return [self.adverb.de, finite, *subj, *self._de_middle(False), *rest]
        if order == "main":
            return [*subj, finite, *self._de_middle(True), *rest]
        return [finite, *subj, *self._de_middle(True), *rest]

    # English ---------------------------------------------------------------------------------
    def _en_adverb(self, register: int) -> tuple[list[str], list[str]]:
        """(mid, end) adverb words."""
        if self.adverb is None or self.fronted:
            return [], []
        words, position = self.adverb.en[register]
        return (words.split(), []) if position == "mid" else ([], words.split())

    def en(self, register: int, question: bool = False) -> list[str]:
        person = self.subj.person
        subj = self.subj.en(register)
        mid, end = self._en_adverb(register)
        front = self.adverb.en[register][0].split() if self.fronted else []
        if self.verb is None:
            be = (_be_past if self.tense == "perfect" else _be_present)(person)
            intens = [self.intensifier[1][register]] if self.intensifier else []
            tail = [
                *(["not"] if self.negated else []),
                *mid,
                *intens,
                *self.adj.en[register].split(),
            ]
            head = [be, *subj] if question else [*front, *subj, be]
            return head + tail + end
        verb = self.verb.en[register]
        complement = [*verb.pre.split()]
        if self.obj:
            complement += self.obj.en(register)
        complement += verb.post.split()
        if self.pp:
            prep, np = self.pp
            complement += ["to" if prep == "in>" else PREPOSITIONS[prep][1], *np.en(register)]
        complement += end
        if self.tense == "modal":
            tokens, at = MODALS[self.modal][1][register]
            phrase = [_agree(t, person) for t in tokens]
            return [*front, *subj, *phrase[:at], *mid, *phrase[at:], verb.base, *complement]
        if question:
            aux = "did" if self.tense == "perfect" else _agree("DO", person)
            return [aux, *subj, *mid, verb.base, *complement]
        if self.negated:
            aux = "did" if self.tense == "perfect" else _agree("DO", person)
            return [*front, *subj, aux, "not", verb.base, *complement]
        form = verb.past if self.tense == "perfect" else verb.s3 if person == "3sg" else verb.base
        return [*front, *subj, *mid, form, *complement]


# ---------------------------------------------------------------------------------------------
# Sampling

_NOUNS_BY_CLASS = {
    cls: [n for n in NOUNS if n.cls == cls] for cls in dict.fromkeys(n.cls for n in NOUNS)
}


class SentenceSampler:
    """Draws sentence pairs; all randomness comes from the given `random.Random`."""

    def __init__(self, rng: random.Random, register_prior: Sequence[float] = REGISTER_PRIOR):
        self.rng = rng
        self.register_prior = check_register_prior(register_prior)

    def _pick(self, items):
        return items[self.rng.randrange(len(items))]

    def noun_phrase(self, classes: Sequence[str], role: str) -> NounPhrase:
        rng = self.rng
        if PERSON in classes and role == "subj" and rng.random() < 0.45:
            if rng.random() < 0.5:
                de, en, person = self._pick(PRONOUNS)
                return NounPhrase(person, PERSON, pronoun=(de, en))
            return NounPhrase("3sg", PERSON, name=self._pick(NAMES))
        if PERSON in classes and role != "subj" and rng.random() < 0.2:
            return NounPhrase("3sg", PERSON, name=self._pick(NAMES))
        cls = self._pick([c for c in classes if c in _NOUNS_BY_CLASS])
        noun = self._pick(_NOUNS_BY_CLASS[cls])
        plural = rng.random() < 0.3
        r = rng.random()
        if r < 0.45:
            det = "def"
        elif r < 0.75:
            det = "none" if plural else "indef"
        elif r < 0.85:
            det = "dem"
        else:
            det = "poss"
        possessive = self._pick(POSSESSIVES) if det == "poss" else None
        adj = None
        if rng.random() < 0.3:
            adj = self._pick([a for a in ADJECTIVES if cls in a.applies])
        return NounPhrase("3pl" if plural else "3sg", cls, None, None, noun, det, possessive, adj)

    def clause(self, *, allow_front: bool, allow_question: bool) -> tuple[Clause, bool]:
        """A clause and whether it is a question."""
        rng = self.rng
        question = allow_question and rng.random() < 0.15
        kind = rng.random()
        tense = self._pick(("present", "present", "perfect", "modal"))
        if kind < 0.25:  # copula
            tense = "perfect" if tense == "perfect" else "present"
            adj_classes = self._pick(
                [(PERSON,), (ANIMAL,), (ARTIFACT, PLACE, FOOD, TEXT, MEDIA, IDEA)]
            )
            subj = self.noun_phrase(adj_classes, "subj")
            clause = Clause(
                subj, tense, adj=self._pick([a for a in ADJECTIVES if subj.cls in a.applies])
            )
            if rng.random() < 0.4:
                clause.intensifier = self._pick(INTENSIFIERS)
        else:
            verb = self._pick(TRANSITIVE_VERBS if kind < 0.7 else INTRANSITIVE_VERBS)
            subj = self.noun_phrase(verb.subj, "subj")
            clause = Clause(subj, tense, verb=verb)
            if verb.obj_case:
                clause.obj = self.noun_phrase(verb.obj, "obj")
            if tense == "modal":
                clause.modal = self._pick(tuple(MODALS))
            if rng.random() < (0.6 if verb.obj_case is None else 0.25):
                clause.pp = self._pp(verb)
        if question and tense == "modal":
            question = False
        r = rng.random()
        if r < 0.25:
            candidates = [a for a in TIME_ADVERBS if clause.tense in a.tenses]
            clause.adverb = self._pick(candidates)
            clause.fronted = allow_front and not question and rng.random() < 0.4
        elif r < 0.45:
            clause.adverb = self._pick(FREQUENCY_ADVERBS)
        negatable = clause.tense != "modal" and (clause.adverb is None or clause.adverb.time)
        definite_obj = clause.obj is None or clause.obj.det in ("def", "dem", "poss")
        definite_obj = definite_obj or bool(clause.obj and clause.obj.name)
        if negatable and definite_obj and not question and rng.random() < 0.15:
            clause.negated = True
        return clause, question

    def _pp(self, verb: Verb) -> tuple[str, NounPhrase]:
        if verb.motion and self.rng.random() < 0.7:
            return "in>", self.noun_phrase((PLACE,), "pp")
        prep = self._pick(tuple(PREPOSITIONS))
        return prep, self.noun_phrase(PREPOSITIONS[prep][2], "pp")

    def sentence(self, register: int) -> tuple[list[str], list[str]]:
        """German and English tokens of one sentence (no length check)."""
        rng = self.rng
        r = rng.random()
        if r < 0.4:
            clause, question = self.clause(allow_front=True, allow_question=True)
            if question:
                return [*clause.de("question"), "?"], [*clause.en(register, question=True), "?"]
            return [*clause.de("main"), "."], [*clause.en(register), "."]
        if r < 0.7:  # main clause + subordinate clause, either order
            main, _ = self.clause(allow_front=False, allow_question=False)
            sub, _ = self.clause(allow_front=False, allow_question=False)
            conj = self._pick(tuple(SUBORDINATORS))
            en_conj = SUBORDINATORS[conj][register].split()
            if rng.random() < 0.5:
                de = [*main.de("main"), ",", conj, *sub.de("sub"), "."]
                en = [*main.en(register), *en_conj, *sub.en(register), "."]
            else:
                de = [conj, *sub.de("sub"), ",", *main.de("inverted"), "."]
                en = [*en_conj, *sub.en(register), ",", *main.en(register), "."]
            return de, en
        if r < 0.85:  # X sagt/glaubt/weiß/hofft, dass ...
            verb = self._pick(MATRIX_VERBS)
            subj = self.noun_phrase((PERSON,), "subj")
            matrix = Clause(subj, self._pick(("present", "present", "perfect")), verb=verb)
            sub, _ = self.clause(allow_front=False, allow_question=False)
            de = [*matrix.de("main"), ",", "dass", *sub.de("sub"), "."]
            en = [*matrix.en(register), *THAT[register].split(), *sub.en(register), "."]
            return de, en
        first, _ = self.clause(allow_front=True, allow_question=False)
        second, _ = self.clause(allow_front=False, allow_question=False)
        conj = self._pick(tuple(COORDINATORS))
        comma = [","] if conj == "aber" else []
        de = [*first.de("main"), *comma, conj, *second.de("main"), "."]
        en = [*first.en(register), *comma, COORDINATORS[conj][register], *second.en(register), "."]
        return de, en

    def register(self) -> int:
        # one random() per draw whatever the prior: the default consumes the stream as before
        return self.rng.choices(range(len(REGISTERS)), weights=self.register_prior)[0]

    def pair(self) -> tuple[str, str, int]:
        """One (German, English, register) sentence pair within the length limits."""
        register = self.register()
        while True:
            de, en = self.sentence(register)
            if fits(de, en):
                return detokenize(de), detokenize(en), register

    def accepted_registers(self) -> tuple[bool, ...]:
        """Draw one sentence structure as :meth:`sentence` does and say, per register, whether
        its rendering in that register passes the length limits. Every draw of `sentence` is
        made before and apart from the register (which only picks English words), so the
        renderings from one saved state share the structure and the German, and leave the
        stream where one rendering would."""
        state = self.rng.getstate()
        accepted = []
        for register in range(len(REGISTERS)):
            self.rng.setstate(state)
            accepted.append(fits(*self.sentence(register)))
        return tuple(accepted)

    def labelled_pair(self) -> tuple[str, str, int, tuple[bool, ...]]:
        """:meth:`pair` with the acceptance pattern of the sentence it returns (which registers'
        renderings of its structure pass the length limits: what its German tells about the
        register); the same draws, so the same pairs as :meth:`pair` from the same stream."""
        register = self.register()
        while True:
            before = self.rng.getstate()
            de, en = self.sentence(register)
            if fits(de, en):
                after = self.rng.getstate()
                self.rng.setstate(before)
                accepted = self.accepted_registers()
                self.rng.setstate(after)
                return detokenize(de), detokenize(en), register, accepted


def fits(de: Sequence[str], en: Sequence[str]) -> bool:
    """The length filter of a pair: 5-15 tokens on both sides, length ratio at most 1.5."""
    n_de, n_en = len(de), len(en)
    if not (MIN_TOKENS <= n_de <= MAX_TOKENS and MIN_TOKENS <= n_en <= MAX_TOKENS):
        return False
    return max(n_de / n_en, n_en / n_de) <= MAX_LENGTH_RATIO


def detokenize(tokens: Sequence[str]) -> str:
    """Tokens to text: punctuation attached to the word before it, first letter capitalized."""
    text = ""
    for token in tokens:
        text += token if token in (",", ".", "?") or not text else " " + token
    return text[:1].upper() + text[1:]


def register_markers() -> dict[str, list[str]]:
    """English words (lowercased) that only one register uses, per register name.

    Every word the grammar can put in a register's sentences counts, function words included,
    so a marker found in a sentence identifies that sentence's register."""
    vocab: list[set[str]] = [set() for _ in REGISTERS]
    common = {"the", "a", "an", "this", "these", "not", "do", "does", "did", "to", "that"}
    common |= {"am", "is", "are", "was", "were", "has", "have", "want", "wants", ",", ".", "?"}
    common |= {p[1].lower() for p in PRONOUNS} | {p[1] for p in POSSESSIVES}
    common |= {name.lower() for name in NAMES} | {p[1] for p in PREPOSITIONS.values()}
    for r, words in enumerate(vocab):
        words |= common
        for noun in NOUNS:
            for form in noun.en[r]:
                words.update(form.split())
        for verb in TRANSITIVE_VERBS + INTRANSITIVE_VERBS + MATRIX_VERBS:
            v = verb.en[r]
            words.update([v.base, v.s3, v.past, *v.pre.split(), *v.post.split()])
        for adj in ADJECTIVES:
            words.update(adj.en[r].split())
        for adverb in TIME_ADVERBS + FREQUENCY_ADVERBS:
            words.update(adverb.en[r][0].split())
        for _, variants in INTENSIFIERS:
            words.add(variants[r])
        for _, variants in MODALS.values():
            words.update(_agree(t, p) for t in variants[r][0] for p in PERSONS)
        for table in (SUBORDINATORS, COORDINATORS):
            for variants in table.values():
                words.update(variants[r].split())
        words.update(THAT[r].split())
    return {
        REGISTERS[r]: sorted(words - set().union(*(v for k, v in enumerate(vocab) if k != r)))
        for r, words in enumerate(vocab)
    }


# ---------------------------------------------------------------------------------------------
# The register's prior and the dependency it leaves

# A prior must sum to 1 within this (YAML cannot write 1/3 exactly).
PRIOR_TOLERANCE = 1e-6


def check_register_prior(prior: Sequence[float], where: str = "register_prior") -> tuple:
    """`prior` as a tuple of floats (as given: the default keeps its exact weights), or a
    ValueError naming `where`: one probability per register, none negative, summing to 1."""
    values = tuple(prior) if isinstance(prior, (list, tuple)) else None
    if values is None or len(values) != len(REGISTERS):
        raise ValueError(
            f"{where}: {prior!r} is not a register prior: give one probability per register "
            f"({', '.join(REGISTERS)}), {len(REGISTERS)} numbers"
        )
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{where}: {prior!r} holds a value that is not a number")
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise ValueError(f"{where}: {prior!r} holds a negative or non-finite probability")
    if abs(sum(values) - 1) > PRIOR_TOLERANCE:
        raise ValueError(
            f"{where}: {prior!r} sums to {sum(values):.6g}, not 1 (within {PRIOR_TOLERANCE:g})"
        )
    return tuple(float(v) for v in values)


def entropy_bits(probabilities: Iterable[float]) -> float:
    """Shannon entropy in bits of a distribution (zeros contribute nothing)."""
    return 0.0 - sum(p * math.log2(p) for p in probabilities if p > 0)  # no -0.0


def acceptance_patterns(proposals: int, seed: int) -> Counter:
    """How often each acceptance pattern (per register: does the rendering pass the length
    limits) turns up among `proposals` sentence structures drawn as the corpus draws them
    (:meth:`SentenceSampler.accepted_registers`), from a stream of its own. The structures
    do not depend on the register, so neither do these counts: one set serves every prior."""
    if proposals < 1:
        raise ValueError(f"proposals must be positive, got {proposals}")
    sampler = SentenceSampler(random.Random(f"mini-iwslt14/{seed}/registers"))
    return Counter(sampler.accepted_registers() for _ in range(proposals))


def _conditional_entropy(prior: Sequence[float], q: Mapping[tuple[bool, ...], float]) -> float:
    """H(register | German) for the pattern probabilities `q` of the proposal (see
    :func:`register_dependency`)."""
    z = [sum(w for a, w in q.items() if a[r]) for r in range(len(prior))]
    lacking = [REGISTERS[r] for r, pr in enumerate(prior) if pr > 0 and z[r] == 0]
    if lacking:
        raise ValueError(
            f"no proposal passed the length limits in the register(s) {', '.join(lacking)}: "
            "draw more proposals"
        )
    total = 0.0
    for pattern, weight in q.items():
        joint = [
            pr * a / z[r] if a else 0.0
            for r, (pr, a) in enumerate(zip(prior, pattern, strict=True))
        ]
        mass = sum(joint)  # p(German of this pattern) / q(...): the likelihood ratio
        if mass > 0:
            total += weight * mass * entropy_bits(j / mass for j in joint)
    return total


def register_dependency(
    prior: Sequence[float], patterns: Mapping[tuple[bool, ...], int], *, resamples: int = 200
) -> dict:
    """The true dependency of a corpus drawn with `prior`: H(register | German) in bits per
    sentence, the part of the register's entropy that only the other target tokens reveal.

    A pair draws its register r from the prior, then sentence structures s from a proposal q
    that does not depend on r, until s rendered in r passes the length limits (acceptance
    a_r(s) in {0, 1}). So p(s | r) = q(s) a_r(s) / Z_r with Z_r = E_q[a_r], and, as the German
    fixes s up to the rare structures that read alike, p(r | German) = prior_r a_r(s) / Z_r,
    normalized: the German tells the register only through its acceptance pattern a(s).
    Hence H = sum over patterns a of q(a) w(a) H(prior * a / Z, normalized), w(a) = sum_r
    prior_r a_r / Z_r. Exact but for q(a), estimated from the counts `patterns`
    (:func:`acceptance_patterns`); `sd_bits` is the estimate's Monte Carlo standard error (a
    parametric bootstrap of the counts, `resamples` times, seeded)."""
    prior = check_register_prior(prior)
    n = sum(patterns.values())
    if n < 1:
        raise ValueError("no proposals to estimate the acceptance rates from")
    keys = sorted(patterns)
    q = {a: patterns[a] / n for a in keys}
    value = _conditional_entropy(prior, q)
    rng = np.random.default_rng(0)
    draws = rng.multinomial(n, [q[a] for a in keys], size=resamples)
    spread = []
    for counts in draws:
        try:
            spread.append(_conditional_entropy(prior, dict(zip(keys, counts / n, strict=True))))
        except ValueError:  # a resample without any acceptance in a register: skip it
            continue
    prior_entropy = entropy_bits(prior)
    return {
        "registers": list(REGISTERS),
        "register_prior": list(prior),
        "prior_entropy_bits": prior_entropy,
        "true_dependency_bits": value,
        "sd_bits": float(np.std(spread, ddof=1)) if len(spread) > 1 else math.nan,
        "source_information_bits": prior_entropy - value,
        "proposals": n,
        "acceptance": {pattern_name(a): q[a] for a in keys},
    }


def pattern_name(pattern: Sequence[bool]) -> str:
    """An acceptance pattern in words: the registers that pass, joined by '+' ('none')."""
    return "+".join(name for name, a in zip(REGISTERS, pattern, strict=True) if a) or "none"


def corpus_register_entropy(labels: Iterable[tuple[int, tuple[bool, ...]]]) -> float:
    """Plug-in estimate of H(register | German) in bits from generated pairs labelled with
    their register and acceptance pattern (:meth:`SentenceSampler.labelled_pair`): the
    register's empirical entropy within each pattern, weighted by the pattern's share. It is
    biased low by about (registers - 1) * patterns / (2 n ln 2) bits (under 0.002 for 1,000
    pairs and 7 patterns' worth of cells of 3 registers)."""
    cells = Counter((pattern, register) for register, pattern in labels)
    n = sum(cells.values())
    if n == 0:
        raise ValueError("no labelled pairs")
    by_pattern: dict[tuple[bool, ...], list[int]] = {}
    for (pattern, _), count in cells.items():
        by_pattern.setdefault(pattern, []).append(count)
    return sum(
        sum(counts) / n * entropy_bits(c / sum(counts) for c in counts)
        for counts in by_pattern.values()
    )


# ---------------------------------------------------------------------------------------------
# Corpus


def _slug(text: str) -> str:
    return "_".join(text.lower().split())


def sample_pairs(
    n: int,
    rng: random.Random,
    desc: str,
    register_prior: Sequence[float] = REGISTER_PRIOR,
    labelled: bool = False,
) -> list[tuple]:
    """`n` pairs (German, English, register), with `labelled` also each one's acceptance
    pattern (the same pairs: :meth:`SentenceSampler.labelled_pair`)."""
    sampler = SentenceSampler(rng, register_prior)
    draw = sampler.labelled_pair if labelled else sampler.pair
    return [draw() for _ in tqdm(range(n), desc=desc, unit="pair", leave=False)]


def _talk_metadata(rng: random.Random, talkid: int) -> tuple[tuple[str, str], tuple[str, str]]:
    speaker = _slug(f"{rng.choice(NAMES)} {rng.choice(SURNAMES)}")
    topics = rng.sample(NOUNS, 3)
    urls = (
        f"http://www.ted.com/talks/lang/de/{speaker}_{talkid}.html",
        f"http://www.ted.com/talks/{speaker}_{talkid}.html",
    )
    keywords = (
        "talks, " + ", ".join(t.de_sg for t in topics),
        "talks, " + ", ".join(t.en[0][0] for t in topics),
    )
    return urls, keywords


def training_talks(pairs: Sequence[tuple[str, str]], rng: random.Random) -> list[TrainTalk]:
    """Lay pairs out as talks: each talk's title and description are its first two pairs."""
    talks, k = [], 0
    while k < len(pairs):
        talkid = len(talks) + 1
        urls, keywords = _talk_metadata(rng, talkid)
        n = min(len(pairs) - k, 2 + rng.randint(*TALK_LINES))
        chunk = list(pairs[k : k + n])
        k += n
        title = chunk[0]
        description = chunk[1] if n > 1 else None
        talks.append(TrainTalk(talkid, urls, keywords, title, description, chunk[2:]))
    return talks


def _split_sizes(total: int, weights: Sequence[int]) -> list[int]:
    """Largest-remainder apportionment of `total` over `weights`."""
    exact = [total * w / sum(weights) for w in weights]
    sizes = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: (sizes[i] - exact[i], i))
    for i in by_remainder[: total - sum(sizes)]:
        sizes[i] += 1
    return sizes


def xml_documents(
    pairs: Sequence[tuple[str, str]], rng: random.Random
) -> list[tuple[str, list[XmlDoc], list[XmlDoc]]]:
    """(set name, German docs, English docs) for every test set, pairs split by real shares."""
    sets, k, docid = [], 0, FIRST_TEST_DOCID
    for (name, _), size in zip(
        TEST_SETS, _split_sizes(len(pairs), [w for _, w in TEST_SETS]), strict=True
    ):
        de_docs, en_docs = [], []
        end = k + size
        while k < end:
            n = min(end - k, rng.randint(*DOC_SEGMENTS))
            chunk = pairs[k : k + n]
            k += n
            urls, keywords = _talk_metadata(rng, docid)
            title, description = rng.choice(chunk), rng.choice(chunk)
            for side, docs in enumerate((de_docs, en_docs)):
                docs.append(
                    XmlDoc(str(docid), urls[side], keywords[side], title[side], description[side],
                           [pair[side] for pair in chunk])
                )  # fmt: skip
            docid += 1
        sets.append((name, de_docs, en_docs))
    return sets


def generate_mini_iwslt14(
    out_dir: str | Path,
    *,
    train: int,
    test: int,
    seed: int,
    register_prior: Sequence[float] = REGISTER_PRIOR,
) -> None:
    """Write the mini corpus into `out_dir` (the `de-en/` folder) atomically.

    `train` sentence pairs end up in `train.tags.de-en.{de,en}` (as the reader returns them:
    titles and descriptions included), `test` segments over the four TED test sets.
    `register_prior`: the hidden register's prior (plain, casual, formal); the default is the
    study's corpus."""
    _write_corpus(out_dir, train, test, seed, register_prior, labelled=False)


def _write_corpus(
    out_dir: str | Path,
    train: int,
    test: int,
    seed: int,
    register_prior: Sequence[float],
    labelled: bool,
) -> dict[str, list[tuple[int, tuple[bool, ...]]]]:
    """The corpus into `out_dir`; with `labelled`, the (register, acceptance pattern) of every
    train and test pair (else empty lists)."""
    if train < 1 or test < 1:
        raise ValueError(f"train and test must be positive, got train={train}, test={test}")
    train_rng = random.Random(f"mini-iwslt14/{seed}/train")
    test_rng = random.Random(f"mini-iwslt14/{seed}/test")
    drawn = {
        split: sample_pairs(n, rng, f"mini IWSLT14 {split}", register_prior, labelled)
        for split, n, rng in (("train", train, train_rng), ("test", test, test_rng))
    }
    train_pairs = [(pair[0], pair[1]) for pair in drawn["train"]]
    test_pairs = [(pair[0], pair[1]) for pair in drawn["test"]]
    with atomic_dir(out_dir) as tmp:
        write_train_tags(
            tmp / f"{TRAIN_PREFIX}.de",
            tmp / f"{TRAIN_PREFIX}.en",
            training_talks(train_pairs, train_rng),
        )
        for name, de_docs, en_docs in xml_documents(test_pairs, test_rng):
            setid = f"iwslt2014-{name.split('.')[-1]}"
            write_xml(tmp / f"IWSLT14.{name}.{PAIR}.de.xml", de_docs, setid=setid, lang="de")
            write_xml(tmp / f"IWSLT14.{name}.{PAIR}.en.xml", en_docs, setid=setid, lang="en")
    if not labelled:
        return {split: [] for split in drawn}
    return {split: [(pair[2], pair[3]) for pair in pairs] for split, pairs in drawn.items()}


def generate_register_level(
    out_dir: str | Path,
    report_json: str | Path,
    *,
    train: int,
    test: int,
    seed: int,
    register_prior: Sequence[float],
    proposals: int,
    proposal_seed: int,
) -> dict:
    """One level of the calibration (docs/experiments.md): the mini corpus drawn with
    `register_prior` into `out_dir` (as :func:`generate_mini_iwslt14`, the same bytes), and
    into `report_json` its true dependency (:func:`register_dependency` from `proposals`
    structures of the stream `proposal_seed`, the same for every level) beside the plug-in
    estimate of the same from the corpus's own labelled train and test pairs
    (:func:`corpus_register_entropy`) and their register shares. Returns the report."""
    prior = check_register_prior(register_prior)
    labels = _write_corpus(out_dir, train, test, seed, prior, labelled=True)
    report = register_dependency(prior, acceptance_patterns(proposals, proposal_seed))
    report["proposal_seed"] = proposal_seed
    report["seed"] = seed
    report["corpus"] = {
        split: {
            "pairs": len(pairs),
            "plugin_bits": corpus_register_entropy(pairs),
            "register_shares": [
                sum(1 for r, _ in pairs if r == k) / len(pairs) for k in range(len(REGISTERS))
            ],
        }
        for split, pairs in labels.items()
    }
    write_json(report_json, report)
    return report
