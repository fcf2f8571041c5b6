"""NAR-ASR's decoding settings, keywords of ``NARASR.generate`` and ``evaluate_nar`` and the
workflow's ``evaluation.asr``, not the model's (changing one re-decodes, it retrains nothing):
Mask-CTC's passes and threshold (``nar_mask_iterations``, ``nar_mask_threshold``), and the
test-time window from the model's own CTC alignment (``test_window="ctc"``,
``nar_test_window``, beyond the paper; comma.models.nar_asr): the settings, the CTC tokens'
frame positions, the window every Mask-Predict pass of an AC model attends within, and "none"
(the paper) leaving decoding as it was."""

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

from comma.data.packed import PackedSequences, Split, save_split
from comma.data.vocab import Vocabulary
from comma.io import read_json, torch_save
from comma.models.nar_asr import ctc_collapse, ctc_token_positions
from comma.models.nar_base import DECODING_ONLY_FIELDS, MODEL_FORMAT, PAD_ID, NARConfig
from comma.models.registry import load_nar
from comma.stages.nar import evaluate_nar
from comma.workflow_config import config_problems, nar_decoding, schema_problems

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


# --------------------------------------------------------------------------------------------
# The settings: decoding options, not the model's


@pytest.mark.parametrize(
    ("fields", "decoding", "message"),
    [
        (dict(mask_ctc=True), dict(test_window="teacher"), "test_window must be one of"),
        (dict(mask_ctc=True), dict(test_window=None), "test_window must be one of"),
        (dict(constraint=True), dict(test_window="ctc"), "'ctc' .* trained without mask_ctc"),
        (dict(mask_ctc=True), dict(mask_iterations=0), "mask_iterations must be >= 1"),
        (dict(mask_ctc=True), dict(mask_iterations=2.0), "mask_iterations must be an integer"),
        (dict(mask_ctc=True), dict(mask_threshold=1.5), r"mask_threshold must be in \[0, 1\]"),
        (dict(mask_ctc=True), dict(mask_threshold=-0.1), r"mask_threshold must be in \[0, 1\]"),
    ],
)
def test_generate_names_a_bad_decoding_setting(fields, decoding, message):
    batch, _ = make_batch("asr")
    model = asr_model(**fields).eval()
    with pytest.raises(ValueError, match=message):
        model.generate(batch.src, batch.src_lengths, **decoding)


@pytest.mark.parametrize(
    "saved", [{"test_window": "ctc"}, {"mask_iterations": 3, "mask_threshold": 0.9}]
)
def test_decoding_settings_are_no_model_settings_and_files_that_saved_them_load(saved, tmp_path):
    model = asr_model(mask_ctc=True, constraint=True).eval()
    # fingerprints (the model config) do not hold them
    assert not set(DECODING_ONLY_FIELDS) & set(model.config.to_dict())
    with pytest.raises(TypeError, match=next(iter(saved))):
        NARConfig(**{**model.config.to_dict(), **saved})
    # A model file saved while they were model keys (until 2026-12-04): the keys are dropped.
    config = {**model.config.to_dict(), **saved}
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


@pytest.mark.parametrize(
    ("decoding", "named"),
    [
        (dict(test_window="ctc"), "test_window"),
        (dict(mask_iterations=3), "mask_iterations"),
        (dict(test_window="ctc", mask_threshold=0.5), "test_window, mask_threshold"),
    ],
)
def test_evaluate_refuses_nar_asr_decoding_for_another_task(decoding, named, tmp_path):
    with pytest.raises(ValueError, match=f"{named}: NAR-ASR's decoding, not nmt's"):
        evaluate_nar(
            "nmt",
            tmp_path / "model.pt",
            tmp_path,
            tmp_path / "m.json",
            tmp_path / "h.txt",
            batch_sentences=8,
            **decoding,
        )
    assert not (tmp_path / "m.json").exists()


def asr_test_corpus(root, vocab_size: int):
    """A prepared ASR corpus directory with the test split of make_batch("asr")."""
    batch, _ = make_batch("asr")
    rows = range(len(batch.tgt_lengths))
    src = [batch.src[b, : int(batch.src_lengths[b])] for b in rows]
    tgt = [batch.tgt[b, : int(batch.tgt_lengths[b])] for b in rows]
    root.mkdir()
    save_split(
        root / "test.pt",
        Split(
            PackedSequences.from_list(src), PackedSequences.from_list(tgt), [f"u{b}" for b in rows]
        ),
    )
    vocab = Vocabulary([f"w{k}" for k in range(vocab_size - 5)])  # the 5 specials are implicit
    vocab.save(root / "dict.tgt.txt")
    references = [" ".join(vocab.decode(t.tolist())) for t in tgt]
    (root / "test.ref.txt").write_text("\n".join(references) + "\n", encoding="utf-8")
    return root


@pytest.mark.parametrize("mask_ctc", [True, False])
def test_evaluate_decodes_with_the_settings_and_records_them(mask_ctc, tmp_path):
    model = asr_model(mask_ctc=mask_ctc).eval()
    model_path = tmp_path / "model.pt"
    saved = {"format": MODEL_FORMAT, "config": model.config.to_dict(), "model": model.state_dict()}
    torch_save(saved, model_path)
    data = asr_test_corpus(tmp_path / "data", model.config.tgt_vocab)
    batch, _ = make_batch("asr")
    runs = {}
    for iterations in (1, 3):
        metrics = evaluate_nar(
            "asr",
            model_path,
            data,
            tmp_path / f"metrics{iterations}.json",
            tmp_path / f"hyp{iterations}.txt",
            batch_sentences=8,
            mask_iterations=iterations,
            mask_threshold=1.0,  # every CTC token starts masked: the passes decide
        )
        assert read_json(tmp_path / f"metrics{iterations}.json") == metrics
        runs[iterations] = (tmp_path / f"hyp{iterations}.txt").read_text()
        expected = model.generate(
            batch.src, batch.src_lengths, mask_iterations=iterations, mask_threshold=1.0
        )
        vocab = Vocabulary.load(data / "dict.tgt.txt")
        assert runs[iterations].splitlines() == [" ".join(vocab.decode(t)) for t in expected.tokens]
        if mask_ctc:
            assert (metrics["mask_iterations"], metrics["mask_threshold"]) == (iterations, 1.0)
        else:  # the one-pass model makes no Mask-Predict passes: nothing to record
            assert "mask_iterations" not in metrics and "mask_threshold" not in metrics
        assert metrics["test_window"] == "none"
    if not mask_ctc:
        assert runs[1] == runs[3]


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
            "config key models.nar.asr: Additional properties are not allowed ('test_window' was "
            "unexpected) ('test_window' is now evaluation.asr.nar_test_window)",
        ),
        (
            lambda c: c["models"]["nar"]["asr"].update(mask_iterations=10, mask_threshold=0.9),
            "config key models.nar.asr: Additional properties are not allowed ('mask_iterations', "
            "'mask_threshold' were unexpected) ('mask_iterations' is now "
            "evaluation.asr.nar_mask_iterations; 'mask_threshold' is now "
            "evaluation.asr.nar_mask_threshold)",
        ),
        (
            lambda c: c["evaluation"]["asr"].update(nar_mask_iterations=0),
            "config key evaluation.asr.nar_mask_iterations: 0 is less than the minimum of 1",
        ),
        (
            lambda c: c["evaluation"]["asr"].update(nar_mask_iterations=2.5),
            "config key evaluation.asr.nar_mask_iterations: 2.5 is not of type 'integer'",
        ),
        (
            lambda c: c["evaluation"]["asr"].update(nar_mask_threshold=1.5),
            "config key evaluation.asr.nar_mask_threshold: 1.5 is greater than the maximum of 1",
        ),
        (
            lambda c: c["evaluation"]["asr"].pop("nar_mask_threshold"),
            "config key evaluation.asr: 'nar_mask_threshold' is a required property",
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
def test_the_config_takes_the_decoding_under_evaluation_and_names_a_bad_one(change, expected):
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


def test_the_workflow_hands_evaluation_asr_to_evaluate_nar_as_its_keywords():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    assert nar_decoding(config, "asr") == {
        "test_window": config["evaluation"]["asr"]["nar_test_window"],
        "mask_iterations": config["evaluation"]["asr"]["nar_mask_iterations"],
        "mask_threshold": config["evaluation"]["asr"]["nar_mask_threshold"],
    }
    assert nar_decoding(config, "nmt") == {} == nar_decoding(config, "tts")
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    assert nar_decoding(paper, "asr")["test_window"] == "none"  # the paper's decoding


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
    model = asr_model(mask_ctc=True, constraint=True)
    model.eval()
    batch, _ = make_batch("asr")
    src_len = model.src_prenet.output_lengths(batch.src_lengths)  # [B] encoder positions
    design = frame_design(src_len, int(src_len.max()))  # the last sentence: all blank
    force_ctc(model, design, boost=5.0)  # p about 0.8 < 0.999: every CTC token masked
    outputs = record_decoding(model)
    gen = model.generate(batch.src, batch.src_lengths, test_window="ctc", mask_iterations=3)
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
        model = asr_model(mask_ctc=True, constraint=constraint).eval()
        sub = model.src_prenet.output_lengths(src_len)
        force_ctc(model, frame_design(sub, int(sub.max())), boost=5.0)
        masks = []
        model.decoder.register_forward_hook(
            lambda module, args, kwargs, out, masks=masks: masks.append(kwargs.get("cross_mask")),
            with_kwargs=True,
        )
        outputs = record_decoding(model)
        gen = model.generate(batch.src, src_len, test_window=window, mask_iterations=2)
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
