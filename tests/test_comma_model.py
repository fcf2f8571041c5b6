"""CoMMA's mix-attention: the block structure, the softmax over both sides, both paths."""

from __future__ import annotations

import pytest
import torch

from comma.data.batching import Batch, TeacherTargets
from comma.models.comma import CoMMA, CoMMAConfig, target_rows_paper_order

TINY = dict(d_model=32, layers=2, heads=4, ffn_dim=64, dropout=0.1, conv_channels=4)


def make_model(task: str, **settings) -> CoMMA:
    torch.manual_seed(0)
    vocab = {"src_vocab": 30 if task != "asr" else None, "tgt_vocab": 40 if task != "tts" else None}
    config = CoMMAConfig(task=task, prenet_hidden=32, **{**TINY, **settings}, **vocab)
    return CoMMA(config).eval()


def make_inputs(task: str, batch: int = 3):
    g = torch.Generator().manual_seed(1)
    src_len, tgt_len = torch.tensor([7, 5, 2]), torch.tensor([4, 6, 3])
    if task == "asr":
        src_len = src_len * 5  # frames, before the conv pre-net's subsampling
        src = torch.randn(batch, int(src_len.max()), 80, generator=g)
    else:
        src = torch.randint(5, 30, (batch, int(src_len.max())), generator=g)
    if task == "tts":
        tgt_len = tgt_len * 4
        # smooth, learnable "spectrograms"
        frames = torch.arange(int(tgt_len.max()), dtype=torch.float32)[None, :, None]
        bins = torch.arange(80, dtype=torch.float32)[None, None, :]
        tgt = torch.sin(0.3 * frames + 0.1 * bins + torch.arange(batch)[:, None, None])
    else:
        tgt = torch.randint(5, 40, (batch, int(tgt_len.max())), generator=g)
    return src, src_len, tgt, tgt_len


@pytest.mark.parametrize("task", ["nmt", "asr", "tts"])
def test_source_never_sees_the_target(task):
    model = make_model(task)
    src, src_len, tgt, tgt_len = make_inputs(task)
    predicted = torch.zeros(tgt.shape[:2], dtype=torch.bool)  # every target position visible
    out = model(src, src_len, tgt, tgt_len, predicted)
    changed = tgt.clone()
    changed[:, 0] = changed[:, 0] + 1 if task != "tts" else changed[:, 0] * -3.0
    out_changed = model(src, src_len, changed, tgt_len, predicted)
    m = out.src_max
    for b in range(len(src_len)):
        valid = int(out.src_lengths[b])
        assert torch.allclose(out.hidden[b, :valid], out_changed.hidden[b, :valid], atol=1e-6)
    # ...while unmasked target positions do depend on other target positions.
    assert not torch.allclose(out.hidden[:, m + 1 :], out_changed.hidden[:, m + 1 :])


@pytest.mark.parametrize("task", ["nmt", "asr", "tts"])
def test_target_rows_sum_to_one_over_both_sides_and_paths_agree(task):
    model = make_model(task)
    src, src_len, tgt, tgt_len = make_inputs(task)
    predicted = model.mask_targets(tgt_len, 0.3, torch.Generator().manual_seed(0))
    fused = model(src, src_len, tgt, tgt_len, predicted)
    with torch.no_grad():
        explicit = model(src, src_len, tgt, tgt_len, predicted, need_weights=True)
    assert fused.attention is None
    assert torch.allclose(fused.prediction, explicit.prediction, atol=1e-5)
    assert len(explicit.attention) == TINY["layers"]
    n_max = tgt.shape[1]
    for layer in explicit.attention:
        rows = target_rows_paper_order(layer, explicit.src_max)  # [B, H, N, N + M]
        assert rows.shape[-2:] == (n_max, n_max + explicit.src_max)
        for b in range(len(src_len)):
            n, m = int(tgt_len[b]), int(explicit.src_lengths[b])
            valid = rows[b, :, :n]
            on_target, on_source = valid[..., :n].sum(-1), valid[..., n_max : n_max + m].sum(-1)
            assert torch.allclose(on_target + on_source, torch.ones_like(on_target), atol=1e-5)
            assert bool((on_source > 0).all()) and bool((on_target > 0).all())
            # nothing on padding columns
            assert (
                float(valid[..., n:n_max].abs().sum() + valid[..., n_max + m :].abs().sum()) == 0.0
            )


@pytest.mark.parametrize("task", ["nmt", "tts"])
def test_loss_is_on_masked_positions_and_falls(task):
    torch.manual_seed(0)
    model = make_model(task).train()
    src, src_len, tgt, tgt_len = make_inputs(task)
    batch = Batch(src, src_len, tgt, tgt_len, torch.arange(3))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss, logs = model.loss(batch)
        assert logs["units"] >= 3  # at least one masked position per sentence
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.5 * first


def _with_teacher(batch: Batch, maps: torch.Tensor, src_len=None) -> Batch:
    """`batch` carrying teacher maps ``[B, N, M]`` as its targets (the student's lengths)."""
    src_len = batch.src_lengths if src_len is None else src_len
    targets = TeacherTargets(src_len, batch.tgt_lengths, batch.indices, attention=maps)
    return batch.with_teacher(targets)


def test_attention_constraint_matches_eq_7_and_8_by_hand():
    import math

    from comma.models.comma import CoMMAOutput

    model = make_model("nmt", ac_mode="broadcast")
    # One layer, one head; our column order is [source (M=2); target (N=2)].
    mix = torch.zeros(1, 1, 4, 4)
    mix[0, 0, 2] = torch.tensor([0.2, 0.2, 0.3, 0.3])  # target 0: source part 0.5 / 0.5
    mix[0, 0, 3] = torch.tensor([0.1, 0.3, 0.6, 0.0])  # target 1: source part 0.25 / 0.75
    teacher = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])
    out = CoMMAOutput(torch.zeros(1, 2, 40), torch.tensor([2]), 2, [mix], torch.zeros(1, 4, 32))
    batch = Batch(
        torch.zeros(1, 2),
        torch.tensor([2]),
        torch.zeros(1, 2),
        torch.tensor([2]),
        torch.tensor([0]),
    )
    batch = _with_teacher(batch, teacher)
    expected = (math.log(2) + 0.5 * math.log(2) + 0.5 * math.log(2 / 3)) / 2
    assert model.attention_constraint(out, batch).item() == pytest.approx(expected, rel=1e-5)


def test_attention_constraint_is_zero_when_comma_matches_its_teacher():
    from comma.nn.attention import normalize_source_attention

    torch.manual_seed(0)
    config = CoMMAConfig(
        task="nmt",
        d_model=32,
        layers=1,
        heads=1,
        ffn_dim=64,
        dropout=0.0,
        src_vocab=30,
        tgt_vocab=40,
        ac_weight=1.0,
        ac_mode="broadcast",
    )
    model = CoMMA(config).eval()
    src, src_len, tgt, tgt_len = make_inputs("nmt")
    predicted = torch.zeros_like(tgt, dtype=torch.bool)
    out = model(src, src_len, tgt, tgt_len, predicted, need_weights=True)
    rows = target_rows_paper_order(out.attention[0], out.src_max)  # [B, 1, N, N + M]
    own = normalize_source_attention(rows, src_len, tgt_len)[:, 0].detach()
    batch = Batch(src, src_len, tgt, tgt_len, torch.arange(3))
    batch_own = _with_teacher(batch, own, out.src_lengths)
    assert model.attention_constraint(out, batch_own).item() == pytest.approx(0.0, abs=1e-6)
    other = _with_teacher(batch, torch.softmax(torch.randn_like(own), -1), out.src_lengths)
    assert model.attention_constraint(out, other).item() > 0.01


@pytest.mark.parametrize("task", ["nmt", "asr", "tts"])
def test_constraint_from_the_source_block_equals_the_whole_map(task):
    """Training asks for eq. 7's source block only (fused attention otherwise); the loss and
    its gradients equal those from the whole mix-attention, which R(p) reads."""
    model = make_model(task, ac_weight=1.0, dropout=0.0, prenet_dropout=0.0)
    src, src_len, tgt, tgt_len = make_inputs(task)
    predicted = model.mask_targets(tgt_len, 0.5, torch.Generator().manual_seed(0))
    whole = model(src, src_len, tgt, tgt_len, predicted, need_weights=True)
    n_max, m_max = tgt.shape[1], whole.src_max
    teacher = torch.softmax(torch.randn(3, 2, 4, n_max, m_max), -1)
    batch = Batch(src, src_len, tgt, tgt_len, torch.arange(3)).with_teacher(
        TeacherTargets(whole.src_lengths, tgt_len, torch.arange(3), head_attention=teacher)
    )
    losses, grads = [], []
    for options in ({"need_weights": True}, {"source_attention": True}):
        model.zero_grad()
        out = model(src, src_len, tgt, tgt_len, predicted, **options)
        loss = model.attention_constraint(out, batch)
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    block = model(src, src_len, tgt, tgt_len, predicted, source_attention=True)
    assert block.attention is None and len(block.source_attention) == 2
    assert block.source_attention[0].shape == (3, 4, n_max, m_max)
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    assert len(grads[0]) == len(grads[1]) > 0
    for a, b in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_per_head_constraint_matches_eq_8_head_by_head_by_hand():
    """ac_mode head: student head h is pulled to teacher head h, not to one shared map."""
    import math

    from comma.models.comma import CoMMAOutput

    model = make_model("nmt", layers=1, heads=2)
    assert model.TEACHER_TARGETS == ("head_attention",)
    # columns [source (M=2); target (N=2)]; both target rows of head 0 put 0.5 / 0.5 on the
    # source, head 1 puts 0.25 / 0.75
    mix = torch.zeros(1, 2, 4, 4)
    mix[0, 0, 2:] = torch.tensor([0.2, 0.2, 0.3, 0.3])
    mix[0, 1, 2:] = torch.tensor([0.1, 0.3, 0.6, 0.0])
    # teacher [B, L=1, H=2, N, M]: head 0 one-hot on source 0, head 1 = head 1 of the student
    teacher = torch.zeros(1, 1, 2, 2, 2)
    teacher[0, 0, 0] = torch.tensor([1.0, 0.0])
    teacher[0, 0, 1] = torch.tensor([0.25, 0.75])
    out = CoMMAOutput(torch.zeros(1, 2, 40), torch.tensor([2]), 2, [mix], torch.zeros(1, 4, 32))
    lengths = torch.tensor([2])
    batch = Batch(torch.zeros(1, 2), lengths, torch.zeros(1, 2), lengths, torch.tensor([0]))
    batch = batch.with_teacher(
        TeacherTargets(lengths, lengths, batch.indices, head_attention=teacher)
    )
    # head 0: KL(1, 0 || 0.5, 0.5) = log 2 per row; head 1: 0; mean over the two heads
    expected = (math.log(2) + 0.0) / 2
    assert model.attention_constraint(out, batch).item() == pytest.approx(expected, rel=1e-5)
    # broadcast would pull both heads to one map: a different value
    swapped = teacher.flip(2)
    batch = batch.with_teacher(
        TeacherTargets(lengths, lengths, batch.indices, head_attention=swapped)
    )
    assert model.attention_constraint(out, batch).item() != pytest.approx(expected, rel=1e-3)


def test_head_pairing_spreads_layers_and_refuses_other_head_counts():
    from comma.nn.attention import head_to_head_targets, teacher_layers_for

    assert teacher_layers_for(6, 6) == [0, 1, 2, 3, 4, 5]
    assert teacher_layers_for(3, 6) == [0, 3, 5]
    assert teacher_layers_for(1, 4) == [3]
    teacher = torch.softmax(torch.randn(2, 6, 4, 3, 5), -1)
    picked = head_to_head_targets(teacher, 3, 4)
    assert picked.shape == (2, 3, 4, 3, 5)
    assert torch.equal(picked[:, 0], teacher[:, 0]) and torch.equal(picked[:, 2], teacher[:, 5])
    with pytest.raises(ValueError, match="4 heads and the student 2.*ac_mode: broadcast"):
        head_to_head_targets(teacher, 3, 2)


def test_ac_loss_is_logged_and_needs_an_alignment():
    config = CoMMAConfig(
        task="nmt", **TINY, src_vocab=30, tgt_vocab=40, ac_weight=0.5, ac_mode="broadcast"
    )
    model = CoMMA(config)
    src, src_len, tgt, tgt_len = make_inputs("nmt")
    batch = Batch(src, src_len, tgt, tgt_len, torch.arange(3))
    with pytest.raises(RuntimeError, match="teacher alignment"):
        model.loss(batch)
    teacher = torch.softmax(torch.randn(3, int(tgt_len.max()), int(src_len.max())), -1)
    loss, logs = model.loss(_with_teacher(batch, teacher))
    assert logs["ac_kl"] > 0 and torch.isfinite(loss)
    loss.backward()


@pytest.mark.parametrize("task", ["asr", "tts"])
def test_log_mel_side_is_normalized_with_its_training_statistics(task):
    """Global CMVN on the log-mel side: rescaling and shifting every bin of the features (and
    recomputing the statistics) changes neither the predictions nor the loss."""
    src, src_len, tgt, tgt_len = make_inputs(task)
    mel, mel_len = (src, src_len) if task == "asr" else (tgt, tgt_len)
    scale, shift = torch.linspace(0.5, 3.0, 80), torch.linspace(-4.0, 2.0, 80)
    valid = torch.arange(mel.shape[1])[None, :, None] < mel_len[:, None, None]
    moved = (mel * scale + shift) * valid
    predicted = torch.zeros(tgt.shape[:2], dtype=torch.bool)
    predicted[:, :2] = True
    results = []
    for frames in (mel, moved):
        model = make_model(task)
        assert model.feature_side == ("src" if task == "asr" else "tgt")
        model.set_feature_statistics(frames[valid.expand_as(frames)].view(-1, 80))
        if task == "asr":
            inputs = (frames, src_len, tgt, tgt_len)
        else:
            inputs = (src, src_len, frames, tgt_len)
        out = model(*inputs, predicted)
        results.append((out.prediction, model.prediction_loss(out, inputs[2], predicted)))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-4, rtol=1e-4)
    assert make_model("nmt").feature_side is None
