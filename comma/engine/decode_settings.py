"""The AR teachers' decoding settings (config ``decoding.<task>``), typed once for every caller:
evaluate_teacher, distillation and the KD decoding benchmark.

A task whose target is log-mel (:attr:`comma.tasks.Task.mel_sides`) generates mel frames
(``max_len_a``, ``max_len_b``, ``stop_threshold``, ``batch_sentences``); the others search
tokens (``beam``, ``lenpen``, ``max_len_a``, ``max_len_b``, ``batch_sentences``). The maximum
output length is ``floor(max_len_a * source length + max_len_b)``
(:func:`comma.engine.decode.max_lengths`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from comma.tasks import TASKS, check_task

__all__ = ["TOKEN_KEYS", "MEL_KEYS", "DecodingSettings"]

TOKEN_KEYS = ("beam", "lenpen", "max_len_a", "max_len_b", "batch_sentences")
MEL_KEYS = ("max_len_a", "max_len_b", "stop_threshold", "batch_sentences")
_INTEGERS = ("beam", "max_len_b", "batch_sentences")


@dataclass(frozen=True)
class DecodingSettings:
    """One task's decoding settings; the keys of the other kind of search are None."""

    task: str
    max_len_a: float
    max_len_b: int
    batch_sentences: int
    beam: int | None = None  # token search (beam 1: greedy)
    lenpen: float | None = None  # fairseq's length normalization, score / length ** lenpen
    stop_threshold: float | None = None  # mel generation: stop-token probability that ends it

    @staticmethod
    def keys(task: str) -> tuple[str, ...]:
        """The settings `task`'s search takes: mel generation's or token search's."""
        return MEL_KEYS if "tgt" in TASKS[check_task(task)].mel_sides else TOKEN_KEYS

    @classmethod
    def from_config(
        cls, mapping: Mapping[str, Any], task: str, where: str | None = None
    ) -> DecodingSettings:
        """The settings of `task` from its config mapping (``decoding.<task>``, or `where`),
        each cast to its type; a missing or unknown key, or a value of the wrong kind, is a
        ValueError naming the config key."""
        where = where or f"decoding.{task}"
        keys = cls.keys(task)
        missing = [key for key in keys if key not in mapping]
        if missing:
            raise ValueError(
                f"config key {where} lacks {missing}: the {task} teacher's search takes "
                f"{list(keys)}"
            )
        unknown = [key for key in mapping if key not in keys]
        if unknown:
            raise ValueError(
                f"config key {where}.{unknown[0]}: not a decoding setting of {task}; "
                f"it takes {list(keys)}"
            )
        values = {}
        for key in keys:
            value = mapping[key]
            integer = key in _INTEGERS
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                integer and value != int(value)
            ):  # fmt: skip
                kind = "an integer" if integer else "a number"
                raise ValueError(f"config key {where}.{key}: {value!r} is not {kind}")
            values[key] = int(value) if integer else float(value)
        return cls(task, **values)

    def arguments(self) -> dict[str, Any]:
        """The settings of this task's search, as the keyword arguments of
        :func:`comma.engine.decode.decode_split` or :func:`~comma.engine.decode.generate_split`
        (and as the config names them)."""
        return {key: getattr(self, key) for key in self.keys(self.task)}

    @property
    def limits(self) -> dict[str, float]:
        """``max_len_a`` and ``max_len_b``, the arguments of
        :func:`comma.engine.decode.max_lengths`."""
        return {"max_len_a": self.max_len_a, "max_len_b": self.max_len_b}
