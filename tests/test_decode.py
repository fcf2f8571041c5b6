"""Decoding: beam search on a model whose scores we control, greedy search, mel generation and
teacher-forced attention of the AR teachers."""

from __future__ import annotations

import math

import pytest
import torch

from comma.data.batching import Batch
from comma.engine.decode import (
    NEVER_GENERATED,
    beam_search,
    generate_mel,
    greedy_search,
    max_lengths,
    teacher_forced_attention,
)
from comma.models.teacher import TransformerASR, TransformerNMT, TransformerTTS
from comma.models.teacher_base import EOS_ID, EncoderOutput, TeacherConfig

A, B = 5, 6  # the two real tokens of the scripted model (0-4 are the specials)
VOCAB = 7


class PrefixCache:
    """Each row's prefix so far ``[R, t]``; beam search reorders it like a decoder cache."""

    def __init__(self):
        self.prefixes: torch.Tensor | None = None

    def reorder_(self, rows: torch.Tensor) -> None:
        self.prefixes = self.prefixes.index_select(0, rows)


class ScriptedModel:
    """Next-token probabilities given by a table over prefixes (a missing prefix: EOS). The
    table makes greedy search go wrong: the locally best first token leads nowhere."""

    TABLE = {
        (): {A: 0.6, B: 0.4},
        (A,): {A: 0.34, B: 0.33, EOS_ID: 0.33},
        (A, A): {EOS_ID: 0.5, B: 0.5},
        (A, B): {EOS_ID: 0.5, A: 0.5},
        (B,): {EOS_ID: 0.99, A: 0.01},
    }

    def __init__(self):
        self.steps = 0

    def encode(self, src, src_len):
        return EncoderOutput(src.float()[..., None], src_len)

    def new_cache(self):
        return PrefixCache()

    def step(self, prev_tokens, cache, encoded):
        self.steps += 1
        if cache.prefixes is None:
            cache.prefixes = prev_tokens
        else:
            cache.prefixes = torch.cat([cache.prefixes, prev_tokens], dim=1)
        rows = []
        for prefix in cache.prefixes[:, 1:].tolist():  # without BOS
            probs = self.TABLE.get(tuple(prefix), {EOS_ID: 1.0})
            row = torch.full((VOCAB,), 1e-9)
            for token, p in probs.items():
                row[token] = p
            rows.append(row / row.sum())
        return torch.stack(rows).log()  # [R, V]


def _source(batch: int = 1):
    return torch.ones(batch, 3, dtype=torch.long), torch.full((batch,), 3)


def test_beam_search_finds_the_best_sequence_greedy_misses():
    src, src_len = _source()
    greedy = greedy_search(ScriptedModel(), src, src_len, max_len_b=5)[0]
    assert greedy.tokens[0] == A  # greedy commits to the likelier first token ...
    best = beam_search(ScriptedModel(), src, src_len, beam=2, max_len_b=5, nbest=2)[0]
    # ... but B EOS has probability 0.4 * 0.99, more than any continuation of A
    assert best[0].tokens == [B]
    assert best[0].log_prob == pytest.approx(math.log(0.4 * 0.99), abs=1e-5)
    assert best[0].score == pytest.approx(best[0].log_prob / 2)  # lenpen 1: EOS counted
    assert best[0].score > best[1].score > greedy.score


def test_length_penalty_trades_length_against_probability():
    src, src_len = _source()
    # lenpen 0: raw log-probability; the short B EOS (log 0.396) beats A A EOS (log 0.102)
    raw = beam_search(ScriptedModel(), src, src_len, beam=4, lenpen=0.0, max_len_b=5, nbest=4)
    assert raw[0][0].tokens == [B]
    scores = [h.score for h in raw[0]]
    assert scores == sorted(scores, reverse=True)
    assert all(h.score == pytest.approx(h.log_prob) for h in raw[0])


def test_beam_one_is_greedy_on_a_random_transformer():
    torch.manual_seed(0)
    config = TeacherConfig(
        task="nmt",
        src_vocab=20,
        tgt_vocab=12,
        d_model=16,
        encoder_layers=1,
        decoder_layers=2,
        heads=2,
        ffn_dim=32,
        dropout=0.0,
    )
    model = TransformerNMT(config).eval()
    src = torch.randint(5, 20, (4, 6))
    src_len = torch.tensor([6, 3, 5, 1])
    src[1, 3:] = src[2, 5:] = src[3, 1:] = 0
    limits = dict(max_len_a=1.0, max_len_b=3)
    greedy = greedy_search(model, src, src_len, **limits)
    beam = [n[0] for n in beam_search(model, src, src_len, beam=1, **limits)]
    assert [h.tokens for h in beam] == [h.tokens for h in greedy]
    assert [h.log_prob for h in beam] == pytest.approx([h.log_prob for h in greedy], abs=1e-4)
    # Lengths respect floor(a * src_len + b) and no special token is ever produced
    for h, limit in zip(greedy, max_lengths(src_len, **limits).tolist(), strict=True):
        assert len(h.tokens) <= limit
        assert not set(h.tokens) & {*NEVER_GENERATED, EOS_ID}


def test_batched_beam_search_equals_one_sentence_at_a_time():
    torch.manual_seed(1)
    config = TeacherConfig(
        task="nmt",
        src_vocab=20,
        tgt_vocab=9,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        heads=2,
        ffn_dim=32,
        dropout=0.0,
    )
    model = TransformerNMT(config).eval()
    src = torch.randint(5, 20, (3, 5))
    src_len = torch.tensor([5, 2, 4])
    src[1, 2:] = src[2, 4:] = 0
    batched = beam_search(model, src, src_len, beam=3, max_len_b=6, nbest=3)
    for k in range(3):
        n = int(src_len[k])
        alone = beam_search(
            model, src[k : k + 1, :n], src_len[k : k + 1], beam=3, max_len_b=6, nbest=3
        )
        assert [h.tokens for h in alone[0]] == [h.tokens for h in batched[k]]
        assert [h.score for h in alone[0]] == pytest.approx([h.score for h in batched[k]], abs=1e-4)


def test_the_length_limit_forces_eos():
    class NeverEnds(ScriptedModel):
        TABLE = {}

        def step(self, prev_tokens, cache, encoded):
            lprobs = super().step(prev_tokens, cache, encoded)
            lprobs[:, EOS_ID] = math.log(1e-6)  # never among the beam's best candidates
            lprobs[:, A] = math.log(0.6)
            lprobs[:, B] = math.log(0.4)
            return lprobs

    src, src_len = _source(2)
    src_len = torch.tensor([3, 1])
    for found in (
        [n[0] for n in beam_search(NeverEnds(), src, src_len, beam=2, max_len_a=1.0, max_len_b=1)],
        greedy_search(NeverEnds(), src, src_len, max_len_a=1.0, max_len_b=1),
    ):
        assert [len(h.tokens) for h in found] == [4, 2]  # floor(1.0 * src_len + 1)
        assert found[0].tokens == [A, A, A, A]


def test_beam_search_rejects_bad_arguments():
    src, src_len = _source()
    with pytest.raises(ValueError, match="nbest"):
        beam_search(ScriptedModel(), src, src_len, beam=2, nbest=3)


ARCH = dict(d_model=16, encoder_layers=1, decoder_layers=2, heads=2, ffn_dim=32, dropout=0.0)


def _tts(**kw) -> TransformerTTS:
    torch.manual_seed(0)
    config = TeacherConfig(
        task="tts", src_vocab=15, prenet_hidden=16, postnet_channels=8, **{**ARCH, **kw}
    )
    return TransformerTTS(config).eval()


def test_mel_generation_runs_in_normalized_units_and_returns_log_mel():
    """The TTS teacher's decoder runs on CMVN-normalized frames; generate_mel returns
    log-mel: with statistics (m, s) the frames are s * (those with (0, 1)) + m."""
    model = _tts(prenet_dropout_at_inference=False)
    src, src_len = torch.randint(5, 15, (2, 4)), torch.tensor([4, 3])
    options = dict(max_len_a=2.0, max_len_b=3, stop_threshold=1.0 - 1e-7)
    unit = generate_mel(model, src, src_len, **options).frames
    mean, std = torch.linspace(-5.0, 0.0, 80), torch.linspace(0.5, 2.0, 80)
    model.feature_mean.copy_(mean)
    model.feature_std.copy_(std)
    log_mel = generate_mel(model, src, src_len, **options).frames
    for a, b in zip(log_mel, unit, strict=True):
        torch.testing.assert_close(a, b * std + mean, rtol=1e-4, atol=1e-4)


def test_mel_generation_stops_on_the_stop_token_or_at_the_limit():
    model = _tts(prenet_dropout_at_inference=False)
    src = torch.randint(5, 15, (3, 4))
    src_len = torch.tensor([4, 2, 3])
    never = generate_mel(model, src, src_len, max_len_a=2.0, max_len_b=3, stop_threshold=1.0 - 1e-7)
    assert [len(f) for f in never.frames] == max_lengths(src_len, 2.0, 3).tolist()  # 11, 7, 9
    assert never.stopped == [False, False, False]
    assert all(f.shape[1] == 80 and bool(f.isfinite().all()) for f in never.frames)
    at_once = generate_mel(model, src, src_len, max_len_a=2.0, max_len_b=3, stop_threshold=1e-7)
    assert [len(f) for f in at_once.frames] == [1, 1, 1] and all(at_once.stopped)
    # Sentences leave the batch as they end: the others' frames do not change
    alone = generate_mel(
        model, src[1:2, :2], src_len[1:2], max_len_a=2.0, max_len_b=3, stop_threshold=1.0 - 1e-7
    )
    torch.testing.assert_close(alone.frames[0], never.frames[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("task", ["nmt", "asr", "tts"])
def test_teacher_forced_attention_rows_are_distributions_over_the_source(task):
    torch.manual_seed(2)
    g = torch.Generator().manual_seed(2)
    src_len = torch.tensor([7, 4, 6]) if task != "asr" else torch.tensor([40, 25, 31])
    tgt_len = torch.tensor([5, 6, 2]) if task != "tts" else torch.tensor([12, 9, 4])
    if task == "asr":
        src = torch.randn(3, 40, 80, generator=g)
        model = TransformerASR(TeacherConfig(task="asr", tgt_vocab=11, conv_channels=4, **ARCH))
    else:
        src = torch.randint(5, 15, (3, 7), generator=g)
    if task == "tts":
        tgt = torch.randn(3, 12, 80, generator=g)
        model = _tts(prenet_dropout_at_inference=False)
    else:
        tgt = torch.randint(5, 11, (3, 6), generator=g)
    if task == "nmt":
        model = TransformerNMT(TeacherConfig(task="nmt", src_vocab=15, tgt_vocab=11, **ARCH))
    model.eval()
    batch = Batch(src, src_len, tgt, tgt_len, torch.arange(3))
    result = teacher_forced_attention(model, batch)
    s_max = int(result.src_lengths.max())
    # [B, layers, heads, T, S]: one row per target unit (no EOS row), S after the pre-net
    assert result.attention.shape == (3, 2, 2, tgt.shape[1], s_max)
    assert torch.equal(result.tgt_lengths, tgt_len)
    if task == "asr":  # the conv pre-net: 3 valid convolutions (kernel 3), strides 2, 2, 1
        assert result.src_lengths.tolist() == [7, 3, 5]
    for b in range(3):
        rows = result.attention[b, :, :, : tgt_len[b]]  # [layers, heads, T_b, S]
        s = int(result.src_lengths[b])
        torch.testing.assert_close(rows[..., :s].sum(-1), torch.ones(rows.shape[:-1]))
        assert float(rows[..., s:].abs().sum()) == 0.0  # nothing on padded source positions


def test_decoding_settings_are_typed_once_and_name_a_bad_key():
    from comma.engine.decode_settings import DecodingSettings

    token = DecodingSettings.from_config(
        {"beam": 5, "lenpen": 1, "max_len_a": 1.2, "max_len_b": 10.0, "batch_sentences": 64}, "nmt"
    )
    assert token.arguments() == {
        "beam": 5,
        "lenpen": 1.0,
        "max_len_a": 1.2,
        "max_len_b": 10,
        "batch_sentences": 64,
    }
    assert isinstance(token.lenpen, float) and isinstance(token.max_len_b, int)
    assert token.limits == {"max_len_a": 1.2, "max_len_b": 10} and token.stop_threshold is None
    mel = {"max_len_a": 15.0, "max_len_b": 50, "stop_threshold": 0.5, "batch_sentences": 16}
    assert DecodingSettings.from_config(mel, "tts").arguments() == mel
    with pytest.raises(ValueError, match=r"decoding\.tts lacks \['stop_threshold'\]"):
        DecodingSettings.from_config({k: v for k, v in mel.items() if k != "stop_threshold"}, "tts")
    with pytest.raises(ValueError, match=r"decoding\.asr\.stop_threshold: not a decoding setting"):
        DecodingSettings.from_config({**token.arguments(), "stop_threshold": 0.5}, "asr")
    with pytest.raises(ValueError, match=r"decoding\.nmt\.beam: 2\.5 is not an integer"):
        DecodingSettings.from_config({**token.arguments(), "beam": 2.5}, "nmt")
    with pytest.raises(ValueError, match=r"decoding\.tts\.max_len_a: 'x' is not a number"):
        DecodingSettings.from_config({**mel, "max_len_a": "x"}, "tts")
    with pytest.raises(ValueError, match="unknown task"):
        DecodingSettings.from_config(mel, "xyz")
