"""Audio for the speech tasks: checked WAV loading and the one log-mel front end of the project.

Every speech task (ASR source, TTS target) uses the same features, computed by `LogMel`:

- `win_length = round(win_ms * sr / 1000)`, `hop_length = round(hop_ms * sr / 1000)`,
  `n_fft` = the next power of two >= `win_length` (Hann window, centred frames, reflect pad).
  With the paper's 50 ms / 12.5 ms (Shen et al. 2018): at 22,050 Hz (LJSpeech) win 1102,
  hop 276, n_fft 2048, 79.89 frames/s; at 24,000 Hz (LibriTTS) win 1200, hop 300, n_fft 2048,
  exactly 80 frames/s. A clip of S samples has `1 + S // hop_length` frames.
- Magnitude spectrogram (power 1), as Tacotron 2 (Shen et al. 2018) and NVIDIA's and ESPnet's
  TTS front ends, so our TTS targets are the features those models predict.
- Slaney mel scale and Slaney area normalization, identical to librosa's default
  `librosa.filters.mel` (and hence Tacotron 2's), `f_min`..`f_max` (None: half the rate).
- `log(clamp(mel, 1e-5))`: natural log with Tacotron 2's floor (-11.51 for silence).
- Output `[frames, n_mels]` float32.

`extract_corpus_mels` turns a whole corpus (LJSpeech, or one LibriTTS subset) into one file:
`{"mels": PackedSequences.to_dict() (values [total_frames, n_mels] float32), "ids": [...],
"corpus", "sample_rate", "hop_length", "win_length", "n_fft", "n_mels", "f_min", "f_max"}`,
utterances in the reader's order; `load_corpus_mels` reads and checks it back.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio
from tqdm import tqdm

from comma.data.libritts import SAMPLE_RATE as LIBRITTS_RATE
from comma.data.libritts import read_libritts
from comma.data.ljspeech import SAMPLE_RATE as LJSPEECH_RATE
from comma.data.ljspeech import read_ljspeech
from comma.data.packed import PackedSequences
from comma.data.utterances import Utterance
from comma.errors import InputError
from comma.io import torch_load, torch_save
from comma.threads import torch_threads

log = logging.getLogger(__name__)

# A clip whose peak stays below -80 dBFS (about 3 LSB of 16-bit PCM) holds no speech.
SILENCE_PEAK = 1e-4
# Float audio beyond this peak is not normalized (or garbage): integer PCM stays within 1.
FULL_SCALE_TOLERANCE = 1.0 + 1e-4
# A clip with more than this share of its samples at full scale is heavily clipped.
CLIP_LEVEL = 0.999
MAX_CLIPPED_SHARE = 0.01
# Tacotron 2's floor before the log: keeps log finite on digital silence.
LOG_FLOOR = 1e-5
CORPORA = ("ljspeech", "libritts")
SAMPLE_RATES = {"ljspeech": LJSPEECH_RATE, "libritts": LIBRITTS_RATE}  # the datasets' own


def load_wav(path: str | Path, expected_sample_rate: int | None) -> tuple[np.ndarray, int]:
    """Read a sound file as mono float32 in [-1, 1] (channels averaged) and its sample rate.

    Raises InputError naming the file if it is missing or unreadable, has no samples, is silent
    (peak below SILENCE_PEAK), holds NaN/inf, or its rate differs from `expected_sample_rate`
    (no resampling happens anywhere: a corpus has one declared rate)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "audio file not found")
    check_wav_length(path)
    try:
        samples, sample_rate = soundfile.read(path, dtype="float32", always_2d=True)
    except soundfile.SoundFileError as err:
        raise InputError(path, f"unreadable audio file: {err}") from None
    if expected_sample_rate is not None and sample_rate != expected_sample_rate:
        raise InputError(
            path, f"sample rate is {sample_rate} Hz, expected {expected_sample_rate} Hz"
        )
    if samples.shape[0] == 0:
        raise InputError(path, "audio file has no samples")
    mono = samples.mean(axis=1, dtype=np.float32)
    if not np.isfinite(mono).all():
        raise InputError(path, "audio contains NaN or infinite samples")
    peak = float(np.abs(mono).max())
    if peak < SILENCE_PEAK:
        raise InputError(path, f"audio is silent (peak amplitude {peak:.2e})")
    if peak > FULL_SCALE_TOLERANCE:
        raise InputError(
            path, f"samples reach {peak:.3g}, outside [-1, 1]: not normalized float audio"
        )
    clipped = float(np.mean(np.abs(samples) >= CLIP_LEVEL))
    if clipped > MAX_CLIPPED_SHARE:
        raise InputError(
            path,
            f"{clipped:.1%} of the samples are at full scale (clipped; at most "
            f"{MAX_CLIPPED_SHARE:.0%} allowed)",
        )
    return mono, sample_rate


def check_wav_length(path: Path) -> None:
    """A WAV file whose data chunk stops short of the size its header declares (a cut copy or
    download) is refused: libsndfile would read the frames that are there without a word.
    Other formats are left to libsndfile."""
    if path.suffix.lower() != ".wav":
        return
    size = path.stat().st_size
    with open(path, "rb") as f:
        riff = f.read(12)
        if len(riff) < 12 or riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
            return  # not RIFF/WAVE: libsndfile says what it is
        while True:
            header = f.read(8)
            if len(header) < 8:
                return
            chunk, length = header[:4], int.from_bytes(header[4:], "little")
            if chunk == b"data":
                held = size - f.tell()
                if length != 0xFFFFFFFF and held < length:
                    raise InputError(
                        path,
                        f"truncated: the header declares {length} bytes of samples but the "
                        f"file holds {held}",
                    )
                return
            f.seek(length + (length & 1), 1)


def next_power_of_two(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(n)))


class LogMel:
    """Waveform -> log-mel `[frames, n_mels]` float32; see the module docstring for the recipe."""

    def __init__(
        self,
        sample_rate: int,
        n_mels: int,
        win_ms: float,
        hop_ms: float,
        f_min: float = 0.0,
        f_max: float | None = None,
    ):
        self.sample_rate = int(sample_rate)
        self.n_mels = int(n_mels)
        self.win_length = round(win_ms * sample_rate / 1000)
        self.hop_length = round(hop_ms * sample_rate / 1000)
        if self.win_length < 2 or self.hop_length < 1:
            raise ValueError(
                f"window {win_ms} ms / hop {hop_ms} ms are too short at {sample_rate} Hz"
            )
        self.n_fft = next_power_of_two(self.win_length)
        self.f_min = float(f_min)
        self.f_max = float(f_max) if f_max is not None else sample_rate / 2
        if not 0 <= self.f_min < self.f_max <= sample_rate / 2:
            raise ValueError(
                f"mel range {self.f_min}-{self.f_max} Hz is not within 0-{sample_rate / 2} Hz"
            )
        self.transform = torchaudio.transforms.MelSpectrogram(
            sample_rate=self.sample_rate,
            n_fft=self.n_fft,
            win_length=self.win_length,
            hop_length=self.hop_length,
            f_min=self.f_min,
            f_max=self.f_max,
            n_mels=self.n_mels,
            power=1.0,
            center=True,
            pad_mode="reflect",
            norm="slaney",
            mel_scale="slaney",
        )

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length

    def num_frames(self, num_samples: int) -> int:
        return 1 + num_samples // self.hop_length

    def __call__(self, waveform: np.ndarray | torch.Tensor) -> torch.Tensor:
        wave = torch.as_tensor(waveform, dtype=torch.float32)
        if wave.dim() != 1:
            raise ValueError(f"expected a mono waveform [samples], got shape {tuple(wave.shape)}")
        with torch.no_grad():
            mel = self.transform(wave)  # [n_mels, frames]
        return torch.log(torch.clamp(mel, min=LOG_FLOOR)).T.contiguous()

    def describe(self) -> dict:
        return {
            "sample_rate": self.sample_rate,
            "hop_length": self.hop_length,
            "win_length": self.win_length,
            "n_fft": self.n_fft,
            "n_mels": self.n_mels,
            "f_min": self.f_min,
            "f_max": self.f_max,
        }


def read_corpus(corpus: str, root: str | Path) -> list[Utterance]:
    """The utterances of `corpus` ("ljspeech": the LJSpeech-1.1 folder; "libritts": one subset)."""
    if corpus == "ljspeech":
        return read_ljspeech(root)
    if corpus == "libritts":
        return read_libritts(root)
    raise ValueError(f"unknown corpus {corpus!r}; expected one of {CORPORA}")


def extract_corpus_mels(
    corpus: str,
    root: str | Path,
    out_path: str | Path,
    *,
    n_mels: int,
    win_ms: float,
    hop_ms: float,
    f_min: float = 0.0,
    f_max: float | None = None,
    sample_rate: int | None = None,
) -> dict:
    """Log-mel features of every utterance of a corpus, saved to `out_path` in one file.

    `sample_rate` None: the dataset's own rate (LJSpeech 22,050 Hz, LibriTTS 24,000 Hz; the
    mini corpora are written at the same); a file at another rate is an error naming it, never
    resampled. A clip shorter than the STFT window is an error naming it. Returns a small stats
    dict."""
    utterances = read_corpus(corpus, root)
    if sample_rate is None:
        sample_rate = SAMPLE_RATES[corpus]
    logmel = LogMel(sample_rate, n_mels, win_ms, hop_ms, f_min, f_max)

    def features(utt: Utterance) -> tuple[torch.Tensor, int]:
        wave, _ = load_wav(utt.wav_path, sample_rate)
        if len(wave) < logmel.win_length:
            raise InputError(
                utt.wav_path,
                f"{len(wave)} samples ({len(wave) / sample_rate * 1000:.1f} ms), shorter than "
                f"the {logmel.win_length}-sample STFT window ({win_ms} ms)",
            )
        return logmel(wave), len(wave)

    # The job's threads work on whole utterances, each utterance on one intra-op thread: a
    # log-mel computed with torch on 2 threads differs in the last bit from one computed on 1
    # (measured on a 2-core AVX-512 Xeon), and the features must not depend on how many
    # threads the job got (a Slurm profile gives logmel more than a laptop run does).
    workers = torch.get_num_threads()
    with torch_threads(1), ThreadPoolExecutor(max_workers=workers) as pool:
        computed = list(
            tqdm(
                pool.map(features, utterances),
                total=len(utterances),
                desc=f"log-mel {corpus}",
                unit="utt",
            )
        )
    mels = [mel for mel, _ in computed]
    total_samples = sum(samples for _, samples in computed)
    packed = PackedSequences.from_list(mels, dtype=torch.float32)
    torch_save(
        {
            "mels": packed.to_dict(),
            "ids": [utt.id for utt in utterances],
            "corpus": corpus,
            **logmel.describe(),
        },
        out_path,
    )
    stats = {
        "corpus": corpus,
        "utterances": len(utterances),
        "frames": int(packed.offsets[-1]),
        "hours": round(total_samples / sample_rate / 3600, 4),
        "frames_per_second": round(logmel.frames_per_second, 4),
        **logmel.describe(),
    }
    log.info("log-mel features of %s: %s", root, stats)
    return stats


@dataclass(frozen=True)
class CorpusMels:
    """The log-mel features of a corpus as saved by `extract_corpus_mels`, indexable by id."""

    mels: PackedSequences
    ids: list[str]
    sample_rate: int
    hop_length: int
    win_length: int
    n_fft: int
    n_mels: int
    path: Path

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length

    def features(self) -> dict:
        """What a prepared corpus records about its features in stats.json."""
        return {
            "sample_rate": self.sample_rate,
            "hop_length": self.hop_length,
            "win_length": self.win_length,
            "n_fft": self.n_fft,
            "frames_per_second": round(self.frames_per_second, 4),
            "n_mels": self.n_mels,
        }

    def index(self) -> dict[str, int]:
        return {utt_id: k for k, utt_id in enumerate(self.ids)}


def load_corpus_mels(path: str | Path) -> CorpusMels:
    """Read a file written by `extract_corpus_mels`; InputError if it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "log-mel feature file not found (run the logmel rule first)")
    data = torch_load(path)
    try:
        mels = PackedSequences.from_dict(data["mels"], path)
        corpus = CorpusMels(
            mels=mels,
            ids=list(data["ids"]),
            sample_rate=int(data["sample_rate"]),
            hop_length=int(data["hop_length"]),
            win_length=int(data["win_length"]),
            n_fft=int(data["n_fft"]),
            n_mels=int(data["n_mels"]),
            path=path,
        )
    except KeyError as err:
        raise InputError(path, f"not a log-mel feature file: no key {err}") from None
    if mels.values.dim() != 2 or mels.values.shape[1] != corpus.n_mels:
        raise InputError(
            path, f"mel values have shape {tuple(mels.values.shape)}, expected [*, {corpus.n_mels}]"
        )
    if len(corpus.ids) != len(mels):
        raise InputError(path, f"{len(corpus.ids)} ids for {len(mels)} mel sequences")
    if len(set(corpus.ids)) != len(corpus.ids):
        raise InputError(path, "utterance ids are not unique")
    found = mels.first_nonfinite()  # written finite (load_wav checks the audio): damaged since
    if found is not None:
        k, frame = found
        raise InputError(
            path,
            f"the log-mel of {corpus.ids[k]!r} (utterance {k}, frame {frame}) holds NaN or inf "
            "values: the file changed after it was written; run the logmel rule again",
        )
    return corpus
