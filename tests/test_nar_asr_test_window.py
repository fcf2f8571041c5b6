"""NAR-ASR's test-time window from its own CTC alignment (``generate(..., test_window="ctc")``,
the workflow's ``evaluation.asr.nar_test_window``, beyond the paper; comma.models.nar_asr): the
setting, the CTC tokens' frame positions, the window every Mask-Predict pass of an AC model
attends within, and "none" (the paper) leaving decoding as it was."""

from __future__ import annotations

import itertools

import pytest
import torch
import yaml
from conftest import REPO
from test_nar_asr_mask_ctc import (
    asr_model,
    force_ctc,
    frame_design,
)
from test_nar_models import make_batch

from comma.io import torch_save
from comma.models.nar_asr import ctc_collapse, ctc_token_positions
from comma.models.nar_base import MODEL_FORMAT, PAD_ID, NARConfig
from comma.models.registry import load_nar
from comma.stages.nar import evaluate_nar
from comma.workflow_config import config_problems, schema_problems

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


# --------------------------------------------------------------------------------------------
# The setting: a decoding option, not the model's


@pytest.mark.parametrize(
    ("fields", "window", "message"),
    [
        (dict(mask_ctc=True), "teacher", "test_window must be one of"),
        (dict(mask_ctc=True), None, "test_window must be one of"),
        (dict(constraint=True), "ctc", "test_window 'ctc' .* trained without mask_ctc"),
    ],
)
def test_generate_names_a_bad_test_window(fields, window, message):
    batch, _ = make_batch("asr")
    model = asr_model(**fields).eval()
    with pytest.raises(ValueError, match=message):
        model.generate(batch.src, batch.src_lengths, test_window=window)


def test_test_window_is_no_model_setting_and_files_that_saved_it_still_load(tmp_path):
    model = asr_model(mask_ctc=True, constraint=True).eval()
    assert "test_window" not in model.config.to_dict()  # fingerprints of earlier runs unchanged
    with pytest.raises(TypeError, match="test_window"):
        NARConfig(**{**model.config.to_dict(), "test_window": "ctc"})
    # A model file saved while test_window was a model key (2026-12-04): the key is dropped.
    config = {**model.config.to_dict(), "test_window": "ctc"}
    torch_save(
        {"format": MODEL_FORMAT, "config": config, "model": model.state_dict()},
        tmp_path / "legacy.pt",
    )
    loaded = load_nar(tmp_path / "legacy.pt")
    assert loaded.config == model.config
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True)
    )
    # Any other unknown key is an error that names the file.
    config = {**model.config.to_dict(), "beam": 5}
    torch_save(
        {"format": MODEL_FORMAT, "config": config, "model": model.state_dict()},
        tmp_path / "other.pt",
    )
    with pytest.raises(ValueError, match=r"other\.pt: the saved config .*beam"):
        load_nar(tmp_path / "other.pt")


def test_evaluate_refuses_a_test_window_for_another_task(tmp_path):
    with pytest.raises(ValueError, match="test_window 'ctc' is NAR-ASR's decoding, not nmt's"):
        evaluate_nar(
            "nmt",
            tmp_path / "model.pt",
            tmp_path,
            tmp_path / "m.json",
            tmp_path / "h.txt",
            batch_sentences=8,
            test_window="ctc",
        )
    assert not (tmp_path / "m.json").exists()


def preset_problems(change) -> list[str]:
    """The schema's and config_problems' problems with config.yaml after `change` to it."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    change(config)
    return schema_problems(config, schema) + config_problems(config)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda c: c["evaluation"]["asr"].update(nar_test_window="teacher"),
            "config key evaluation.asr.nar_test_window: 'teacher' is not one of",
        ),
        (
            lambda c: c["models"]["nar"]["asr"].update(test_window="ctc"),
            "config key models.nar.asr: Additional properties are not allowed ('test_window'",
        ),
        (
            lambda c: c["evaluation"].pop("asr"),
            "config key evaluation: 'asr' is a required property",
        ),
        (
            lambda c: c["models"]["nar"]["asr"].update(mask_ctc=False),
            "evaluation.asr.nar_test_window 'ctc' reads Mask-CTC's CTC alignment: it needs "
            "models.nar.asr.mask_ctc true",
        ),
    ],
)
def test_the_config_takes_the_window_under_evaluation_and_names_a_bad_one(change, expected):
    for value in ("none", "ctc"):
        assert (
            preset_problems(lambda c, v=value: c["evaluation"]["asr"].update(nar_test_window=v))
            == []
        )
    assert (
        preset_problems(
            lambda c: (
                c["models"]["nar"]["asr"].update(mask_ctc=False)
                or c["evaluation"]["asr"].update(nar_test_window="none")
            )
        )
        == []
    )
    problems = preset_problems(change)
    assert len(problems) == 1 and problems[0].startswith(expected), problems


# --------------------------------------------------------------------------------------------
# Where the CTC tokens lie


def test_ctc_token_positions_hand_case():
    blank = PAD_ID
    ids = torch.tensor(
        [
            [blank, 5, 5, blank, 5, 7, 7, 7, blank, 6],  # frames 2-3, 5, 6-8, 10 (1-based)
            [blank, blank, blank, 9, 9, 9, 9, 9, 9, 9],  # only blanks within its 3 frames
            [6, 6, 6, 8, 8, 8, 8, 8, 8, 8],  # frames 1-3, then 4 (the rest is padding)
        ]
    )
    lengths = torch.tensor([10, 3, 4])
    positions = ctc_token_positions(ids, lengths, blank)
    # centres 2.5 -> 3 (halves up, as expected_positions), 5, 7, 10; padding 0
    assert positions.tolist() == [[3, 5, 7, 10], [0, 0, 0, 0], [2, 4, 0, 0]]
    tokens, _, counts = ctc_collapse(ids, torch.ones(3, 10), lengths, blank)
    assert positions.shape == tokens.shape and counts.tolist() == [4, 0, 2]


def reference_positions(frames: list[int]) -> list[int]:
    """1-based run centres (halves up) of the non-blank runs of `frames`."""
    out, j = [], 1
    for k, run in itertools.groupby(frames):
        size = len(list(run))
        if k != PAD_ID:
            out.append(int(j + (size - 1) / 2 + 0.5))
        j += size
    return out


def test_ctc_token_positions_match_a_reference_on_random_frames():
    g = torch.Generator().manual_seed(2)
    lengths = torch.randint(1, 40, (16,), generator=g)
    ids = torch.tensor([PAD_ID, 5, 6, 7])[torch.randint(0, 4, (16, 40), generator=g)]
    positions = ctc_token_positions(ids, lengths)
    for b, m in enumerate(lengths.tolist()):
        expected = reference_positions(ids[b, :m].tolist())
        row = positions[b].tolist()
        assert row[: len(expected)] == expected and set(row[len(expected) :]) <= {0}


# --------------------------------------------------------------------------------------------
# The window in Mask-Predict


def reference_window(centres: list[int], m: int) -> list[tuple[int, int]]:
    """Section 5.1's span (lo, hi), 1-based inclusive, of every token: E_{i-1}..E_{i+1}, the
    first 1..E_2, the last E_{N-1}..M, a single token (or none) 1..M."""
    n = len(centres)
    if n <= 1:
        return [(1, m)]
    middle = [
        (min(centres[i - 1], centres[i + 1]), max(centres[i - 1], centres[i + 1]))
        for i in range(1, n - 1)
    ]
    return [(1, centres[1]), *middle, (centres[n - 2], m)]


def record_decoding(model) -> list:
    """Every Mask-Predict pass's decoder output, with its per-layer cross-attention."""
    outputs, decode = [], model.decode

    def recording(*args, **kwargs):
        out = decode(*args, **{**kwargs, "need_weights": True})
        outputs.append(out)
        return out

    model.decode = recording
    return outputs


def test_ctc_window_confines_every_pass_cross_attention_to_the_ctc_alignment():
    model = asr_model(mask_ctc=True, constraint=True, mask_iterations=3)
    model.eval()
    batch, _ = make_batch("asr")
    src_len = model.src_prenet.output_lengths(batch.src_lengths)  # [B] encoder positions
    design = frame_design(src_len, int(src_len.max()))  # the last sentence: all blank
    force_ctc(model, design, boost=5.0)  # p about 0.8 < 0.999: every CTC token masked
    outputs = record_decoding(model)
    gen = model.generate(batch.src, batch.src_lengths, test_window="ctc")
    assert len(outputs) == 3  # a pass per iteration, every one windowed
    narrowed = 0
    for b, m in enumerate(src_len.tolist()):
        centres = reference_positions(design[b, :m].tolist())
        assert gen.lengths[b] == max(len(centres), 1)
        for i, (lo, hi) in enumerate(reference_window(centres, m)):
            inside = torch.zeros(int(src_len.max()), dtype=torch.bool)
            inside[lo - 1 : hi] = True
            narrowed += int(not bool(inside[:m].all()))
            for out in outputs:
                for layer in out.cross_attention:  # [B, H, N, M]
                    weights = layer[b, :, i].float()  # [H, M]
                    assert float(weights[:, ~inside].abs().max()) == 0.0, (b, i, lo, hi)
                    assert torch.allclose(weights.sum(-1), torch.ones(len(weights)))
    assert narrowed >= 6  # the window does cut most tokens' attention
    # The empty CTC output's one <mask> attends to every frame of its clip.
    empty = len(src_len) - 1
    assert gen.lengths[empty] == 1
    m = int(src_len[empty])
    for out in outputs:
        assert bool((out.cross_attention[0][empty, :, 0, :m] > 0).all())


def test_none_and_models_without_ac_decode_without_a_window():
    batch, _ = make_batch("asr")
    src_len = batch.src_lengths
    results = {}
    for name, (constraint, window) in {
        "none": (True, "none"),  # the default: the paper's decoding
        "noac": (False, "ctc"),  # never trained with a window
        "ctc": (True, "ctc"),
    }.items():
        model = asr_model(mask_ctc=True, mask_iterations=2, constraint=constraint).eval()
        sub = model.src_prenet.output_lengths(src_len)
        force_ctc(model, frame_design(sub, int(sub.max())), boost=5.0)
        masks = []
        model.decoder.register_forward_hook(
            lambda module, args, kwargs, out, masks=masks: masks.append(kwargs.get("cross_mask")),
            with_kwargs=True,
        )
        outputs = record_decoding(model)
        gen = model.generate(batch.src, src_len, test_window=window)
        results[name] = (masks, [out.prediction for out in outputs], gen)
    for name in ("none", "noac"):
        masks, predictions, gen = results[name]
        assert len(masks) == 2 and all(mask is None for mask in masks)
    # Same weights (seed 0) and CTC: "none" and a model without AC decode identically.
    none, noac = results["none"], results["noac"]
    assert all(torch.equal(a, b) for a, b in zip(none[1], noac[1], strict=True))
    assert none[2].tokens == noac[2].tokens
    # ... and the window is what changes an AC model's decoder output.
    ctc_masks, ctc_predictions, _ = results["ctc"]
    assert all(mask is not None for mask in ctc_masks)
    assert not torch.allclose(ctc_predictions[0], none[1][0])
