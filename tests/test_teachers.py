"""AR teachers: teacher-forced inputs and losses, incremental decoding against the full
forward pass, attention weights, learning on tiny data, and the train/load entry points."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from comma.data.batching import Batch, collate
from comma.data.packed import PackedSequences, Split, save_split
from comma.data.vocab import Vocabulary
from comma.engine.train_config import TrainConfig
from comma.engine.trainer import train
from comma.models.registry import load_teacher
from comma.models.teacher import (
    ConvPostnet,
    TransformerASR,
    TransformerNMT,
    TransformerTTS,
    build_teacher,
)
from comma.models.teacher_base import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    TeacherConfig,
    guided_attention_weights,
    shift_frames,
    shift_tokens,
)
from comma.nn.transformer import padding_mask
from comma.stages.teacher import train_teacher

ARCH = dict(d_model=32, encoder_layers=2, decoder_layers=2, heads=4, ffn_dim=64, dropout=0.1)
SMALL = dict(conv_channels=4, prenet_hidden=32, postnet_channels=16)


def _config(task: str, **kw) -> TeacherConfig:
    vocab = {"nmt": dict(src_vocab=20, tgt_vocab=20), "asr": dict(tgt_vocab=20)}
    return TeacherConfig(task=task, **vocab.get(task, dict(src_vocab=20)), **ARCH, **SMALL, **kw)


def test_shift_tokens_adds_bos_and_eos_inside_the_lengths():
    tgt = torch.tensor([[7, 8, 9], [5, 6, 0]])
    prev, target, lengths = shift_tokens(tgt, torch.tensor([3, 2]))
    assert prev.tolist() == [[BOS_ID, 7, 8, 9], [BOS_ID, 5, 6, PAD_ID]]
    assert target.tolist() == [[7, 8, 9, EOS_ID], [5, 6, EOS_ID, PAD_ID]]
    assert lengths.tolist() == [4, 3]


def test_shift_frames_starts_with_a_zero_go_frame():
    tgt = torch.arange(1, 13, dtype=torch.float32).view(2, 3, 2)
    prev = shift_frames(tgt, torch.tensor([3, 2]))
    assert prev[:, 0].abs().sum() == 0
    assert torch.equal(prev[0, 1:], tgt[0, :2])
    assert torch.equal(prev[1, 1], tgt[1, 0]) and prev[1, 2].abs().sum() == 0  # padding


def test_token_loss_is_label_smoothed_cross_entropy_over_tokens_and_eos():
    torch.manual_seed(0)
    model = TransformerNMT(_config("nmt", label_smoothing=0.1)).eval()
    src = torch.randint(5, 20, (2, 5))
    tgt = torch.tensor([[7, 8, 9], [5, 6, 0]])
    batch = Batch(src, torch.tensor([5, 4]), tgt, torch.tensor([3, 2]), torch.arange(2))
    loss, logs = model.loss(batch)
    prev, target, lengths = shift_tokens(batch.tgt, batch.tgt_lengths)
    logits = model(batch.src, batch.src_lengths, prev, lengths).logits
    expected = F.cross_entropy(
        logits.flatten(0, 1), target.flatten(), ignore_index=PAD_ID, label_smoothing=0.1
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert logs["units"] == 7  # 3 + 2 tokens, each with its EOS
    nll = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=PAD_ID)
    assert logs["nll"] == pytest.approx(nll.item(), rel=1e-5)


def test_tied_embeddings_share_one_matrix():
    model = TransformerNMT(_config("nmt"))
    assert model.output.weight is model.tgt_prenet.embed.weight
    untied = TransformerNMT(_config("nmt", tie_embeddings=False))
    assert untied.output.weight is not untied.tgt_prenet.embed.weight


@pytest.mark.parametrize("task", ["nmt", "asr", "tts"])
def test_incremental_steps_equal_the_teacher_forced_pass(task):
    torch.manual_seed(1)
    model = build_teacher(_config(task, prenet_dropout_at_inference=False)).eval()
    g = torch.Generator().manual_seed(1)
    if task == "asr":
        src, src_len = torch.randn(2, 30, 80, generator=g), torch.tensor([30, 22])
    else:
        src, src_len = torch.randint(5, 20, (2, 6), generator=g), torch.tensor([6, 4])
    if task == "tts":
        tgt, tgt_len = torch.randn(2, 5, 80, generator=g), torch.tensor([5, 5])
        prev = shift_frames(tgt, tgt_len)
        full = model(src, src_len, prev, tgt_len).mel  # [B, T, n]
    else:
        tgt, tgt_len = torch.randint(5, 20, (2, 4), generator=g), torch.tensor([4, 4])
        prev, _, tgt_len = shift_tokens(tgt, tgt_len)
        full = model(src, src_len, prev, tgt_len).logits.log_softmax(-1)  # [B, T, V]
    encoded, cache = model.encode(src, src_len), model.new_cache()
    for t in range(prev.shape[1]):
        out = model.step(prev[:, t : t + 1], cache, encoded)
        out = out[0] if task == "tts" else out
        torch.testing.assert_close(out, full[:, t], atol=1e-5, rtol=1e-4)


def test_tts_outputs_and_attention_have_the_documented_shapes():
    torch.manual_seed(2)
    model = TransformerTTS(_config("tts", guided_attention_weight=1.0)).eval()
    src, src_len = torch.randint(5, 20, (3, 6)), torch.tensor([6, 3, 5])
    tgt, tgt_len = torch.randn(3, 9, 80), torch.tensor([9, 7, 4])
    with torch.no_grad():
        out = model(src, src_len, shift_frames(tgt, tgt_len), tgt_len, need_weights=True)
    assert out.mel.shape == out.mel_postnet.shape == (3, 9, 80)
    assert out.stop_logits.shape == (3, 9)
    assert len(out.cross_attention) == len(out.self_attention) == 2  # per decoder layer
    assert out.cross_attention[0].shape == (3, 4, 9, 6)  # [B, H, T, S]
    assert out.self_attention[1].shape == (3, 4, 9, 9)
    for layer in out.cross_attention:
        torch.testing.assert_close(layer[1, :, :7, :3].sum(-1), torch.ones(4, 7))
    # Causal: no decoder position attends to a later frame
    assert float(torch.triu(out.self_attention[0], diagonal=1).abs().max()) == 0.0
    loss, logs = model.loss(Batch(src, src_len, tgt, tgt_len, torch.arange(3)))
    assert logs["units"] == 20 and {"mel_l1", "postnet_l1", "stop_bce", "guided_attention"} <= set(
        logs
    )


def test_tts_teacher_trains_on_normalized_frames():
    """The loss is the same on log-mel x with statistics (m, s) as on (x - m) / s with
    (0, 1): the decoder's input and targets are the CMVN-normalized frames."""
    torch.manual_seed(4)
    model = TransformerTTS(_config("tts", prenet_dropout=0.0, postnet_dropout=0.0)).eval()
    src, src_len = torch.randint(5, 20, (2, 6)), torch.tensor([6, 4])
    tgt, tgt_len = torch.randn(2, 7, 80), torch.tensor([7, 5])
    tgt = tgt * padding_mask(tgt_len)[..., None]
    mean, std = torch.linspace(-6.0, 1.0, 80), torch.linspace(0.3, 2.5, 80)
    raw = (tgt * std + mean) * padding_mask(tgt_len)[..., None]
    unit, _ = model.loss(Batch(src, src_len, tgt, tgt_len, torch.arange(2)))
    model.feature_mean.copy_(mean)
    model.feature_std.copy_(std)
    scaled, _ = model.loss(Batch(src, src_len, raw, tgt_len, torch.arange(2)))
    torch.testing.assert_close(scaled, unit, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.decoder_inputs(raw, tgt_len), shift_frames(tgt, tgt_len))
    # Training sets the statistics only when asked: by default the teacher learns log-mel
    assert model.feature_side is None
    assert TransformerTTS(_config("tts", normalize_mel=True)).feature_side == "tgt"


def test_guided_attention_penalizes_off_diagonal_cells_only():
    w = guided_attention_weights(torch.tensor([4]), torch.tensor([4]), 5, 6, sigma=0.4)[0]
    assert w.shape == (6, 5)
    assert torch.allclose(w[:4, :4].diagonal(), torch.zeros(4))
    assert float(w[0, 3]) > float(w[0, 1]) > 0  # grows away from the diagonal
    assert float(w[4:].abs().sum()) == float(w[:, 4:].abs().sum()) == 0.0  # padding


def test_postnet_output_does_not_depend_on_padding():
    torch.manual_seed(3)
    postnet = ConvPostnet(8, 6, layers=5, kernel=5, dropout=0.0).eval()
    x = torch.randn(2, 10, 8)
    with torch.no_grad():
        batched = postnet(x, torch.tensor([10, 6]))
        alone = postnet(x[1:, :6], torch.tensor([6]))
    torch.testing.assert_close(batched[1, :6], alone[0])
    assert float(batched[1, 6:].abs().sum()) == 0.0


def test_asr_normalizes_features_with_training_statistics():
    model = TransformerASR(_config("asr"))
    frames = torch.randn(500, 80) * 3 + 5
    model.set_feature_statistics(frames)
    torch.testing.assert_close(model.feature_mean, frames.double().mean(0).float())
    torch.testing.assert_close(model.feature_std, frames.double().std(0).float())
    with pytest.raises(ValueError, match="need frames"):
        model.set_feature_statistics(torch.randn(10, 40))
    # Clips shorter than the conv's receptive field still give one encoder position
    out = model.encode(torch.randn(1, 3, 80), torch.tensor([3]))
    assert out.hidden.shape[:2] == (1, 1) and out.lengths.tolist() == [1]


def test_spec_augment_masks_bands_and_spans_inside_each_utterance():
    model = TransformerASR(
        _config("asr", freq_masks=2, freq_mask_width=10, time_masks=2, time_mask_width=8)
    )
    frames = torch.randn(3, 60, 80) + 10  # no zeros before masking
    lengths = torch.tensor([60, 40, 25])
    torch.manual_seed(5)
    masked = model._spec_augment(frames, lengths)
    torch.manual_seed(5)
    assert torch.equal(masked, model._spec_augment(frames, lengths))  # the global generator
    zero = masked == 0  # [B, T, F]
    assert bool(zero.any()) and float(zero.float().mean()) < 0.6
    bands = zero.all(dim=1)  # [B, F]: masked for every frame
    spans = zero.all(dim=2)  # [B, T]: masked for every bin
    assert int(bands.sum(dim=1).max()) <= 2 * 10
    for b, n in enumerate(lengths.tolist()):
        assert int(spans[b].sum()) <= 2 * min(8, n // 5)
        assert not bool(spans[b, n:].any())  # no time mask in the padding
    assert bool((zero == (bands[:, None, :] | spans[:, :, None])).all())  # nothing else


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown task"):
        TeacherConfig(task="mt", **ARCH)
    with pytest.raises(ValueError, match="needs tgt_vocab"):
        TeacherConfig(task="asr", **ARCH)
    with pytest.raises(ValueError, match="ASR"):
        _config("nmt", ctc_weight=0.3)
    with pytest.raises(ValueError, match="guided_attention_layers"):
        _config("tts", guided_attention_weight=1.0, guided_attention_layers=3)


def _toy_split(task: str, n: int = 48, seed: int = 0) -> Split:
    """A learnable toy task: NMT reverses the source; ASR reads a token per 8 frames (the
    token's one-hot pattern); TTS holds each phoneme's pattern for 3 frames."""
    g = torch.Generator().manual_seed(seed)
    src, tgt = [], []
    patterns = torch.randn(20, 80, generator=g)
    for _ in range(n):
        length = int(torch.randint(3, 7, (1,), generator=g))
        tokens = torch.randint(5, 20, (length,), generator=g)
        if task == "nmt":
            src.append(tokens)
            tgt.append(tokens.flip(0))
        elif task == "asr":
            src.append(patterns[tokens].repeat_interleave(8, dim=0))
            tgt.append(tokens)
        else:
            src.append(tokens)
            tgt.append(patterns[tokens].repeat_interleave(3, dim=0))
    return Split(
        PackedSequences.from_list(src), PackedSequences.from_list(tgt), [str(k) for k in range(n)]
    )


@pytest.mark.parametrize("task", ["nmt", "asr", "tts"])
def test_each_teacher_learns_a_toy_task(task, tmp_path):
    torch.manual_seed(0)
    extra = {"asr": dict(ctc_weight=0.3), "tts": dict(guided_attention_weight=1.0)}
    model = build_teacher(_config(task, **extra.get(task, {})))
    split = _toy_split(task)
    if task == "asr":
        model.set_feature_statistics(split.src.values)
    config = TrainConfig(
        max_steps=60, lr=3e-3, warmup_steps=10, seed=0, max_sentences=16, progress=False
    )
    metrics = tmp_path / "metrics.jsonl"
    train(model, split, config, tmp_path / "resume.pt", metrics)
    losses = [json.loads(line)["loss"] for line in metrics.read_text().splitlines()]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    model.eval()
    _, logs = model.loss(collate(split, list(range(16))))
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())


def _prepared_nmt_dir(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    words = [f"w{k}" for k in range(15)]
    Vocabulary(words, [1] * 15).save(data / "dict.src.txt")
    Vocabulary(words, [1] * 15).save(data / "dict.tgt.txt")
    save_split(data / "train.pt", _toy_split("nmt", n=24))
    return data


def test_train_teacher_writes_a_loadable_model_and_resumes(tmp_path):
    data = _prepared_nmt_dir(tmp_path)
    out = tmp_path / "teacher"
    architecture = dict(ARCH, label_smoothing=0.1)
    training = dict(max_steps=6, lr=1e-3, warmup_steps=2, max_sentences=8, checkpoint_every=3)
    kw = dict(architecture=architecture, seed=3, threads=1)
    train_teacher("nmt", data, out / "model.pt", out / "metrics.jsonl", training=training, **kw)
    model = load_teacher(out / "model.pt")
    assert isinstance(model, TransformerNMT) and not model.training
    assert model.config.src_vocab == model.config.tgt_vocab == 20  # 15 words + 5 specials
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 6
    # A larger budget resumes from the undeclared checkpoint beside the model
    more = dict(training, max_steps=9)
    train_teacher("nmt", data, out / "model.pt", out / "metrics.jsonl", training=more, **kw)
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 10))
    with pytest.raises(ValueError, match="not an AR teacher"):
        load_teacher(out / "resume.pt")


def test_a_model_file_whose_weights_do_not_fit_its_config_is_named(tmp_path):
    from comma.io import torch_load, torch_save

    data = _prepared_nmt_dir(tmp_path)
    out = tmp_path / "teacher"
    training = dict(max_steps=2, lr=1e-3, warmup_steps=1, max_sentences=8, checkpoint_every=2)
    train_teacher("nmt", data, out / "model.pt", None, training=training, architecture=ARCH, seed=1)
    saved = torch_load(out / "model.pt")
    saved["config"]["ffn_dim"] = saved["config"]["ffn_dim"] * 2
    torch_save(saved, tmp_path / "edited.pt")
    with pytest.raises(ValueError, match="edited.pt: the weights do not fit the saved config"):
        load_teacher(tmp_path / "edited.pt")
    del saved["model"]
    torch_save(saved, tmp_path / "no_weights.pt")
    with pytest.raises(ValueError, match="no_weights.pt: an AR teacher model file without"):
        load_teacher(tmp_path / "no_weights.pt")
