"""The embedded mini speech corpora: LJSpeech-1.1 and LibriTTS layouts, synthesized offline.

One role, the generator of both corpora, over 600 lines: the sentence grammar, the number
normalization and the two layouts' writers are one corpus definition.

Sentences come from a small English grammar (about 550 real words; past-tense clauses with
noun phrases, prepositional phrases, adverbs, time adjuncts and conjunctions) drawn
deterministically from the seed. As in LJSpeech's metadata and LibriTTS's text files, each
sentence has two forms: the original text, with numerals ("12 men", "in 1863", "$40", "the 3rd
day"), and the normalized text, with numbers, ordinals and money spelled out ("twelve men", "in
eighteen sixty-three", "forty dollars", "the third day"). Sentence length is counted in words of
the normalized text and drawn uniformly from [min_words, max_words]; no sentence repeats within a
corpus, so held-out sentences are unseen (same grammar and vocabulary).

espeak-ng (`comma.mini.espeak`) speaks the normalized text. Each utterance then gets a little
leading/trailing silence, and a Gaussian noise floor stands in for the recording room; the
utterance's signal-to-noise ratio is measured from the two. Audio is 16-bit PCM mono WAV.

- `generate_mini_ljspeech(out_dir, ...)` writes `out_dir` (e.g. `LJSpeech-1.1/`) like LJSpeech:
  `metadata.csv` (`ID|transcription|normalized transcription`, pipe-separated, no header, UTF-8,
  ids `LJ001-0001` grouped in "chapters" of 150-350 clips), `wavs/<ID>.wav` at 22,050 Hz, and a
  README. One speaker: a single voice with small per-utterance rate/pitch variation.
- `generate_mini_libritts(out_dir, ...)` writes, under the `LibriTTS/` folder `out_dir`, one
  folder per subset in LibriTTS's layout `<subset>/<speaker>/<chapter>/`:
  `<speaker>_<chapter>_<paragraph>_<sentence>.wav` (24,000 Hz; paragraph and sentence six-digit
  zero-padded) with `.original.txt` and `.normalized.txt` beside it (the text, UTF-8, no line
  break), per chapter `<speaker>_<chapter>.trans.tsv` (`id<TAB>original<TAB>normalized`) and
  `<speaker>_<chapter>.book.tsv` (the same three columns, then the alignment metadata LibriTTS
  gives there: aligned flag, start and end second in the chapter, SNR in dB), and
  `SPEAKERS.txt` in LibriSpeech's format at the top. `speakers` is per subset and subsets have
  disjoint speakers, as in LibriTTS; every speaker is a different espeak-ng voice (accent x
  voice variant) with its own pitch, rate, loudness and noise floor.

Both are deterministic: the same arguments give byte-identical files. Each corpus folder
(LJSpeech) or subset folder (LibriTTS) appears atomically, complete or not at all.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import yaml
from tqdm import tqdm

from comma.data.libritts import SAMPLE_RATE as LIBRITTS_RATE
from comma.data.ljspeech import SAMPLE_RATE as LJSPEECH_RATE
from comma.io import atomic_dir, write_lines
from comma.mini.espeak import EspeakSynthesizer

LJSPEECH_SAMPLE_RATE = LJSPEECH_RATE  # the real datasets' rates (comma.data)
LIBRITTS_SAMPLE_RATE = LIBRITTS_RATE
WAV_SUBTYPE = "PCM_16"

# --------------------------------------------------------------------------------------------
# Grammar

# The words live in speech_lexicon.yaml beside this file: nouns by kind (singular, plural),
# adjectives by kind, verbs with the kinds they take, and the closed classes. The kinds keep
# clauses sensible: people and animals act, verbs take the kinds of object they can.
LEXICON = yaml.safe_load(Path(__file__).with_name("speech_lexicon.yaml").read_text("utf-8"))
NOUNS = {kind: [tuple(pair) for pair in pairs] for kind, pairs in LEXICON["nouns"].items()}
ADJECTIVES = LEXICON["adjectives"]
TRANSITIVE_VERBS = [(verbs, tuple(kinds)) for verbs, kinds in LEXICON["transitive_verbs"]]
INTRANSITIVE_VERBS = LEXICON["intransitive_verbs"]
TRADE_VERBS = LEXICON["trade_verbs"]
ADVERBS = LEXICON["adverbs"]
PREPOSITIONS = LEXICON["prepositions"]
NAMES = LEXICON["names"]
TITLES = LEXICON["titles"]
SURNAMES = LEXICON["surnames"]
SUBJECT_PRONOUNS = LEXICON["subject_pronouns"]
OBJECT_PRONOUNS = LEXICON["object_pronouns"]
SINGULAR_DETERMINERS = LEXICON["singular_determiners"]
PLURAL_DETERMINERS = LEXICON["plural_determiners"]
TIME_NOUNS = LEXICON["time_nouns"]
TIME_PHRASES = LEXICON["time_phrases"]
CONJUNCTIONS = LEXICON["conjunctions"]


@dataclass(frozen=True)
class Sentence:
    """One sentence in its written form (numerals) and normalized form (numbers in words)."""

    original: str
    normalized: str


@functools.cache
def _inflect_engine():
    # Imported lazily: inflect (a g2p_en dependency) takes about a second to import.
    import inflect

    return inflect.engine()


# Cached: inflect's type-checked calls cost ~0.2 ms each and the grammar asks for the same
# few hundred numbers over and over.
@functools.cache
def cardinal_words(number: int) -> str:
    """12 -> "twelve", 312 -> "three hundred twelve" (no "and", like LJSpeech-style cleaners)."""
    return _inflect_engine().number_to_words(number, andword="")


@functools.cache
def ordinal_words(number: int) -> str:
    """3 -> "third", 21 -> "twenty-first"."""
    return _inflect_engine().number_to_words(_inflect_engine().ordinal(number))


@functools.cache
def year_words(year: int) -> str:
    """Years read in pairs: 1863 -> "eighteen sixty-three", 1805 -> "eighteen oh five",
    1900 -> "nineteen hundred"."""
    if not 1100 <= year <= 1999:
        raise ValueError(f"year {year} outside 1100-1999")
    if year % 100 == 0:
        return f"{cardinal_words(year // 100)} hundred"
    words = _inflect_engine().number_to_words(year, andword="", zero="oh", group=2)
    return words.replace(", ", " ")


def ordinal_suffix(number: int) -> str:
    if number % 100 in (11, 12, 13):
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")


# A token is (original, normalized); a normalized token may be several words.
Token = tuple[str, str]


def _word(text: str) -> Token:
    return (text, text)


class _Grammar:
    """Random clauses of a small English grammar; every choice comes from `rng`."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def chance(self, probability: float) -> bool:
        return self.rng.random() < probability

    def pick(self, options: Sequence[str]) -> str:
        return self.rng.choice(options)

    def number(self) -> Token:
        value = self.rng.randint(2, 99)
        return (str(value), cardinal_words(value))

    def noun_phrase(self, kinds: Sequence[str], role: str, modifier: bool = True) -> list[Token]:
        """A noun phrase of one of `kinds`, as the clause's `role` ("subject" or "object")."""
        if "person" in kinds:
            draw = self.rng.random()
            if draw < 0.10:
                pronouns = SUBJECT_PRONOUNS if role == "subject" else OBJECT_PRONOUNS
                return [_word(self.pick(pronouns))]
            if draw < 0.24:
                return [_word(self.pick(NAMES))]
            if draw < 0.32:
                return [_word(self.pick(TITLES)), _word(self.pick(SURNAMES))]
        kind = self.pick(kinds)
        singular, plural_form = self.rng.choice(NOUNS[kind])
        plural = self.chance(0.35)
        if plural:
            tokens = [self.number() if self.chance(0.35) else _word(self.pick(PLURAL_DETERMINERS))]
        else:
            tokens = [_word(self.pick(SINGULAR_DETERMINERS))]
        adjective_count = self.rng.choices((0, 1, 2), weights=(0.5, 0.4, 0.1))[0]
        tokens += [_word(word) for word in self.rng.sample(ADJECTIVES[kind], adjective_count)]
        tokens.append(_word(plural_form if plural else singular))
        if tokens[0][0] == "a" and tokens[1][0][0] in "aeiou":
            tokens[0] = _word("an")
        if modifier and self.chance(0.12):
            tokens += self.prepositional_phrase()
        return tokens

    def prepositional_phrase(self) -> list[Token]:
        place = self.noun_phrase(("place", "place", "thing"), "object", modifier=False)
        return [_word(self.pick(PREPOSITIONS)), *place]

    def money(self) -> list[Token]:
        amount = self.rng.choice((self.rng.randint(2, 99), self.rng.randint(100, 999)))
        return [(f"${amount}", f"{cardinal_words(amount)} dollars")]

    def time_adjunct(self) -> list[Token]:
        draw = self.rng.random()
        if draw < 0.4:
            year = self.rng.randint(1800, 1999)
            return [_word("in"), (str(year), year_words(year))]
        if draw < 0.7:
            nth = self.rng.randint(1, 31)
            return [
                _word("on the"),
                (f"{nth}{ordinal_suffix(nth)}", ordinal_words(nth)),
                _word(self.pick(TIME_NOUNS)),
            ]
        return [_word(self.pick(TIME_PHRASES))]

    def clause(self) -> list[Token]:
        subject_kind = "animal" if self.chance(0.08) else "person"
        tokens = self.noun_phrase((subject_kind,), "subject")
        draw = self.rng.random()
        if draw < 0.35 or subject_kind == "animal":
            tokens.append(_word(self.pick(INTRANSITIVE_VERBS[subject_kind])))
            extra = self.rng.random()
            if extra < 0.3:
                tokens.append(_word(self.pick(ADVERBS)))
            elif extra < 0.7:
                tokens += self.prepositional_phrase()
        elif draw < 0.9:
            verbs, object_kinds = self.rng.choice(TRANSITIVE_VERBS)
            tokens.append(_word(self.pick(verbs)))
            tokens += self.noun_phrase(object_kinds, "object")
            extra = self.rng.random()
            if extra < 0.3:
                tokens += self.prepositional_phrase()
            elif extra < 0.5:
                tokens.append(_word(self.pick(ADVERBS)))
        elif self.chance(0.5):
            tokens.append(_word("paid"))
            tokens += self.money()
            tokens.append(_word("for"))
            tokens += self.noun_phrase(("thing", "animal", "document"), "object", modifier=False)
        else:
            tokens.append(_word(self.pick(TRADE_VERBS)))
            tokens += self.noun_phrase(("thing", "animal"), "object", modifier=False)
            tokens.append(_word("for"))
            tokens += self.money()
        if self.chance(0.15):
            tokens += self.time_adjunct()
        return tokens


def _word_count(tokens: Sequence[Token]) -> int:
    """Words of the normalized text; punctuation is not a word."""
    return sum(
        any(char.isalnum() for char in word)
        for _, normalized in tokens
        for word in normalized.split()
    )


def _render(tokens: Sequence[Token], side: int) -> str:
    text = " ".join(token[side] for token in tokens).replace(" ,", ",")
    # A sentence starting with a numeral ("12 men ...") stays as written.
    return text[0].upper() + text[1:] + "."


def _sentence_of_length(grammar: _Grammar, words: int, attempts: int = 2000) -> list[Token]:
    """A sentence of exactly `words` normalized words: clauses joined by conjunctions,
    optionally led by a time adjunct; rejection sampling on the last clause's length."""
    clauses = max(1, math.ceil(words / 9))
    for _ in range(attempts):
        tokens: list[Token] = []
        if grammar.chance(0.08):
            tokens += grammar.time_adjunct() + [_word(",")]
        for _ in range(clauses - 1):
            tokens += grammar.clause()
            tokens.append(_word(grammar.pick(CONJUNCTIONS)))
        remaining = words - _word_count(tokens)
        if remaining < 2:
            continue
        for _ in range(50):
            last = grammar.clause()
            if _word_count(last) == remaining:
                return tokens + last
    raise ValueError(f"the grammar found no sentence of {words} words in {attempts} attempts")


def generate_sentences(
    count: int, *, min_words: int, max_words: int, rng: random.Random
) -> list[Sentence]:
    """`count` distinct sentences, lengths (normalized words) uniform in [min_words, max_words]."""
    if min_words < 2:
        raise ValueError(f"min_words must be at least 2 (a subject and a verb), got {min_words}")
    if max_words < min_words:
        raise ValueError(f"max_words ({max_words}) is less than min_words ({min_words})")
    grammar = _Grammar(rng)
    sentences: list[Sentence] = []
    seen: set[str] = set()
    # Many repeats in a row mean the grammar has (nearly) no unused sentence of these lengths.
    repeats_in_a_row = 0
    while len(sentences) < count:
        tokens = _sentence_of_length(grammar, rng.randint(min_words, max_words))
        sentence = Sentence(_render(tokens, 0), _render(tokens, 1))
        key = "".join(char for char in sentence.normalized.lower() if char.isalpha() or char == " ")
        if key in seen:
            repeats_in_a_row += 1
            if repeats_in_a_row == 200:
                raise ValueError(
                    f"could not draw {count} distinct sentences of {min_words}-{max_words} "
                    f"words (found {len(sentences)}): widen the word range or lower the count"
                )
            continue
        repeats_in_a_row = 0
        seen.add(key)
        sentences.append(sentence)
    return sentences


# --------------------------------------------------------------------------------------------
# Voices and recording conditions

# Ids are LJ<chapter>-<clip>; the real corpus has 50 chapters of 100-400 clips.
LJSPEECH_CHAPTER_SIZE = (150, 350)

# LibriTTS speakers: an English accent x a voice variant (m* male, f* female), plus their own
# base pitch, rate, loudness and noise floor.
ACCENTS = ["en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-us-nyc", "en-029"]
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5"]
SPEAKER_RATE = (140, 200)
SPEAKER_PITCH = (30, 70)
SPEAKER_PITCH_RANGE = (35, 75)
SPEAKER_GAIN_DB = (-6.0, 0.0)
SPEAKER_NOISE_DBFS = (-68.0, -54.0)
UTTERANCE_RATE_JITTER = 0.06  # relative, per utterance
UTTERANCE_PITCH_JITTER = 4
UTTERANCE_PITCH_RANGE_JITTER = 8
SILENCE_SECONDS = (0.05, 0.25)  # leading and trailing, each
SENTENCES_PER_PARAGRAPH = (1, 5)


@dataclass(frozen=True)
class Voice:
    """How one speaker sounds (before per-utterance variation)."""

    name: str  # espeak-ng voice, language+variant
    rate: int
    pitch: int
    pitch_range: int
    gain_db: float
    noise_dbfs: float

    @property
    def sex(self) -> str:
        return "F" if self.name.partition("+")[2].startswith("f") else "M"


# LJSpeech's reader is one woman: one US-English female espeak-ng variant reads everything.
LJSPEECH_VOICE = Voice(
    name="en-us+f4", rate=162, pitch=48, pitch_range=55, gain_db=0.0, noise_dbfs=-62.0
)


@dataclass(frozen=True)
class ClipPlan:
    """Everything needed to render one clip, fixed before any audio is made."""

    utterance_id: str
    sentence: Sentence
    voice: Voice
    rate: int
    pitch: int
    pitch_range: int
    lead_seconds: float
    trail_seconds: float
    noise_seed: int


def _plan_clip(rng: random.Random, utterance_id: str, sentence: Sentence, voice: Voice) -> ClipPlan:
    """`sentence` read by `voice`, with the clip's own small rate and pitch variation."""
    rate = round(voice.rate * (1 + rng.uniform(-UTTERANCE_RATE_JITTER, UTTERANCE_RATE_JITTER)))
    pitch = voice.pitch + rng.randint(-UTTERANCE_PITCH_JITTER, UTTERANCE_PITCH_JITTER)
    pitch_range = voice.pitch_range + rng.randint(
        -UTTERANCE_PITCH_RANGE_JITTER, UTTERANCE_PITCH_RANGE_JITTER
    )
    return ClipPlan(
        utterance_id=utterance_id,
        sentence=sentence,
        voice=voice,
        rate=rate,
        pitch=pitch,
        pitch_range=pitch_range,
        lead_seconds=rng.uniform(*SILENCE_SECONDS),
        trail_seconds=rng.uniform(*SILENCE_SECONDS),
        noise_seed=rng.getrandbits(64),
    )


@dataclass(frozen=True)
class Recording:
    pcm: np.ndarray  # int16
    sample_rate: int
    snr_db: float

    @property
    def seconds(self) -> float:
        return len(self.pcm) / self.sample_rate


def _record(
    synthesizer: EspeakSynthesizer,
    utterance: ClipPlan,
    sample_rate: int,
    resample: Callable[[np.ndarray], np.ndarray] | None,
) -> Recording:
    """Speak the utterance, pad it with silence and add the voice's noise floor."""
    speech = synthesizer.synthesize(
        utterance.sentence.normalized,
        utterance.voice.name,
        rate=utterance.rate,
        pitch=utterance.pitch,
        pitch_range=utterance.pitch_range,
    )
    if resample is not None:
        speech = resample(speech)
    speech = speech * np.float32(10 ** (utterance.voice.gain_db / 20))
    clean = np.concatenate(
        [
            np.zeros(round(utterance.lead_seconds * sample_rate), np.float32),
            speech,
            np.zeros(round(utterance.trail_seconds * sample_rate), np.float32),
        ]
    )
    noise_rms = np.float32(10 ** (utterance.voice.noise_dbfs / 20))
    noise = np.random.default_rng(utterance.noise_seed).standard_normal(len(clean), np.float32)
    noise *= noise_rms
    snr_db = 10 * math.log10(float(np.mean(clean**2)) / float(np.mean(noise**2)))
    pcm = np.clip(np.round((clean + noise) * 32768.0), -32768, 32767).astype(np.int16)
    return Recording(pcm=pcm, sample_rate=sample_rate, snr_db=snr_db)


def _write_wav(path: Path, recording: Recording) -> None:
    sf.write(path, recording.pcm, recording.sample_rate, subtype=WAV_SUBTYPE, format="WAV")


def _resampler(source_rate: int, target_rate: int) -> Callable[[np.ndarray], np.ndarray]:
    # libsoxr through librosa: band-limited, deterministic, and under a millisecond per clip
    # (torchaudio's sinc resampler took ~15 ms per clip here).
    def resample(audio: np.ndarray) -> np.ndarray:
        return librosa.resample(
            audio, orig_sr=source_rate, target_sr=target_rate, res_type="soxr_hq"
        ).astype(np.float32, copy=False)

    return resample


def _check_count(name: str, value: int, minimum: int) -> None:
    if not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


# --------------------------------------------------------------------------------------------
# LJSpeech


def _ljspeech_ids(count: int, rng: random.Random) -> list[str]:
    ids: list[str] = []
    chapter = 0
    while len(ids) < count:
        chapter += 1
        size = min(rng.randint(*LJSPEECH_CHAPTER_SIZE), count - len(ids))
        ids += [f"LJ{chapter:03d}-{index:04d}" for index in range(1, size + 1)]
    return ids


def generate_mini_ljspeech(
    out_dir: str | Path, *, utterances: int, min_words: int, max_words: int, seed: int
) -> None:
    """Write a synthetic single-speaker corpus in the LJSpeech-1.1 layout to `out_dir`."""
    _check_count("utterances", utterances, 1)
    rng = random.Random(f"comma-mini-ljspeech:{seed}")
    sentences = generate_sentences(utterances, min_words=min_words, max_words=max_words, rng=rng)
    ids = _ljspeech_ids(utterances, rng)
    plan = [
        _plan_clip(rng, utterance_id, sentence, LJSPEECH_VOICE)
        for utterance_id, sentence in zip(ids, sentences, strict=True)
    ]

    synthesizer = EspeakSynthesizer()
    if synthesizer.sample_rate != LJSPEECH_SAMPLE_RATE:
        raise RuntimeError(
            f"espeak-ng speaks at {synthesizer.sample_rate} Hz, LJSpeech needs "
            f"{LJSPEECH_SAMPLE_RATE} Hz"
        )
    rows = []
    seconds = 0.0
    with atomic_dir(out_dir) as tmp:
        (tmp / "wavs").mkdir()
        for utterance in tqdm(plan, desc="mini LJSpeech", unit="clip"):
            recording = _record(synthesizer, utterance, LJSPEECH_SAMPLE_RATE, resample=None)
            _write_wav(tmp / "wavs" / f"{utterance.utterance_id}.wav", recording)
            seconds += recording.seconds
            sentence = utterance.sentence
            rows.append(f"{utterance.utterance_id}|{sentence.original}|{sentence.normalized}\n")
        with open(tmp / "metadata.csv", "w", encoding="utf-8", newline="") as f:
            f.writelines(rows)
        (tmp / "README").write_text(
            "Synthetic LJSpeech-1.1-layout corpus generated offline by comma-study\n"
            "(comma.mini.speech.generate_mini_ljspeech), not the real LJSpeech.\n"
            f"seed={seed} utterances={utterances} words={min_words}-{max_words}\n"
            f"voice=espeak-ng {LJSPEECH_VOICE.name} total={seconds / 60:.2f} minutes\n"
            "metadata.csv: ID|transcription|normalized transcription\n"
            f"wavs/: {LJSPEECH_SAMPLE_RATE} Hz mono 16-bit PCM\n",
            encoding="utf-8",
        )


# --------------------------------------------------------------------------------------------
# LibriTTS


def _split_evenly(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if index < total % parts else 0) for index in range(parts)]


def _speaker_voices(count: int, rng: random.Random) -> list[Voice]:
    """`count` speakers; distinct accent x variant while there are enough (72)."""
    combinations = [
        f"{accent}+{variant}" for accent, variant in itertools.product(ACCENTS, VARIANTS)
    ]
    rng.shuffle(combinations)
    return [
        Voice(
            name=combinations[index % len(combinations)],
            rate=rng.randint(*SPEAKER_RATE),
            pitch=rng.randint(*SPEAKER_PITCH),
            pitch_range=rng.randint(*SPEAKER_PITCH_RANGE),
            gain_db=round(rng.uniform(*SPEAKER_GAIN_DB), 2),
            noise_dbfs=round(rng.uniform(*SPEAKER_NOISE_DBFS), 2),
        )
        for index in range(count)
    ]


@dataclass(frozen=True)
class _Chapter:
    speaker_id: int
    chapter_id: int
    utterances: list[ClipPlan]


def _plan_libritts(
    subsets: dict[str, int],
    speakers: int,
    chapters_per_speaker: int,
    min_words: int,
    max_words: int,
    seed: int,
) -> tuple[dict[str, list[_Chapter]], dict[int, tuple[str, Voice]]]:
    rng = random.Random(f"comma-mini-libritts:{seed}")
    sentence_pool = iter(
        generate_sentences(sum(subsets.values()), min_words=min_words, max_words=max_words, rng=rng)
    )
    total_speakers = speakers * len(subsets)
    speaker_ids = rng.sample(range(14, 10_000), total_speakers)
    chapter_ids = iter(rng.sample(range(1_000, 300_000), total_speakers * chapters_per_speaker))
    voices = iter(_speaker_voices(total_speakers, rng))
    speaker_ids_left = iter(speaker_ids)

    plan: dict[str, list[_Chapter]] = {}
    speaker_table: dict[int, tuple[str, Voice]] = {}
    for subset, count in subsets.items():
        chapters: list[_Chapter] = []
        for speaker_count in _split_evenly(count, speakers):
            speaker_id, voice = next(speaker_ids_left), next(voices)
            speaker_table[speaker_id] = (subset, voice)
            for chapter_count in _split_evenly(speaker_count, chapters_per_speaker):
                chapter_id = next(chapter_ids)
                utterances = []
                # Paragraphs of 1-5 sentences, numbered from 0 like LibriTTS's ids.
                paragraph, sentence_index = 0, 0
                paragraph_size = rng.randint(*SENTENCES_PER_PARAGRAPH)
                for _ in range(chapter_count):
                    if sentence_index == paragraph_size:
                        paragraph += 1
                        sentence_index = 0
                        paragraph_size = rng.randint(*SENTENCES_PER_PARAGRAPH)
                    utterance_id = f"{speaker_id}_{chapter_id}_{paragraph:06d}_{sentence_index:06d}"
                    utterances.append(_plan_clip(rng, utterance_id, next(sentence_pool), voice))
                    sentence_index += 1
                chapters.append(_Chapter(speaker_id, chapter_id, utterances))
        plan[subset] = chapters
    return plan, speaker_table


def generate_mini_libritts(
    out_dir: str | Path,
    *,
    subsets: dict[str, int],
    speakers: int,
    chapters_per_speaker: int,
    min_words: int,
    max_words: int,
    seed: int,
) -> None:
    """Write synthetic multi-speaker subsets in LibriTTS's layout under `out_dir` (`LibriTTS/`).

    `subsets` maps a subset name (e.g. "train-clean-100") to its number of utterances;
    `speakers` is the number of speakers of each subset (disjoint across subsets), each reading
    `chapters_per_speaker` chapters.
    """
    _check_count("speakers", speakers, 1)
    _check_count("chapters_per_speaker", chapters_per_speaker, 1)
    if not subsets:
        raise ValueError("subsets is empty: name at least one LibriTTS subset")
    for subset, count in subsets.items():
        if not subset or subset in (".", "..") or "/" in subset or "\\" in subset:
            raise ValueError(f"subset name {subset!r} is not a plain folder name")
        if not isinstance(count, int) or count < speakers * chapters_per_speaker:
            raise ValueError(
                f"subset {subset!r} has {count!r} utterances; it needs at least speakers x "
                f"chapters_per_speaker = {speakers * chapters_per_speaker} (one per chapter)"
            )
    out_dir = Path(out_dir)
    plan, speaker_table = _plan_libritts(
        subsets, speakers, chapters_per_speaker, min_words, max_words, seed
    )

    synthesizer = EspeakSynthesizer()
    resample = _resampler(synthesizer.sample_rate, LIBRITTS_SAMPLE_RATE)
    seconds_per_speaker: dict[int, float] = dict.fromkeys(speaker_table, 0.0)
    for subset, chapters in plan.items():
        with (
            atomic_dir(out_dir / subset) as tmp,
            tqdm(total=subsets[subset], desc=f"mini LibriTTS {subset}", unit="clip") as progress,
        ):
            for chapter in chapters:
                folder = tmp / str(chapter.speaker_id) / str(chapter.chapter_id)
                folder.mkdir(parents=True)
                trans_rows, book_rows = [], []
                chapter_seconds = 0.0
                for utterance in chapter.utterances:
                    recording = _record(synthesizer, utterance, LIBRITTS_SAMPLE_RATE, resample)
                    stem = folder / utterance.utterance_id
                    _write_wav(stem.with_name(stem.name + ".wav"), recording)
                    sentence = utterance.sentence
                    for suffix, text in (
                        (".original.txt", sentence.original),
                        (".normalized.txt", sentence.normalized),
                    ):
                        with open(
                            stem.with_name(stem.name + suffix), "w", encoding="utf-8", newline=""
                        ) as f:
                            f.write(text)
                    texts = f"{utterance.utterance_id}\t{sentence.original}\t{sentence.normalized}"
                    trans_rows.append(f"{texts}\n")
                    start, chapter_seconds = chapter_seconds, chapter_seconds + recording.seconds
                    book_rows.append(
                        f"{texts}\ttrue\t{start:.2f}\t{chapter_seconds:.2f}\t"
                        f"{recording.snr_db:.2f}\n"
                    )
                    progress.update()
                seconds_per_speaker[chapter.speaker_id] += chapter_seconds
                prefix = f"{chapter.speaker_id}_{chapter.chapter_id}"
                for name, rows in (("trans", trans_rows), ("book", book_rows)):
                    with open(
                        folder / f"{prefix}.{name}.tsv", "w", encoding="utf-8", newline=""
                    ) as f:
                        f.writelines(rows)

    lines = [
        "; Speakers of the synthetic mini LibriTTS corpus generated by comma-study",
        "; (comma.mini.speech.generate_mini_libritts), in LibriSpeech's SPEAKERS.TXT",
        "; format. NAME is the espeak-ng voice reading for the speaker, with its base pitch and",
        "; rate (words per minute).",
        ";ID  |SEX| SUBSET           |MINUTES| NAME",
    ]
    for speaker_id in sorted(speaker_table):
        subset, voice = speaker_table[speaker_id]
        minutes = seconds_per_speaker[speaker_id] / 60
        name = f"espeak-ng {voice.name} pitch {voice.pitch} rate {voice.rate}"
        lines.append(f"{speaker_id:<5}| {voice.sex} | {subset:<17}| {minutes:5.2f} | {name}")
    write_lines(out_dir / "SPEAKERS.txt", lines)
