"""NAT, NAR-ASR and FastSpeech (comma.models.nat, nar_asr, fastspeech): shapes, gradients, the
alignment constraints, the length regulator, padding invariance and a tiny overfit run."""

from __future__ import annotations

import math

import pytest
import torch

from comma.alignment.calculators import window_mask
from comma.data.batching import Batch, TeacherTargets
from comma.models.fastspeech import FastSpeech, durations_from_log, length_regulator
from comma.models.nar_asr import NARASR
from comma.models.nar_base import FORBIDDEN_IDS, NARConfig, NARGeneration
from comma.models.nat import nat_attention_kl, uniform_copy_indices
from comma.models.registry import NAR_MODELS, build_nar
from comma.nn.transformer import padding_mask

TINY = dict(
    d_model=32,
    encoder_layers=2,
    decoder_layers=2,
    heads=4,
    ffn_dim=64,
    dropout=0.1,
    n_mels=20,
    conv_channels=4,
    duration_predictor_filter=16,
)
VOCAB = {"nmt": (30, 40), "asr": (None, 40), "tts": (30, None)}
VARIANTS = [(task, ac) for task in ("nmt", "asr", "tts") for ac in (True, False)]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


class RecordingTargets(TeacherTargets):
    """Teacher targets that record which of them a model's loss reads."""

    def attention_map(self, tgt_max, src_max):
        self.calls.append("attention")
        return super().attention_map(tgt_max, src_max)

    def head_attention_maps(self, tgt_max, src_max):
        self.calls.append("head_attention")
        return super().head_attention_maps(tgt_max, src_max)

    def window(self, tgt_max, src_max):
        self.calls.append("window")
        return super().window(tgt_max, src_max)

    def durations(self, src_max):
        self.calls.append("durations")
        return super().durations(src_max)


class FakeAlignment:
    """A teacher alignment store (as comma.alignment.store.TeacherAlignment) over per-sentence
    tensors: `batch_targets` builds the targets that travel in a batch."""

    def __init__(self, maps=None, windows=None, durations=None):
        self.maps, self.windows, self.token_durations = maps, windows, durations
        self.calls = []

    def lengths(self, k: int) -> tuple[int, int]:
        """(source, target) teacher lengths of sentence k."""
        if self.maps is not None:
            return self.maps[k].shape[1], self.maps[k].shape[0]
        if self.windows is not None:
            return self.windows[k].shape[1], self.windows[k].shape[0]
        return len(self.token_durations[k]), int(self.token_durations[k].sum())

    def attention(self, indices, tgt_max, src_max):
        out = torch.zeros(len(indices), tgt_max, src_max)
        for row, k in enumerate(indices.tolist()):
            n, m = self.maps[k].shape
            out[row, :n, :m] = self.maps[k]
        return out

    def window(self, indices, tgt_max, src_max):
        out = torch.zeros(len(indices), tgt_max, src_max, dtype=torch.bool)
        for row, k in enumerate(indices.tolist()):
            n, m = self.windows[k].shape
            out[row, :n, :m] = self.windows[k]
        return out

    def durations(self, indices, src_max):
        out = torch.zeros(len(indices), src_max, dtype=torch.long)
        for row, k in enumerate(indices.tolist()):
            out[row, : len(self.token_durations[k])] = self.token_durations[k]
        return out

    def batch_targets(self, indices) -> RecordingTargets:
        lengths = torch.tensor([self.lengths(k) for k in indices.tolist()])  # [B, 2]
        m_max, t_max = (int(v) for v in lengths.max(0).values)
        attention = None if self.maps is None else self.attention(indices, t_max, m_max)
        # per head: every teacher layer and head holds the sentence's one map
        layers, heads = TINY["decoder_layers"], TINY["heads"]
        targets = RecordingTargets(
            lengths[:, 0],
            lengths[:, 1],
            indices,
            attention=attention,
            head_attention=(
                None
                if attention is None
                else attention[:, None, None].expand(-1, layers, heads, -1, -1).clone()
            ),
            windows=None if self.windows is None else self.window(indices, t_max, m_max),
            token_durations=(
                None if self.token_durations is None else self.durations(indices, m_max)
            ),
        )
        object.__setattr__(targets, "calls", self.calls)
        return targets


def with_targets(batch: Batch, alignment: FakeAlignment) -> Batch:
    """`batch` carrying the alignment's targets, as the trainer attaches them."""
    return batch.with_teacher(alignment.batch_targets(batch.indices))


def make_model(task: str, constraint: bool, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    src_vocab, tgt_vocab = VOCAB[task]
    config = NARConfig(
        task=task,
        constraint=constraint,
        src_vocab=src_vocab,
        tgt_vocab=tgt_vocab,
        **{**TINY, **overrides},
    )
    return build_nar(config)


def diagonal_expected(src_len: torch.Tensor, tgt_len: torch.Tensor) -> torch.Tensor:
    """1-based expected source positions on the diagonal, [B, N_max]."""
    i = torch.arange(int(tgt_len.max()))[None, :].float()
    e = torch.floor((i + 0.5) * src_len[:, None] / tgt_len[:, None]).long() + 1
    e = torch.minimum(e, src_len[:, None]).clamp(min=1)
    return e.masked_fill(~padding_mask(tgt_len), 0)


def make_batch(task: str, model=None) -> tuple[Batch, FakeAlignment]:
    """A 3-sentence batch of `task` and a matching fake teacher alignment."""
    g = torch.Generator().manual_seed(1)
    indices = torch.tensor([0, 1, 2])
    if task == "nmt":
        src_len, tgt_len = torch.tensor([7, 5, 3]), torch.tensor([6, 8, 2])
        src = torch.randint(5, 30, (3, 7), generator=g) * padding_mask(src_len)
        tgt = torch.randint(5, 40, (3, 8), generator=g) * padding_mask(tgt_len)
        maps = {}
        for k in range(3):
            scores = torch.randn(int(tgt_len[k]), int(src_len[k]), generator=g)
            maps[k] = scores.softmax(-1)
        return Batch(src, src_len, tgt, tgt_len, indices), FakeAlignment(maps=maps)
    if task == "asr":
        src_len, tgt_len = torch.tensor([60, 44, 30]), torch.tensor([5, 4, 3])
        src = torch.randn(3, 60, TINY["n_mels"], generator=g)
        src = src * padding_mask(src_len)[..., None]
        tgt = torch.randint(5, 40, (3, 5), generator=g) * padding_mask(tgt_len)
        windows = None
        if model is not None:
            sub = model.src_prenet.output_lengths(src_len)  # subsampled lengths
            full = window_mask(diagonal_expected(sub, tgt_len), sub, tgt_len)
            windows = {k: full[k, : int(tgt_len[k]), : int(sub[k])] for k in range(3)}
        return Batch(src, src_len, tgt, tgt_len, indices), FakeAlignment(windows=windows)
    src_len = torch.tensor([6, 4, 3])
    durations = {0: torch.tensor([2, 0, 3, 1, 4, 2]), 1: torch.tensor([1, 3, 0, 2]), 2: [0, 5, 1]}
    durations = {k: torch.as_tensor(v) for k, v in durations.items()}
    tgt_len = torch.stack([durations[k].sum() for k in range(3)])
    src = torch.randint(5, 30, (3, 6), generator=g) * padding_mask(src_len)
    frames = torch.arange(int(tgt_len.max()), dtype=torch.float32)[None, :, None]
    bins = torch.arange(TINY["n_mels"], dtype=torch.float32)[None, None, :]
    tgt = torch.sin(0.3 * frames + 0.1 * bins + torch.arange(3)[:, None, None])
    tgt = tgt * padding_mask(tgt_len)[..., None]
    return Batch(src, src_len, tgt, tgt_len, indices), FakeAlignment(durations=durations)


def attach(task: str, constraint: bool, **overrides):
    model = make_model(task, constraint, **overrides)
    batch, alignment = make_batch(task, model)
    return model, with_targets(batch, alignment), alignment


# --------------------------------------------------------------------------------------------
# Shapes, losses, gradients


@pytest.mark.parametrize("task,constraint", VARIANTS)
def test_forward_loss_and_generate_shapes(task, constraint):
    model, batch, alignment = attach(task, constraint)
    model.train()
    loss, logs = model.loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert logs["units"] == float(batch.tgt_lengths.sum())
    expected_logs = {
        "nmt": {"nll", "length_loss"} | ({"ac_kl"} if constraint else set()),
        "asr": {"nll", "length_loss"},
        "tts": {"mel_l1"} | ({"duration_loss"} if constraint else {"length_loss"}),
    }[task]
    assert expected_logs <= set(logs) and all(math.isfinite(v) for v in logs.values())
    assert bool(alignment.calls) == constraint  # the provider is read only with AC

    model.eval()
    b, t_max = len(batch), int(batch.tgt_lengths.max())
    width = VOCAB[task][1] if task != "tts" else TINY["n_mels"]
    if task == "tts" and constraint:
        durations = alignment.durations(batch.indices, batch.src.shape[1])
        out = model(batch.src, batch.src_lengths, batch.tgt_lengths, durations=durations)
        assert out.log_durations.shape == batch.src.shape
    else:
        out = model(batch.src, batch.src_lengths, batch.tgt_lengths)
    assert out.prediction.shape == (b, t_max, width)
    assert torch.isfinite(out.prediction).all()
    assert torch.equal(out.tgt_lengths, batch.tgt_lengths)
    if task != "tts":
        assert out.length_logits.shape == (b, model.config.max_target_positions)

    gen = model.generate(batch.src, batch.src_lengths)
    assert isinstance(gen, NARGeneration) and len(gen.lengths) == b
    assert all(n >= 1 for n in gen.lengths)
    if task == "tts":
        assert gen.tokens is None
        for frames, n in zip(gen.frames, gen.lengths, strict=True):
            assert frames.shape == (n, TINY["n_mels"]) and frames.dtype == torch.float32
            assert frames.device.type == "cpu"
    else:
        assert gen.frames is None
        assert [len(t) for t in gen.tokens] == gen.lengths


@pytest.mark.parametrize("task,constraint", VARIANTS)
def test_backward_reaches_every_parameter(task, constraint):
    model, batch, _ = attach(task, constraint)
    model.train()
    loss, _ = model.loss(batch)
    loss.backward()
    missing = [
        name
        for name, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or float(p.grad.abs().sum()) == 0.0)
    ]
    assert not missing, f"no gradient for {missing}"
    for p in model.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


def test_alignment_is_data_not_state_and_required_with_constraint():
    for task in ("nmt", "asr", "tts"):
        model = make_model(task, True).train()
        batch, alignment = make_batch(task, model)
        with pytest.raises(RuntimeError, match="teacher alignment's targets in its batches"):
            model.loss(batch)
        model.loss(with_targets(batch, alignment))
        assert not any("alignment" in key or "teacher" in key for key in model.state_dict())
        # the constraint-free variant never needs one
        make_model(task, False).train().loss(batch)


def test_config_validation_and_round_trip():
    config = NARConfig(task="asr", tgt_vocab=40, conv_strides=[2, 2, 1], **TINY)
    assert config.conv_strides == (2, 2, 1)
    assert NARConfig(**config.to_dict()) == config
    assert config.to_dict()["conv_strides"] == [2, 2, 1]
    with pytest.raises(ValueError, match="unknown task"):
        NARConfig(task="mt", src_vocab=9, tgt_vocab=9, **TINY)
    with pytest.raises(ValueError, match="src_vocab"):
        NARConfig(task="tts", **TINY)
    with pytest.raises(ValueError, match="fft_kernel"):
        NARConfig(task="tts", src_vocab=30, fft_kernel=4, **TINY)
    with pytest.raises(ValueError, match="tgt_vocab"):
        NARConfig(task="nmt", src_vocab=30, tgt_vocab=5, **TINY)
    assert set(NAR_MODELS) == {"nmt", "asr", "tts"}


# --------------------------------------------------------------------------------------------
# NAT


def test_uniform_copy_indices_hand_case():
    index = uniform_copy_indices(torch.tensor([5, 3, 4]), torch.tensor([3, 6, 4]))
    assert index.tolist() == [
        [0, 2, 3, 0, 0, 0],  # M=5, N=3: round(0), round(1.67), round(3.33)
        [0, 1, 1, 2, 2, 2],  # M=3, N=6: halves round up, clamped to M-1
        [0, 1, 2, 3, 0, 0],  # M=N: identity
    ]


def test_nat_attention_kl_zero_iff_student_matches_teacher():
    _, alignment = make_batch("nmt")
    batch, _ = make_batch("nmt")
    teacher = alignment.attention(batch.indices, 8, 7)  # [B, N, M]
    layers, heads = 2, 4
    same = [teacher[:, None].expand(-1, heads, -1, -1).clone() for _ in range(layers)]
    kl = nat_attention_kl(same, teacher, batch.src_lengths, batch.tgt_lengths)
    assert abs(float(kl)) < 1e-6
    other = [a.roll(1, dims=-1) for a in same]
    uniform = padding_mask(batch.src_lengths, 7)[:, None, None, :].float()
    uniform = (uniform / uniform.sum(-1, keepdim=True)).expand(-1, heads, 8, -1)
    for student in (other, [uniform] * layers):
        assert float(nat_attention_kl(student, teacher, batch.src_lengths, batch.tgt_lengths)) > 0


def test_nat_ac_loss_adds_the_weighted_kl():
    model, batch, _ = attach("nmt", True, dropout=0.0)
    loss, logs = model.loss(batch)
    plain = make_model("nmt", False, dropout=0.0)
    plain.load_state_dict(model.state_dict())
    plain_loss, _ = plain.loss(batch)
    assert logs["ac_kl"] > 0
    assert torch.allclose(loss, plain_loss + model.config.ac_weight * logs["ac_kl"], atol=1e-5)


def test_generate_never_outputs_special_ids():
    model, batch, _ = attach("nmt", False)
    model.eval()
    # Make the forbidden ids the most likely ones: generate must still skip them.
    boost = torch.zeros(VOCAB["nmt"][1])
    boost[list(FORBIDDEN_IDS)] = 100.0
    model.output.register_forward_hook(lambda module, args, out: out + boost)
    gen = model.generate(batch.src, batch.src_lengths)
    assert not {t for sentence in gen.tokens for t in sentence} & set(FORBIDDEN_IDS)


@pytest.mark.parametrize("task,constraint", [("nmt", False), ("tts", True), ("tts", False)])
def test_outputs_do_not_depend_on_other_sentences(task, constraint):
    model, batch, alignment = attach(task, constraint)
    model.eval()
    if task == "tts":  # durations of about 2 frames per phoneme, so the lengths vary
        if constraint:
            torch.nn.init.constant_(model.duration_predictor.out.bias, math.log(3.0))
        else:
            torch.nn.init.constant_(model.length_head.bias, math.log(12.0))
    together = model.generate(batch.src, batch.src_lengths)
    if task != "tts":
        full = model(batch.src, batch.src_lengths, batch.tgt_lengths).prediction
    for b in range(len(batch)):
        m = int(batch.src_lengths[b])
        alone = model.generate(batch.src[b : b + 1, :m], batch.src_lengths[b : b + 1])
        assert alone.lengths[0] == together.lengths[b]
        if task == "tts":
            assert torch.allclose(alone.frames[0], together.frames[b], atol=1e-5)
        else:
            assert alone.tokens[0] == together.tokens[b]
            n = int(batch.tgt_lengths[b])
            single = model(
                batch.src[b : b + 1, :m], batch.src_lengths[b : b + 1], batch.tgt_lengths[b : b + 1]
            )
            assert torch.allclose(single.prediction[0, :n], full[b, :n], atol=1e-5)


def fit(model: torch.nn.Module, batch: Batch, steps: int, lr: float = 3e-3) -> dict:
    """`steps` Adam steps of `model.loss` on one batch -> the last step's logs."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss, logs = model.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return logs


def test_nat_overfits_eight_sentence_pairs():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    src_len = torch.randint(4, 9, (8,), generator=g)
    tgt_len = torch.randint(3, 8, (8,), generator=g)
    src = torch.randint(5, 20, (8, 8), generator=g) * padding_mask(src_len, 8)
    tgt = torch.randint(5, 20, (8, int(tgt_len.max())), generator=g) * padding_mask(tgt_len)
    batch = Batch(src, src_len, tgt, tgt_len, torch.arange(8))
    config = NARConfig(
        task="nmt",
        src_vocab=20,
        tgt_vocab=20,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        heads=4,
        ffn_dim=64,
        dropout=0.0,
        max_target_positions=16,
    )
    model = build_nar(config).train()
    logs = fit(model, batch, steps=200)
    assert logs["nll"] < 0.05 and logs["length_loss"] < 0.1, logs
    model.eval()
    gen = model.generate(src, src_len)
    assert gen.lengths == tgt_len.tolist()
    assert gen.tokens == [tgt[b, : int(tgt_len[b])].tolist() for b in range(8)]


# --------------------------------------------------------------------------------------------
# NAR-ASR


def test_asr_window_restricts_cross_attention_only_while_training():
    model, batch, alignment = attach("asr", True, dropout=0.0)
    captured = []
    model.decoder.register_forward_hook(
        lambda module, args, kwargs, out: captured.append(kwargs.get("cross_mask")),
        with_kwargs=True,
    )
    model.train()
    memory, src_len, _ = model.encode(batch.src, batch.src_lengths)
    window = model.training_window(batch, src_len, memory.shape[1])  # [B, N, M]
    assert window is not None and window.shape == (3, 5, memory.shape[1])
    with torch.no_grad():
        out = model(batch.src, batch.src_lengths, batch.tgt_lengths, window, need_weights=True)
    rows = padding_mask(batch.tgt_lengths)[:, None, :, None]  # [B, 1, N, 1]
    outside = ~window[:, None] & rows  # valid rows, columns outside the window
    for layer in out.cross_attention:  # [B, H, N, M]
        assert float(layer.masked_select(outside.expand_as(layer)).abs().max()) == 0.0
        inside = layer.masked_select((window[:, None] & rows).expand_as(layer))
        assert float(inside.sum()) > 0
    # loss() applies the window in training mode ...
    model.loss(batch)
    assert captured[-1] is not None and alignment.calls == ["window"] * 2
    # ... and not in eval mode, nor does generate.
    model.eval()
    assert model.training_window(batch, src_len, memory.shape[1]) is None
    model.loss(batch)
    assert captured[-1] is None and alignment.calls == ["window"] * 2
    gen = model.generate(batch.src, batch.src_lengths)
    assert captured[-1] is None and alignment.calls == ["window"] * 2
    free = model(batch.src, batch.src_lengths, need_weights=True)
    assert gen.lengths == free.tgt_lengths.tolist()
    windowed = model(batch.src, batch.src_lengths, batch.tgt_lengths, window)
    unwindowed = model(batch.src, batch.src_lengths, batch.tgt_lengths)
    assert not torch.allclose(windowed.prediction, unwindowed.prediction)


def test_asr_window_from_other_strides_is_rejected():
    model, batch, alignment = attach("asr", True)
    model.train()
    sub = model.src_prenet.output_lengths(batch.src_lengths)  # [12, 9, 4] subsampled positions

    # A teacher whose windows are 3 subsampled positions wider (other strides)
    wide = {k: torch.nn.functional.pad(window, (0, 3)) for k, window in alignment.windows.items()}
    with pytest.raises(ValueError, match="same pre-net subsampling"):
        model.loss(with_targets(batch, FakeAlignment(windows=wide)))
    # The right width, but the shortest clip's window reaches beyond its subsampled length
    # (a teacher that subsampled less).
    wider = dict(alignment.windows)
    wider[2] = torch.ones(int(batch.tgt_lengths[2]), int(sub[2]) + 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="same pre-net subsampling"):
        model.loss(with_targets(batch, FakeAlignment(windows=wider)))


def test_asr_feature_statistics():
    model = make_model("asr", False)
    frames = torch.randn(500, TINY["n_mels"]) * 3 + 2
    model.set_feature_statistics(frames)
    assert torch.allclose(model.feature_mean, frames.mean(0), atol=1e-5)
    assert torch.allclose(model.feature_std, frames.std(0), atol=1e-4)
    assert "feature_mean" in model.state_dict()
    with pytest.raises(ValueError):
        model.set_feature_statistics(torch.randn(10, 3))


# --------------------------------------------------------------------------------------------
# FastSpeech


def test_length_regulator_expands_exactly():
    hidden = torch.tensor([[10.0 * b + j for j in range(4)] for b in range(2)])  # [2, 4]
    hidden = torch.stack([hidden, -hidden], dim=-1)  # [B=2, M=4, d=2]
    durations = torch.tensor([[2, 0, 1, 3], [0, 1, 0, 0]])
    expanded, lengths = length_regulator(hidden, durations)
    assert lengths.tolist() == [6, 1] and expanded.shape == (2, 6, 2)
    assert expanded[0, :, 0].tolist() == [0, 0, 2, 3, 3, 3]
    assert expanded[1, :, 0].tolist() == [11, 0, 0, 0, 0, 0]  # padding frames are zero
    assert torch.equal(expanded[..., 1], -expanded[..., 0])
    cut, cut_lengths = length_regulator(hidden, durations, max_len=4)
    assert cut_lengths.tolist() == [4, 1] and torch.equal(cut, expanded[:, :4])
    with pytest.raises(ValueError, match=">= 0"):
        length_regulator(hidden, torch.tensor([[1, -1, 0, 0], [1, 0, 0, 0]]))


def test_durations_from_log_rounds_and_keeps_one_frame():
    log_d = torch.log(torch.tensor([[3.4, 1.2, 2.6, 9.0], [0.2, 1.4, 0.1, 5.0]]))  # d + 1
    durations = durations_from_log(log_d, torch.tensor([3, 3]))
    assert durations.tolist() == [[2, 0, 2, 0], [0, 1, 0, 0]]  # ties (1.4-1=0.4) round down
    nothing = durations_from_log(torch.log(torch.tensor([[1.1, 1.3, 1.2]])), torch.tensor([3]))
    assert nothing.tolist() == [[0, 1, 0]]  # at least one frame, on the largest prediction


def test_fastspeech_generate_length_is_the_sum_of_rounded_durations():
    model, batch, _ = attach("tts", True)
    model.eval()
    torch.nn.init.constant_(model.duration_predictor.out.bias, math.log(3.0))
    gen = model.generate(batch.src, batch.src_lengths)
    out = model(batch.src, batch.src_lengths)
    rounded = torch.round(torch.exp(out.log_durations) - 1).clamp(min=0)
    rounded = rounded * padding_mask(batch.src_lengths)
    assert gen.lengths == rounded.sum(1).long().tolist()
    assert len(set(gen.lengths)) > 1
    for frames, n in zip(gen.frames, gen.lengths, strict=True):
        assert frames.shape == (n, TINY["n_mels"])


@pytest.mark.parametrize("constraint", [True, False])
def test_fastspeech_learns_normalized_frames_and_generates_log_mel(constraint):
    """CMVN as the TTS teacher and CoMMA: the loss is the same on log-mel x with statistics
    (m, s) as on (x - m) / s with (0, 1); generation returns s * frames + m."""
    model, batch, _ = attach("tts", constraint, dropout=0.0)
    model.eval()
    n_mels = TINY["n_mels"]
    mean, std = torch.linspace(-4.0, 1.0, n_mels), torch.linspace(0.5, 3.0, n_mels)
    valid = padding_mask(batch.tgt_lengths)[..., None]
    raw = Batch(
        batch.src,
        batch.src_lengths,
        (batch.tgt * std + mean) * valid,
        batch.tgt_lengths,
        batch.indices,
        teacher=batch.teacher,
    )
    unit, _ = model.loss(batch)
    unit_frames = model.generate(batch.src, batch.src_lengths).frames
    model.feature_mean.copy_(mean)
    model.feature_std.copy_(std)
    scaled, _ = model.loss(raw)
    torch.testing.assert_close(scaled, unit, rtol=1e-4, atol=1e-5)
    log_mel = model.generate(batch.src, batch.src_lengths).frames
    for a, b in zip(log_mel, unit_frames, strict=True):
        torch.testing.assert_close(a, b * std + mean, rtol=1e-4, atol=1e-4)
    assert "feature_mean" in model.state_dict()


def test_fastspeech_rejects_durations_that_miss_the_mel_length():
    model, batch, alignment = attach("tts", True)
    alignment.token_durations[0] = alignment.token_durations[0] + 1
    batch = with_targets(batch, alignment)
    with pytest.raises(ValueError, match="teacher's alignment has target length"):
        model.loss(batch)


def test_fastspeech_without_ac_attends_and_predicts_its_length():
    model, batch, _ = attach("tts", False)
    assert isinstance(model, FastSpeech) and model.duration_predictor is None
    model.eval()
    out = model(batch.src, batch.src_lengths, batch.tgt_lengths, need_weights=True)
    assert len(out.cross_attention) == TINY["decoder_layers"]
    assert out.cross_attention[0].shape == (3, TINY["heads"], int(batch.tgt_lengths.max()), 6)
    torch.nn.init.constant_(model.length_head.bias, math.log(20.0))
    free = model(batch.src, batch.src_lengths)
    expected = torch.round(torch.exp(free.log_length)).long().clamp(min=1)
    assert torch.equal(free.tgt_lengths, expected)
    assert isinstance(make_model("asr", True), NARASR)


def test_nat_per_head_constraint_equals_broadcast_when_every_teacher_head_agrees():
    """With every teacher layer and head holding the same map, head to head (eq. 6 per head)
    and broadcast give the same KL; with distinct teacher heads they differ."""
    head_model, batch, _ = attach("nmt", True, dropout=0.0)
    broadcast = make_model("nmt", True, dropout=0.0, ac_mode="broadcast")
    broadcast.load_state_dict(head_model.state_dict())
    assert head_model.TEACHER_TARGETS == ("head_attention",)
    assert broadcast.TEACHER_TARGETS == ("attention",)
    _, head_logs = head_model.loss(batch)
    _, broadcast_logs = broadcast.loss(batch)
    assert head_logs["ac_kl"] == pytest.approx(broadcast_logs["ac_kl"], rel=1e-5)
    targets = batch.teacher
    distinct = targets.head_attention.roll(1, dims=-1)  # every head elsewhere on the source
    distinct[:, :, 0] = targets.head_attention[:, :, 0]  # head 0 keeps the shared map
    moved = batch.with_teacher(
        TeacherTargets(
            targets.src_lengths, targets.tgt_lengths, targets.indices, head_attention=distinct
        )
    )
    _, moved_logs = head_model.loss(moved)
    assert moved_logs["ac_kl"] != pytest.approx(head_logs["ac_kl"], rel=1e-3)
