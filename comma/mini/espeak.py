"""Offline speech synthesis with espeak-ng, in-process, through the `espeakng-loader` wheel.

The wheel ships `libespeak-ng.so` and its `espeak-ng-data` directory (voices, phoneme tables,
dictionaries), so no system package is needed; `espeakng_loader.get_library_path()` and
`get_data_path()` locate them. We call the C API of `speak_lib.h`/`espeak_ng.h` with ctypes in
synchronous mode (`AUDIO_OUTPUT_SYNCHRONOUS`): `espeak_Synth` returns once the text is spoken,
having handed the audio to our callback as 16-bit mono PCM chunks at the library's native
rate, 22,050 Hz. `EspeakSynthesizer.synthesize` returns it as float32 in [-1, 1).

Voices are named `language[+variant]`, e.g. `en-us`, `en-gb-scotland+f3`: the language sets the
pronunciation and accent, the variant (a file in `espeak-ng-data/voices/!v`) the voice quality
(formants, pitch range, breathiness). espeak-ng silently ignores an unknown variant, so we check
it exists. Rate is in words per minute (80-450, espeak's default 175); pitch and pitch range are
0-100 (default 50).

Determinism: espeak-ng keeps synthesis state in C static variables that its API cannot reset
(wavegen.c's pitch-flutter phase, automatic gain and glottal cycle counter carry over from one
utterance to the next), so within one loaded library the same text comes out slightly
differently depending on what was spoken before. To make `synthesize` a pure function of its
arguments, each call loads a fresh instance of the library (dlopen), speaks, and unloads it
(dlclose): under a millisecond per call, against about 5 ms to speak a sentence. The noise
generator used for breathy voices is seeded on every call (`espeak_ng_SetRandSeed`).
"""

from __future__ import annotations

import _ctypes
import contextlib
import ctypes
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import espeakng_loader
import numpy as np

# speak_lib.h constants (espeak-ng API revision 12).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
# Return an error instead of calling exit() when the data directory is unusable.
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EE_OK = 0
_PARAMETER_RATE = 1
_PARAMETER_PITCH = 3
_PARAMETER_RANGE = 4
# Any fixed value: what matters is that every call starts the noise generator from the same state.
_NOISE_SEED = 1

RATE_LIMITS = (80, 450)
PITCH_LIMITS = (0, 100)

# int callback(short *wav, int numsamples, espeak_EVENT *events); return 1 to abort synthesis.
_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class SynthesisError(RuntimeError):
    """espeak-ng failed or produced no audible output for a text."""


def _declare_signatures(lib: ctypes.CDLL) -> None:
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p,  # text
        ctypes.c_size_t,  # size (unused in synchronous mode)
        ctypes.c_uint,  # position
        ctypes.c_int,  # position_type
        ctypes.c_uint,  # end_position
        ctypes.c_uint,  # flags
        ctypes.c_void_p,  # unique_identifier
        ctypes.c_void_p,  # user_data
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Terminate.argtypes = []
    lib.espeak_Terminate.restype = ctypes.c_int


def _is_loaded(library_path: Path) -> bool:
    """Whether the dynamic linker has this library file loaded in the process."""
    try:
        probe = ctypes.CDLL(str(library_path), mode=os.RTLD_NOLOAD)
    except OSError:
        # dlopen(RTLD_NOLOAD) fails exactly when the library is not loaded.
        return False
    _ctypes.dlclose(probe._handle)
    return True


class EspeakSynthesizer:
    """Text to speech with the espeak-ng library of the `espeakng-loader` wheel.

    Instances are cheap; all of them share one lock, since the library is one set of C globals
    per process.
    """

    # espeak-ng's voice, parameters and output callback are process-global: two threads
    # speaking at once would mix them up, and loading a fresh instance per call (see the module
    # docstring) needs nobody else to hold the library open. One lock shared by every instance
    # serializes synthesis.
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.library_path = Path(espeakng_loader.get_library_path())
        self.data_path = Path(espeakng_loader.get_data_path())
        if not self.library_path.is_file():
            raise FileNotFoundError(
                f"espeak-ng library not found at {self.library_path} (espeakng-loader wheel)"
            )
        self.variants_path = self.data_path / "voices" / "!v"
        with self._lock, self._fresh_library() as (_, sample_rate):
            self.sample_rate = sample_rate

    @contextlib.contextmanager
    def _fresh_library(self) -> Iterator[tuple[ctypes.CDLL, int]]:
        """Load and initialize a fresh instance of the library; unload it afterwards."""
        if _is_loaded(self.library_path):
            raise RuntimeError(
                f"{self.library_path} is already loaded in this process by other code; its "
                "state could not be reset between utterances, so synthesis would not be "
                "reproducible"
            )
        lib = ctypes.CDLL(str(self.library_path))
        try:
            _declare_signatures(lib)
            sample_rate = lib.espeak_Initialize(
                _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.data_path).encode(), _INITIALIZE_DONT_EXIT
            )
            if sample_rate <= 0:
                raise SynthesisError(
                    f"espeak_Initialize failed ({sample_rate}) with data at {self.data_path}"
                )
            try:
                yield lib, sample_rate
            finally:
                lib.espeak_Terminate()
        finally:
            _ctypes.dlclose(lib._handle)
        if _is_loaded(self.library_path):
            raise RuntimeError(
                f"{self.library_path} stayed loaded after dlclose; its state would carry over "
                "to the next utterance"
            )

    def synthesize(
        self, text: str, voice: str, rate: int = 175, pitch: int = 50, pitch_range: int = 50
    ) -> np.ndarray:
        """Speak `text`; return mono float32 audio in [-1, 1) at `self.sample_rate`.

        `voice` is `language[+variant]` (e.g. `en-us+f3`); `rate` in words per minute
        (80-450); `pitch` (base pitch) and `pitch_range` (intonation) in 0-100.
        """
        if not text.strip():
            raise ValueError("espeak-ng: nothing to synthesize (empty text)")
        for name, value, (low, high) in (
            ("rate", rate, RATE_LIMITS),
            ("pitch", pitch, PITCH_LIMITS),
            ("pitch_range", pitch_range, PITCH_LIMITS),
        ):
            if not low <= value <= high:
                raise ValueError(f"espeak-ng: {name} {value} outside [{low}, {high}]")
        _, _, variant = voice.partition("+")
        if variant and not (self.variants_path / variant).is_file():
            raise ValueError(
                f"espeak-ng: unknown voice variant {variant!r} in {voice!r} "
                f"(variants are the files in {self.variants_path})"
            )

        chunks: list[bytes] = []
        failures: list[BaseException] = []

        def on_audio(wav, samples, events) -> int:
            # ctypes cannot propagate an exception out of a C callback: keep it, abort
            # synthesis, and re-raise it below.
            try:
                if samples > 0:
                    chunks.append(ctypes.string_at(wav, samples * 2))
            except BaseException as error:
                failures.append(error)
                return 1
            return 0

        callback = _SynthCallback(on_audio)
        data = text.encode("utf-8") + b"\0"
        with self._lock, self._fresh_library() as (lib, _):
            lib.espeak_SetSynthCallback(callback)
            status = lib.espeak_SetVoiceByName(voice.encode("utf-8"))
            if status != _EE_OK:
                raise ValueError(f"espeak-ng has no voice {voice!r} (status {status})")
            for parameter, value in (
                (_PARAMETER_RATE, rate),
                (_PARAMETER_PITCH, pitch),
                (_PARAMETER_RANGE, pitch_range),
            ):
                status = lib.espeak_SetParameter(parameter, value, 0)
                if status != _EE_OK:
                    raise SynthesisError(
                        f"espeak_SetParameter({parameter}, {value}) failed (status {status})"
                    )
            lib.espeak_ng_SetRandSeed(_NOISE_SEED)
            status = lib.espeak_Synth(
                data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
        if failures:
            raise failures[0]
        if status != _EE_OK:
            raise SynthesisError(f"espeak_Synth failed (status {status}) for {text!r}")
        pcm = np.frombuffer(b"".join(chunks), dtype=np.int16)
        if not pcm.any():
            raise SynthesisError(
                f"espeak-ng returned no audio for {text!r} with voice {voice!r} "
                f"({pcm.size} samples, all silent)"
            )
        return pcm.astype(np.float32) / 32768.0
