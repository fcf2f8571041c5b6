"""The model families of the study, by name: how to configure, build, save and load each.

A family is one kind of model the workflow trains: the AR ``teacher`` (one class per task in
:mod:`comma.models.teacher`), ``comma`` (:mod:`comma.models.comma`) and the NAR students
``nar`` (NAT, NAR-ASR, FastSpeech: :mod:`comma.models.nat`, :mod:`comma.models.nar_asr`,
:mod:`comma.models.fastspeech`). Every family trains through the same entry
(:func:`comma.stages.training.train_model`) and is saved by the trainer as
``{"format", "config", "model", "seed"}``; :func:`load_model` rebuilds it from that file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from comma.io import torch_load
from comma.models import comma as comma_model
from comma.models import nar_base, teacher
from comma.models.comma import CoMMA, CoMMAConfig
from comma.models.fastspeech import FastSpeech
from comma.models.nar_asr import NARASR
from comma.models.nar_base import NARConfig
from comma.models.nat import NAT
from comma.models.teacher import build_teacher
from comma.models.teacher_base import TeacherConfig

__all__ = [
    "Family",
    "FAMILIES",
    "NAR_MODELS",
    "build_nar",
    "load_model",
    "load_teacher",
    "load_comma",
    "load_nar",
]

NAR_MODELS = {"nmt": NAT, "asr": NARASR, "tts": FastSpeech}


def build_nar(config: NARConfig) -> nn.Module:
    """The NAR student of ``config.task``: NAT, NAR-ASR or FastSpeech."""
    return NAR_MODELS[config.task](config)


@dataclass(frozen=True)
class Family:
    name: str
    model_format: str  # the "format" tag of its saved model file
    what: str  # for messages: "a CoMMA model"
    config_class: type
    build: Callable[[Any], nn.Module]
    # saved config keys that are decoding settings now (e.g. nar_base.DECODING_ONLY_FIELDS):
    # files from before the move still load, without them
    decoding_only: tuple[str, ...] = ()

    def config(self, **fields) -> Any:
        return self.config_class(**fields)

    def saved_config(self, fields: dict) -> Any:
        """The config of a saved model file, without its `decoding_only` keys."""
        return self.config(**{k: v for k, v in fields.items() if k not in self.decoding_only})


FAMILIES = {
    "teacher": Family(
        "teacher", teacher.MODEL_FORMAT, "an AR teacher model", TeacherConfig, build_teacher
    ),
    "comma": Family("comma", comma_model.MODEL_FORMAT, "a CoMMA model", CoMMAConfig, CoMMA),
    "nar": Family(
        "nar",
        nar_base.MODEL_FORMAT,
        "a NAR model",
        NARConfig,
        build_nar,
        nar_base.DECODING_ONLY_FIELDS,
    ),
}


def load_model(path: str | Path, family: str) -> nn.Module:
    """The model of `family` saved at `path`, rebuilt from its config, in eval mode on the CPU;
    a file of another format raises naming it."""
    kind = FAMILIES[family]
    saved = torch_load(path)
    if not isinstance(saved, dict) or saved.get("format") != kind.model_format:
        found = saved.get("format") if isinstance(saved, dict) else type(saved).__name__
        raise ValueError(f"{path}: not {kind.what} file (format {found!r})")
    if not isinstance(saved.get("config"), dict) or not isinstance(saved.get("model"), dict):
        raise ValueError(f"{path}: {kind.what} file without its config and weights")
    try:
        config = kind.saved_config(saved["config"])
    except (TypeError, ValueError) as error:  # an unknown or invalid key: name the file too
        raise ValueError(
            f"{path}: the saved config of {kind.what} does not load: {error}"
        ) from error
    model = kind.build(config)
    try:
        model.load_state_dict(saved["model"])
    except RuntimeError as error:  # torch's message lists the tensors but not the file
        raise ValueError(f"{path}: the weights do not fit the saved config: {error}") from error
    return model.eval()


def load_teacher(path: str | Path) -> nn.Module:
    """An AR teacher saved by :func:`comma.stages.teacher.train_teacher`."""
    return load_model(path, "teacher")


def load_comma(path: str | Path) -> CoMMA:
    """A CoMMA saved by :func:`comma.stages.comma.train_comma`."""
    return load_model(path, "comma")


def load_nar(path: str | Path) -> nn.Module:
    """A NAR student saved by :func:`comma.stages.nar.train_nar`."""
    return load_model(path, "nar")
