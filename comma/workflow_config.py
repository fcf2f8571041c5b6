"""The workflow's config before any rule reads it: values from the command line typed as the
schema says, then the schema check (rules/common.smk calls :func:`prepare_config`).

``snakemake --config seeds=[1,2]`` parses the YAML structure of a value but hands its scalars
over as strings (``['1', '2']``, ``{'dropout': '0.3'}``), which the schema then rejects. Where
the schema expects a number, boolean or null and finds a string, the string is read as YAML;
a string the schema expects stays a string, so no checksum or name is ever reinterpreted.

The schema check here names each offending key (``models.comma.dropout``, ``seeds[1]``), which
Snakemake's own ``validate`` does not, so the workflow calls only this one (the schema sets no
defaults for ``validate`` to fill in: config.yaml holds every key).
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from comma.tasks import TASK_NAMES, TASKS

__all__ = [
    "merge_config_layers",
    "config_file_problems",
    "coerce_to_schema",
    "prepare_config",
    "schema_problems",
    "config_problems",
    "check_config",
    "family_settings",
    "nar_decoding",
]

_SCALARS = {"integer": int, "number": (int, float), "boolean": bool, "null": type(None)}


def _merge_layer(base: dict, layer: Mapping, where: str, notes: list[str]) -> dict:
    for key, value in layer.items():
        name = f"{where}.{key}" if where else str(key)
        current = base.get(key)
        if not isinstance(value, Mapping):
            base[key] = copy.deepcopy(value)
            continue
        if not isinstance(current, dict):
            per_task = bool(value) and set(value) <= set(TASK_NAMES)
            if per_task and isinstance(current, (int, float, str, bool)):
                filled = {t: current for t in TASK_NAMES if t not in value}
                notes.append(
                    f"{name}: the tasks it does not name keep the {current!r} it replaces "
                    f"({', '.join(f'{t}: {v!r}' for t, v in filled.items())})"
                )
                current = {t: current for t in TASK_NAMES}
            else:
                current = {}
        base[key] = _merge_layer(current, value, name, notes)
    return base


def merge_config_layers(layers: Sequence[Mapping]) -> tuple[dict, list[str]]:
    """The config from its layers, each over the ones before it (config.yaml, every
    --configfile in order, --config), merged key by key as Snakemake merges them, with one
    difference: a mapping per task given over one value for every task (``max_steps: {nmt:
    10}`` over a preset's ``max_steps: 30``) keeps that value for the tasks it does not name.
    Snakemake merges --configfile and --config first and then over config.yaml, so there the
    other tasks silently fell back to config.yaml's per-task values, not the active preset's.
    Returns the config and one note per such filled-in mapping, naming its key."""
    config: dict = {}
    notes: list[str] = []
    for layer in layers:
        _merge_layer(config, layer, "", notes)
    return config, notes


def _resolve(schema: dict, root: dict) -> dict:
    while isinstance(schema, dict) and "$ref" in schema:
        node: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema if isinstance(schema, dict) else {}


def _types(schema: dict) -> set[str]:
    kind = schema.get("type")
    return {kind} if isinstance(kind, str) else set(kind or ())


def _coerce_scalar(value: str, schema: dict) -> Any:
    types = _types(schema)
    if "string" in types or not types & set(_SCALARS):
        return value
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value  # the schema check names the key and what it expected
    for kind in types & set(_SCALARS):
        wanted = _SCALARS[kind]
        if isinstance(parsed, wanted) and not (kind != "boolean" and isinstance(parsed, bool)):
            return parsed
    return value


def coerce_to_schema(value: Any, schema: dict, root: dict | None = None) -> Any:
    """`value` with every string leaf that the schema types as a number, boolean or null read
    as YAML (in place for dicts and lists; returns the value)."""
    root = schema if root is None else root
    schema = _resolve(schema, root)
    for alternative in schema.get("anyOf", []) + schema.get("oneOf", []):
        value = coerce_to_schema(value, alternative, root)
    if isinstance(value, str):
        return _coerce_scalar(value, schema)
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key in list(value):
            sub = properties.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                value[key] = coerce_to_schema(value[key], sub, root)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for k, item in enumerate(value):
            value[k] = coerce_to_schema(item, schema["items"], root)
    return value


def prepare_config(config: dict, schema_path: str | Path) -> dict:
    """Type the command line's values by the schema at `schema_path` (in place), then check
    them against it: ValueError naming every offending key (:func:`schema_problems`).
    Returns `config`."""
    schema = yaml.safe_load(Path(schema_path).read_text(encoding="utf-8"))
    coerce_to_schema(config, schema)
    problems = schema_problems(config, schema)
    if problems:
        raise ValueError(
            f"the config (config.yaml, --configfile and --config together) breaks {schema_path}: "
            + "; ".join(problems)
        )
    return config


def _key_path(path) -> str:
    """``['models', 'comma', 'dropout']`` -> ``models.comma.dropout``; ``['seeds', 1]`` ->
    ``seeds[1]``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _deepest(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """For "not valid under any of the given schemas", the alternative's error that got
    furthest into the value (its own key and cause): the deepest key, then jsonschema's
    best_match among those, an alternative of the value's own type first (a per-task dict
    with one bad value says which value; -5 for "an integer or a dict per task" says that
    it is below the minimum, not that it is no dict)."""
    while error.context:
        depth = max(len(e.absolute_path) for e in error.context)
        deepest = [e for e in error.context if len(e.absolute_path) == depth]
        error = jsonschema.exceptions.best_match(
            [e for e in deepest if e.validator != "type"] or deepest
        )
    return error


# Keys that moved: where an older config's key is now (decoding settings that were model keys).
MOVED_KEYS = {
    "models.nar.asr.test_window": "evaluation.asr.nar_test_window",
    "models.nar.asr.mask_iterations": "evaluation.asr.nar_mask_iterations",
    "models.nar.asr.mask_threshold": "evaluation.asr.nar_mask_threshold",
}


def _unexpected_keys_hint(error: jsonschema.ValidationError) -> str:
    """``" ('dropuot': did you mean 'dropout'?)"`` for each unexpected key with a close match
    among the keys the schema knows, or where it moved (MOVED_KEYS); empty otherwise."""
    if error.validator != "additionalProperties" or not isinstance(error.instance, dict):
        return ""
    known = list(error.schema.get("properties", {}))
    hints = []
    for key in error.instance:
        if key not in known:
            moved = MOVED_KEYS.get(_key_path([*error.absolute_path, key]))
            close = difflib.get_close_matches(str(key), known, n=1)
            if moved:
                hints.append(f"{key!r} is now {moved}")
            elif close:
                hints.append(f"{key!r}: did you mean {close[0]!r}?")
    return f" ({'; '.join(hints)})" if hints else ""


def schema_problems(config: dict, schema: dict) -> list[str]:
    """Every place `config` breaks `schema` (JSON Schema 2020-12), as "config key PATH: cause"
    sorted by key path, e.g. ``config key models.comma.dropout: 2 is greater
    than the maximum of 1``."""
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for error in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.path))):
        error = _deepest(error)
        problems.append(
            f"config key {_key_path(error.absolute_path)}: {error.message}"
            + _unexpected_keys_hint(error)
        )
    return problems


def _min_max_problems(node: Any, where: str) -> list[str]:
    """Every sibling pair min_X / max_X (numbers) whose minimum exceeds its maximum."""
    problems = []
    if isinstance(node, dict):
        for key, value in node.items():
            name = f"{where}.{key}" if where else str(key)
            partner = f"max_{key[4:]}" if isinstance(key, str) and key.startswith("min_") else None
            upper = node.get(partner) if partner else None
            numbers = (int, float)
            if isinstance(value, numbers) and isinstance(upper, numbers) and value > upper:
                problems.append(f"{name} ({value}) is above {where + '.' if where else ''}"
                                f"{partner} ({upper})")  # fmt: skip
            problems += _min_max_problems(value, name)
    return problems


def _attention_problems(settings: dict, where: str) -> list[str]:
    d_model, heads = settings.get("d_model"), settings.get("heads")
    if isinstance(d_model, int) and isinstance(heads, int) and heads > 0 and d_model % heads:
        return [f"{where}.heads ({heads}) does not divide {where}.d_model ({d_model})"]
    return []


def _warmup_problems(training: Any) -> list[str]:
    """Every schedule whose warm-up is longer than its training (the lr would never reach its
    peak): training.comma (max_steps one number or per task), training.teacher.TASK and
    training.nar.TASK."""
    if not isinstance(training, dict):
        return []
    schedules = [("training.comma", training.get("comma"))]
    for family in ("teacher", "nar"):
        if isinstance(training.get(family), dict):
            schedules += [
                (f"training.{family}.{task}", settings)
                for task, settings in training[family].items()
            ]
    problems = []
    for where, settings in schedules:
        if not isinstance(settings, dict):
            continue
        warmup, steps = settings.get("warmup_steps"), settings.get("max_steps")
        per_task = steps.items() if isinstance(steps, dict) else [(None, steps)]
        for task, value in per_task:
            if isinstance(warmup, int) and isinstance(value, int) and warmup > value:
                key = f"{where}.max_steps" + (f".{task}" if task else "")
                problems.append(
                    f"{where}.warmup_steps ({warmup}) is above {key} ({value}): the learning "
                    "rate would never reach its peak; lower the warm-up or raise the steps"
                )
    return problems


def _mel_range_problems(features: Any, sample_rates: Mapping[str, int]) -> list[str]:
    """features.f_min / f_max beyond the Nyquist frequency (half the sample rate) of a corpus
    whose log-mel features are extracted, or f_min not below f_max."""
    if not isinstance(features, dict):
        return []
    f_min, f_max = features.get("f_min"), features.get("f_max")
    numbers = (int, float)
    problems = []
    if isinstance(f_min, numbers) and isinstance(f_max, numbers) and f_min >= f_max:
        problems.append(f"features.f_min ({f_min}) is not below features.f_max ({f_max})")
    for corpus, rate in sorted(sample_rates.items()):
        for key, value in (("f_max", f_max), ("f_min", f_min)):
            if isinstance(value, numbers) and value > rate / 2:
                problems.append(
                    f"features.{key} ({value} Hz) is above the Nyquist frequency of {corpus} "
                    f"({rate / 2:g} Hz, half its {rate} Hz sample rate); null: up to it"
                )
                break
    return problems


def _test_window_problems(evaluation: Any, nar: Any) -> list[str]:
    """evaluation.asr.nar_test_window "ctc" for a NAR-ASR that is not Mask-CTC (the window is
    read off its CTC alignment)."""
    asr_eval = evaluation.get("asr") if isinstance(evaluation, dict) else None
    asr_model = nar.get("asr") if isinstance(nar, dict) else None
    if not isinstance(asr_eval, dict) or asr_eval.get("nar_test_window") != "ctc":
        return []
    if isinstance(asr_model, dict) and asr_model.get("mask_ctc") is not True:
        return [
            "evaluation.asr.nar_test_window 'ctc' reads Mask-CTC's CTC alignment: it needs "
            "models.nar.asr.mask_ctc true (or nar_test_window none, the paper's decoding)"
        ]
    return []


def config_problems(config: dict, sample_rates: Mapping[str, int] | None = None) -> list[str]:
    """Settings the schema accepts but no job could run with, each naming its key: heads
    that do not divide d_model, R(p) layers or heads beyond CoMMA's, a minimum above its
    maximum, a warm-up longer than its training, NAR-ASR's CTC test-time window without
    Mask-CTC, a mel range beyond the Nyquist frequency of
    a corpus in `sample_rates` (name -> Hz: the corpora whose log-mel features the run
    extracts; the rate is the dataset's, not a setting)."""
    problems = _min_max_problems(config, "") + _warmup_problems(config.get("training"))
    problems += _mel_range_problems(config.get("features"), sample_rates or {})
    models = config.get("models", {})
    if isinstance(models.get("comma"), dict):
        problems += _attention_problems(models["comma"], "models.comma")
    for family in ("teacher", "nar"):
        for task, settings in (models.get(family) or {}).items():
            if isinstance(settings, dict):
                problems += _attention_problems(settings, f"models.{family}.{task}")
    problems += _test_window_problems(config.get("evaluation"), models.get("nar"))
    comma, ratio = models.get("comma") or {}, config.get("ratio") or {}
    for key, limit in (("layers", comma.get("layers")), ("heads", comma.get("heads"))):
        chosen = ratio.get(key)
        if isinstance(chosen, list) and isinstance(limit, int):
            beyond = [k for k in chosen if k >= limit]
            if beyond:
                problems.append(
                    f"ratio.{key} {beyond} beyond CoMMA's {limit} {key} (models.comma.{key}; "
                    f"indices 0..{limit - 1})"
                )
    return problems


def check_config(config: dict, sample_rates: Mapping[str, int] | None = None) -> None:
    """Raise ValueError listing :func:`config_problems`, before any job runs."""
    problems = config_problems(config, sample_rates)
    if problems:
        raise ValueError("the config cannot work: " + "; ".join(problems))


def config_file_problems(paths: Sequence[str | Path]) -> list[str]:
    """What keeps Snakemake from reading each config file, as "FILE:LINE:COLUMN: cause" (or
    "FILE: cause"): missing, unreadable, no valid YAML, or no mapping at its top. Snakemake
    reads --configfile while it parses its command line, before any code of the workflow runs,
    and says only "Config file is not valid JSON or YAML" (a missing file: a traceback), so
    this runs by hand: ``python -m comma.workflow_config FILE...``."""
    problems = []
    for path in map(Path, paths):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            problems.append(f"{path}: cannot be read ({error})")
            continue
        try:
            content = yaml.safe_load(text)
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            opened = error.context_mark
            context = (
                f"{error.context} (line {opened.line + 1}, column {opened.column + 1}): "
                if error.context and opened
                else (f"{error.context}: " if error.context else "")
            )
            problems.append(f"{where}: {context}{error.problem}")
            continue
        except yaml.YAMLError as error:
            problems.append(f"{path}: not valid YAML ({error})")
            continue
        if not isinstance(content, dict):
            problems.append(f"{path}: holds {type(content).__name__}, not a mapping of settings")
    return problems


# A family's settings as its trainer takes them, one split for the rules (rules/common.smk) and
# the benchmarks that train outside the workflow. models.<family> holds the model config's
# keyword arguments and two optimization keys, which go to training: lr, and batch_size as the
# trainer's max_sentences.
OPTIMIZATION_KEYS = ("batch_size", "lr")
# models.<family> keys that are neither: CoMMA's attention constraint reaches only the ac
# variant's runs (rules/common.smk comma_constraint), so that changing it retrains only those.
HELD_BACK_KEYS = {"comma": ("ac_weight", "ac_mode")}
# training.<family>.<task> keys that are the job's resources (a cluster's time and memory
# limits), not training settings.
RESOURCE_KEYS = {"teacher": ("runtime_minutes", "mem_mb")}
# Families with one models.<family> and training.<family> for every task (max_steps may still
# be given per task); the others have one per task, models.<family>.<task>.
SHARED_FAMILIES = ("comma",)
# Keys of a shared family that only a log-mel side's pre-net reads (comma.models.comma: the
# ASR source's conv pre-net, the TTS target's dense pre-net and chunk masking). A task without
# that side is not handed them, so that changing one retrains only the runs that read it.
MEL_SIDE_KEYS = {
    "comma": {
        "src": ("conv_channels", "conv_strides"),
        "tgt": ("prenet_hidden", "prenet_dropout", "mel_chunk"),
    }
}


def family_settings(config: dict, family: str, task: str) -> tuple[dict, dict]:
    """(architecture, training) of `family` (comma, teacher, nar) for `task`: models.<family>
    (.<task>) without the optimization keys, the keys held back (CoMMA's ac_weight and
    ac_mode) and the pre-net keys of log-mel sides `task` does not have, and
    training.<family>(.<task>) without the job's resources, its max_steps for `task` where it
    is given per task, with lr and max_sentences (models' batch_size)."""
    model, training = config["models"][family], config["training"][family]
    if family not in SHARED_FAMILIES:
        model, training = model[task], training[task]
    unread = tuple(
        key
        for side, keys in MEL_SIDE_KEYS.get(family, {}).items()
        if side not in TASKS[task].mel_sides
        for key in keys
    )
    dropped = OPTIMIZATION_KEYS + HELD_BACK_KEYS.get(family, ()) + unread
    architecture = {k: v for k, v in model.items() if k not in dropped}
    schedule = {k: v for k, v in training.items() if k not in RESOURCE_KEYS.get(family, ())}
    if isinstance(schedule.get("max_steps"), dict):
        schedule["max_steps"] = schedule["max_steps"][task]
    return architecture, {**schedule, "lr": model["lr"], "max_sentences": model["batch_size"]}


# evaluation.asr's NAR-ASR decoding settings -> the keywords of comma.stages.nar.evaluate_nar
# (and NARASR.generate).
NAR_ASR_DECODING = {
    "nar_test_window": "test_window",
    "nar_mask_iterations": "mask_iterations",
    "nar_mask_threshold": "mask_threshold",
}


def nar_decoding(config: dict, task: str) -> dict:
    """The decoding keywords of `task`'s NAR model for ``evaluate_nar``: NAR-ASR's from
    evaluation.asr (test-time window, Mask-CTC's passes and threshold); none for NMT and TTS."""
    if task != "asr":
        return {}
    settings = config["evaluation"]["asr"]
    return {keyword: settings[key] for key, keyword in NAR_ASR_DECODING.items()}


if __name__ == "__main__":
    import sys

    found = config_file_problems(sys.argv[1:])
    print("\n".join(found) or f"{len(sys.argv) - 1} config file(s) Snakemake can read")
    sys.exit(1 if found else 0)
