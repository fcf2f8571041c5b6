"""NAR-ASR as Mask-CTC (comma.models.nar_asr, ``NARConfig.mask_ctc``): the config and its
schema keys, the one-pass model left as it was, A-CMLM's masked loss with the joint CTC, the
CTC collapse, CTC greedy + Mask-Predict decoding, a tiny overfit run and a save/load round
trip."""

from __future__ import annotations

import itertools

import pytest
import torch
import yaml
from conftest import REPO
from test_nar_models import TINY, fit, make_batch, with_targets

from comma.data.batching import Batch
from comma.io import torch_save
from comma.models.nar_asr import NARASR, ctc_collapse
from comma.models.nar_base import (
    FORBIDDEN_IDS,
    MASK_CTC_FIELDS,
    MASK_ID,
    MODEL_FORMAT,
    PAD_ID,
    NARConfig,
)
from comma.models.registry import load_nar
from comma.nn.transformer import padding_mask

VOCAB = 40


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def asr_config(**overrides) -> NARConfig:
    fields = {"task": "asr", "tgt_vocab": VOCAB, **TINY, "dropout": 0.0, **overrides}
    return NARConfig(**fields)


def asr_model(**overrides) -> NARASR:
    torch.manual_seed(0)
    return NARASR(asr_config(**overrides))


def decoder_input_ids(model: NARASR) -> list[torch.Tensor]:
    """Records the token ids ``[B, N]`` of every decoder input (the target pre-net's calls)."""
    seen = []
    model.tgt_prenet.register_forward_hook(lambda module, args, out: seen.append(args[0].clone()))
    return seen


# --------------------------------------------------------------------------------------------
# Config


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(task="nmt", src_vocab=30, mask_ctc=True), "mask_ctc is NAR-ASR's"),
        (dict(task="tts", src_vocab=30, tgt_vocab=None, mask_ctc=True), "mask_ctc is NAR-ASR's"),
        (dict(mask_ctc="yes"), "mask_ctc must be true or false"),
        (dict(mask_ctc=True, ctc_weight=0.0), r"ctc_weight must be in \(0, 1\)"),
        (dict(mask_ctc=True, ctc_weight=1.0), r"ctc_weight must be in \(0, 1\)"),
    ],
)
def test_mask_ctc_config_errors_name_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        asr_config(**fields)


def test_mask_ctc_config_round_trip_and_the_one_pass_dict_unchanged():
    assert asr_config(ctc_weight=0.0).ctc_weight == 0.0  # unused without mask_ctc
    for config in (
        asr_config(mask_ctc=True, ctc_weight=0.5),
        asr_config(mask_ctc=True),  # every Mask-CTC field saved, defaults too
        asr_config(),
        asr_config(ctc_weight=0.4),
    ):
        assert NARConfig(**config.to_dict()) == config
    assert set(MASK_CTC_FIELDS) <= set(asr_config(mask_ctc=True).to_dict())
    # Without mask_ctc the dict (saved config, run fingerprint) is the one before Mask-CTC.
    assert not set(MASK_CTC_FIELDS) & set(asr_config().to_dict())


def nar_schema_problems(change) -> list[str]:
    """The schema's problems with config.yaml after `change` to its models.nar."""
    from comma.workflow_config import schema_problems

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    change(config["models"]["nar"])
    return schema_problems(config, schema)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda nar: nar["asr"].update(mask_ctc="yes"),
            "config key models.nar.asr.mask_ctc: 'yes' is not of type 'boolean'",
        ),
        (
            lambda nar: nar["asr"].update(ctc_weight=1.0),
            "config key models.nar.asr.ctc_weight: 1.0 is greater than or equal to the maximum",
        ),
        (
            lambda nar: nar["asr"].update(ctc_weight=0),
            "config key models.nar.asr.ctc_weight: 0 is less than or equal to the minimum",
        ),
        (
            lambda nar: nar["tts"].update(mask_ctc=True),
            "config key models.nar.tts.mask_ctc: False was expected",
        ),
    ],
)
def test_schema_takes_the_mask_ctc_keys_and_names_a_bad_one(change, expected):
    assert nar_schema_problems(lambda nar: None) == []
    assert nar_schema_problems(lambda nar: nar["asr"].update(mask_ctc=True)) == []
    problems = nar_schema_problems(change)
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_mini_preset_uses_mask_ctc_and_its_keys_build_the_config():
    from comma.workflow_config import family_settings

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    architecture, _ = family_settings(config, "nar", "asr")
    assert architecture["mask_ctc"] is True
    assert set(MASK_CTC_FIELDS) <= set(architecture)
    nar = NARConfig(task="asr", tgt_vocab=VOCAB, **architecture)
    assert nar == NARConfig(task="asr", tgt_vocab=VOCAB, **architecture) and nar.mask_ctc


# --------------------------------------------------------------------------------------------
# The one-pass model is unchanged


# NARASR's parameters before Mask-CTC (TINY: 2 encoder and 2 decoder layers).
ONE_PASS_PREFIXES = {
    "encoder",
    "length_head",
    "decoder",
    "output",
    "src_prenet",
    "tgt_prenet",
}


def test_without_mask_ctc_the_parameters_and_loss_are_the_one_pass_models():
    model = asr_model()
    names = [name for name, _ in model.named_parameters()]
    assert {name.split(".")[0] for name in names} == ONE_PASS_PREFIXES
    assert model.ctc_output is None
    masked_names = [name for name, _ in asr_model(mask_ctc=True).named_parameters()]
    assert set(masked_names) - set(names) == {"ctc_output.weight", "ctc_output.bias"}
    assert set(names) <= set(masked_names)

    batch, _ = make_batch("asr")
    model.train()
    seen = decoder_input_ids(model)
    rng = torch.get_rng_state()
    loss, logs = model.loss(batch)
    assert torch.equal(torch.get_rng_state(), rng)  # no random masking
    valid = padding_mask(batch.tgt_lengths)
    assert bool((seen[0][valid] == MASK_ID).all()) and bool((seen[0][~valid] == PAD_ID).all())
    assert logs["units"] == float(batch.tgt_lengths.sum()) and "ctc" not in logs
    # token cross-entropy over every target token + 0.1 x the length cross-entropy
    out = model(batch.src, batch.src_lengths, batch.tgt_lengths)
    ce = torch.nn.functional.cross_entropy(out.prediction[valid], batch.tgt[valid])
    length = torch.nn.functional.cross_entropy(out.length_logits, batch.tgt_lengths)
    assert torch.allclose(loss, ce + 0.1 * length, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Training loss


def test_mask_ctc_loss_masks_one_to_all_tokens_and_counts_only_them():
    model = asr_model(mask_ctc=True, ctc_weight=0.3).train()
    batch, _ = make_batch("asr")
    valid = padding_mask(batch.tgt_lengths)
    seen = decoder_input_ids(model)
    counts = set()
    for seed in range(12):
        torch.manual_seed(seed)
        loss, logs = model.loss(batch)
        ids = seen[-1]  # [B, N]
        masked = (ids == MASK_ID) & valid
        per_sentence = masked.sum(1)
        assert bool((per_sentence >= 1).all() and (per_sentence <= batch.tgt_lengths).all())
        assert torch.equal(ids[valid & ~masked], batch.tgt[valid & ~masked])  # the rest shown
        assert bool((ids[~valid] == PAD_ID).all())
        assert logs["units"] == float(masked.sum())
        assert torch.isfinite(loss) and {"nll", "ctc", "length_loss"} <= set(logs)
        # label_smoothing 0: (1 - w) x the masked tokens' nll + w x CTC + 0.1 x length CE
        expected = 0.7 * logs["nll"] + 0.3 * logs["ctc"] + 0.1 * logs["length_loss"]
        assert abs(float(loss.detach()) - expected) < 1e-4
        counts.add(tuple(per_sentence.tolist()))
    assert len(counts) > 1  # k and the positions are drawn anew
    torch.manual_seed(3)
    model.loss(batch)
    again = seen[-1]
    torch.manual_seed(3)
    model.loss(batch)
    assert torch.equal(again, seen[-1])  # deterministic by torch's seed


def test_mask_ctc_token_loss_reads_only_the_masked_positions():
    model = asr_model(mask_ctc=True).train()
    batch, _ = make_batch("asr")
    seen = decoder_input_ids(model)
    torch.manual_seed(7)
    reference, _ = model.loss(batch)
    masked = seen[-1] == MASK_ID  # [B, N]

    def perturb(where):
        noise = torch.randn(*where.shape, VOCAB, generator=torch.Generator().manual_seed(0))
        return model.output.register_forward_hook(
            lambda module, args, out: out + 10 * noise * where[..., None]
        )

    unmasked = padding_mask(batch.tgt_lengths) & ~masked
    assert bool(unmasked.any())
    for where, changes in ((unmasked, False), (masked, True)):
        hook = perturb(where)
        torch.manual_seed(7)
        loss, _ = model.loss(batch)
        hook.remove()
        assert torch.equal(seen[-1] == MASK_ID, masked)
        assert (abs(float((loss - reference).detach())) > 1e-3) == changes


def test_mask_ctc_backward_reaches_every_parameter_and_ac_applies_while_training():
    model = asr_model(mask_ctc=True, constraint=True).train()
    batch, alignment = make_batch("asr", model)
    windows = []
    model.decoder.register_forward_hook(
        lambda module, args, kwargs, out: windows.append(kwargs.get("cross_mask")),
        with_kwargs=True,
    )
    loss, _ = model.loss(with_targets(batch, alignment))
    loss.backward()
    missing = [
        name
        for name, p in model.named_parameters()
        if p.grad is None or float(p.grad.abs().sum()) == 0.0
    ]
    assert not missing, f"no gradient for {missing}"
    assert windows[-1] is not None and alignment.calls == ["window"]
    model.eval()
    model.generate(batch.src, batch.src_lengths)
    assert all(w is None for w in windows[1:]) and alignment.calls == ["window"]


# --------------------------------------------------------------------------------------------
# CTC collapse and decoding


def test_ctc_collapse_hand_case():
    blank = PAD_ID
    ids = torch.tensor(
        [
            [blank, 5, 5, blank, 5, 7, 7, 7, blank, 6],  # a blank splits a repeat
            [blank, blank, blank, 9, 9, 9, 9, 9, 9, 9],  # only blanks within its 3 frames
            [6, 6, 6, 8, 8, 8, 8, 8, 8, 8],  # 4 frames: 6 then 8, the rest is padding
        ]
    )
    probs = torch.arange(30, dtype=torch.float32).reshape(3, 10) / 100
    tokens, confidence, counts = ctc_collapse(ids, probs, torch.tensor([10, 3, 4]), blank)
    assert counts.tolist() == [4, 0, 2]
    assert tokens.tolist() == [[5, 5, 7, 6], [blank] * 4, [6, 8, blank, blank]]
    expected = [[0.02, 0.04, 0.07, 0.09], [0, 0, 0, 0], [0.22, 0.23, 0, 0]]
    assert torch.allclose(confidence, torch.tensor(expected))
    # the highest probability of a run, wherever it lies in the run
    tokens, confidence, counts = ctc_collapse(
        torch.tensor([[5, 5, 5, blank]]), torch.tensor([[0.3, 0.9, 0.5, 1.0]]), torch.tensor([4])
    )
    assert tokens.tolist() == [[5]] and confidence.tolist() == [[pytest.approx(0.9)]]


def frame_design(src_len: torch.Tensor, m_max: int) -> torch.Tensor:
    """Per-frame CTC ids ``[B, M]`` over {blank, 5, 6, 7}: repeats, blanks, and an all-blank
    last sentence."""
    g = torch.Generator().manual_seed(4)
    ids = torch.tensor([PAD_ID, 5, 6, 7])[torch.randint(0, 4, (len(src_len), m_max), generator=g)]
    ids[-1] = PAD_ID
    return ids


def reference_collapse(frames: list[int]) -> list[int]:
    return [k for k, _ in itertools.groupby(frames) if k != PAD_ID]


def force_ctc(
    model: NARASR, design: torch.Tensor, extra: torch.Tensor | None = None, boost: float = 50.0
):
    """Make the CTC head's frame argmax `design` ``[B, M]`` (`boost` above the other logits,
    plus `extra` ``[V]`` logits)."""
    boost = boost * torch.nn.functional.one_hot(design, VOCAB).float()  # [B, M, V]
    if extra is not None:
        boost = boost + extra
    model.ctc_output.register_forward_hook(lambda module, args, out: out + boost)


def test_mask_ctc_generate_lengths_are_the_ctc_outputs_and_never_special():
    model = asr_model(mask_ctc=True).eval()
    batch, _ = make_batch("asr")
    src_len = model.src_prenet.output_lengths(batch.src_lengths)  # [B] encoder positions
    design = frame_design(src_len, int(src_len.max()))
    expected = [reference_collapse(design[b, : int(m)].tolist()) for b, m in enumerate(src_len)]
    assert [len(e) for e in expected][-1] == 0 and min(len(e) for e in expected[:-1]) >= 2

    # The forbidden ids are the most likely ones of both heads: never output.
    boost = torch.zeros(VOCAB)
    boost[list(FORBIDDEN_IDS)] = 100.0
    boost[PAD_ID] = 0.0  # the CTC blank keeps its designed frames
    force_ctc(model, design, extra=boost)
    model.output.register_forward_hook(lambda module, args, out: out + 100.0 * (boost > 0))
    gen = model.generate(batch.src, batch.src_lengths)
    assert gen.lengths == [max(len(e), 1) for e in expected]
    assert [len(t) for t in gen.tokens] == gen.lengths and gen.frames is None
    assert not {t for sentence in gen.tokens for t in sentence} & set(FORBIDDEN_IDS)


def test_mask_ctc_keeps_sure_ctc_tokens_and_stops_when_nothing_is_masked():
    model = asr_model(mask_ctc=True).eval()
    batch, _ = make_batch("asr")
    src_len = model.src_prenet.output_lengths(batch.src_lengths)
    design = frame_design(src_len, int(src_len.max()))
    design[-1, 0] = 7  # no empty output: every CTC token is sure (p ~ 1 > 0.5)
    force_ctc(model, design)
    seen = decoder_input_ids(model)
    gen = model.generate(batch.src, batch.src_lengths, mask_threshold=0.5)
    assert seen == []  # nothing masked: no Mask-Predict pass
    assert gen.tokens == [
        reference_collapse(design[b, : int(m)].tolist()) for b, m in enumerate(src_len)
    ]


@pytest.mark.parametrize(("iterations", "masks"), [(2, [5, 2]), (10, [5, 4, 3, 2, 1])])
def test_mask_predict_reveals_ceil_of_the_masked_over_the_passes_left(iterations, masks):
    model = asr_model(mask_ctc=True).eval()
    batch, _ = make_batch("asr")
    src, src_len = batch.src[:1], batch.src_lengths[:1]
    m = int(model.src_prenet.output_lengths(src_len)[0])
    design = torch.tensor([[5, 6, PAD_ID, 6, 7, 5] + [5] * (m - 6)])  # 5 tokens: 5 6 6 7 5
    force_ctc(model, design, boost=5.0)  # p about 0.8: every token below 0.99
    seen = decoder_input_ids(model)
    gen = model.generate(src, src_len, mask_iterations=iterations, mask_threshold=0.99)
    assert gen.lengths == [5]
    assert [int((ids == MASK_ID).sum()) for ids in seen] == masks  # every token starts masked
    assert MASK_ID not in gen.tokens[0]


def synthetic_asr(n: int = 8, vocab: int = 16, n_mels: int = 20) -> Batch:
    """`n` clips whose tokens (ids 5..vocab-1) each sound as a fixed log-mel pattern for 8
    frames, then 4 frames of silence."""
    g = torch.Generator().manual_seed(5)
    patterns = torch.randn(vocab, n_mels, generator=g) * 2
    tgt_len = torch.randint(2, 6, (n,), generator=g)
    tgt = torch.randint(5, vocab, (n, int(tgt_len.max())), generator=g) * padding_mask(tgt_len)
    clips = [
        torch.cat([torch.cat([patterns[t].expand(8, -1), torch.zeros(4, n_mels)]) for t in row])
        for row in (tgt[b, : int(tgt_len[b])].tolist() for b in range(n))
    ]
    src_len = torch.tensor([len(c) for c in clips])
    src = torch.zeros(n, int(src_len.max()), n_mels)
    for b, clip in enumerate(clips):
        src[b, : len(clip)] = clip + 0.1 * torch.randn(clip.shape, generator=g)
    return Batch(src, src_len, tgt, tgt_len, torch.arange(n))


def test_mask_ctc_overfits_eight_clips():
    batch = synthetic_asr()
    torch.manual_seed(0)
    config = NARConfig(
        task="asr",
        tgt_vocab=16,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        heads=2,
        ffn_dim=64,
        dropout=0.0,
        n_mels=20,
        conv_channels=4,
        max_target_positions=16,
        mask_ctc=True,
    )
    model = NARASR(config).train()
    logs = fit(model, batch, steps=300)
    assert logs["ctc"] < 0.5 and logs["nll"] < 0.5, logs
    model.eval()
    gold = [batch.tgt[b, : int(n)].tolist() for b, n in enumerate(batch.tgt_lengths)]
    gen = model.generate(batch.src, batch.src_lengths)
    assert sum(t == g for t, g in zip(gen.tokens, gold, strict=True)) >= 6, (gen.tokens, gold)
    # Every CTC token masked (its logits flattened: the same argmax, none sure): the decoder's
    # Mask-Predict alone, at the CTC output's lengths.
    model.ctc_output.register_forward_hook(lambda module, args, out: 0.01 * out)
    seen = decoder_input_ids(model)
    flat = model.generate(batch.src, batch.src_lengths)
    assert flat.lengths == gen.lengths
    first = seen[0][padding_mask(torch.tensor(flat.lengths))]
    assert bool((first == MASK_ID).all()) and len(seen) == max(flat.lengths)  # one a pass
    assert sum(t == g for t, g in zip(flat.tokens, gold, strict=True)) >= 6, (flat.tokens, gold)


def test_mask_ctc_model_round_trip_through_the_registry(tmp_path):
    model = asr_model(mask_ctc=True).train()
    batch, _ = make_batch("asr")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):  # weights away from their initialization
        loss, _ = model.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    path = tmp_path / "model.pt"
    saved = {"format": MODEL_FORMAT, "config": model.config.to_dict(), "model": model.state_dict()}
    torch_save(saved, path)
    loaded = load_nar(path)
    assert isinstance(loaded, NARASR) and loaded.config == model.config
    assert loaded.config.mask_ctc and loaded.ctc_output is not None
    before = model.generate(batch.src, batch.src_lengths, mask_iterations=3, mask_threshold=0.9)
    after = loaded.generate(batch.src, batch.src_lengths, mask_iterations=3, mask_threshold=0.9)
    assert after.tokens == before.tokens and after.lengths == before.lengths
