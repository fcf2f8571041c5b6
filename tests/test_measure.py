"""R(p) measurement of a trained CoMMA and the aggregation over seeds."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from comma.analysis.aggregate import aggregate_ratio
from comma.data.batching import collate
from comma.data.packed import PackedSequences, Split, save_split
from comma.dependency import corpus_dependency, dependency_ci, loss_dependency
from comma.io import torch_save
from comma.models.comma import MODEL_FORMAT, CoMMA, CoMMAConfig
from comma.models.registry import load_comma
from comma.stages.comma import measure_ratio

ARCH = dict(d_model=32, layers=2, heads=4, ffn_dim=64, dropout=0.0)


@pytest.fixture
def nmt_model_and_test(tmp_path):
    torch.manual_seed(0)
    config = CoMMAConfig(task="nmt", src_vocab=20, tgt_vocab=25, **ARCH)
    model_path = tmp_path / "model.pt"
    torch_save(
        {"format": MODEL_FORMAT, "config": config.to_dict(), "model": CoMMA(config).state_dict()},
        model_path,
    )
    g = torch.Generator().manual_seed(3)
    lengths = [(5, 7), (9, 4), (3, 3), (12, 10), (6, 8)]
    src = [torch.randint(5, 20, (m,), generator=g) for m, _ in lengths]
    tgt = [torch.randint(5, 25, (n,), generator=g) for _, n in lengths]
    test_path = tmp_path / "test.pt"
    save_split(
        test_path,
        Split(PackedSequences.from_list(src), PackedSequences.from_list(tgt), list("abcde")),
    )
    return model_path, test_path


def run(model_path, test_path, tmp_path, **kw):
    args = dict(
        labels={"task": "nmt", "variant": "raw", "seed": 1},
        p_grid=[0.2, 0.6],
        mask_seed=0,
        bootstrap=200,
        batch_sentences=2,
    )
    args.update(kw)
    return measure_ratio(model_path, test_path, tmp_path / "r.csv", tmp_path / "h.csv", **args)


def test_one_row_per_p_with_lengths_and_a_ci(nmt_model_and_test, tmp_path):
    table = run(*nmt_model_and_test, tmp_path)
    assert list(table.p) == [0.2, 0.6]
    assert table.sentences.tolist() == [5, 5]
    assert table.M.tolist() == [7.0, 7.0] and table.N.tolist() == [6.4, 6.4]
    # round(p * N) masked per sentence, at least one: N = 7, 4, 3, 10, 8
    assert table.predicted.tolist() == [1 + 1 + 1 + 2 + 2, 4 + 2 + 2 + 6 + 5]
    assert ((table.R > 0) & (table.R < 1)).all()
    assert (table.R_ci_low <= table.R).all() and (table.R_ci_high >= table.R).all()
    written = pd.read_csv(tmp_path / "r.csv")
    assert written.R.to_numpy() == pytest.approx(table.R.to_numpy(), rel=1e-5)
    heads = pd.read_csv(tmp_path / "h.csv")
    assert len(heads) == 2 * ARCH["layers"] * ARCH["heads"]


def test_one_head_selection_equals_that_heads_row(nmt_model_and_test, tmp_path):
    run(*nmt_model_and_test, tmp_path)
    heads = pd.read_csv(tmp_path / "h.csv")
    single = run(*nmt_model_and_test, tmp_path, layers=[1], heads=[2])
    expected = heads[(heads.layer == 1) & (heads["head"] == 2)].R.to_numpy()
    assert single.R.to_numpy() == pytest.approx(expected, abs=1e-5)
    # and averaging over every head is not just any single head
    everything = run(*nmt_model_and_test, tmp_path)
    assert everything.R.to_numpy() != pytest.approx(expected, abs=1e-5)


def test_bad_layer_selection_is_named(nmt_model_and_test, tmp_path):
    with pytest.raises(ValueError, match="layers"):
        run(*nmt_model_and_test, tmp_path, layers=[5])


def test_loaded_model_is_in_eval_mode(nmt_model_and_test):
    assert not load_comma(nmt_model_and_test[0]).training


def test_aggregate_over_seeds(tmp_path):
    paths = []
    for seed, r in ((1, 0.5), (2, 0.7), (3, 0.6)):
        path = tmp_path / f"s{seed}.csv"
        pd.DataFrame(
            {
                "task": ["nmt"],
                "variant": ["raw"],
                "seed": [seed],
                "p": [0.1],
                "R": [r],
                "R_ci_low": [r - 0.01],
                "R_ci_high": [r + 0.03],
                "T": [0.4],
                "D": [r / 2],
                "M": [10.0],
                "N": [5.0],
                "M_over_N": [2.0],
                "sentences": [100],
                "predicted": [60],
            }
        ).to_csv(path, index=False)
        paths.append(path)
    summary = aggregate_ratio(paths, tmp_path / "runs.csv", tmp_path / "sum.csv", tmp_path / "s.md")
    row = summary.iloc[0]
    assert row.R_mean == pytest.approx(0.6) and row.R_min == 0.5 and row.R_max == 0.7
    assert row.R_std == pytest.approx(0.1) and row.seeds == 3
    assert row.CI_halfwidth == pytest.approx(0.02)
    assert row.D_mean == pytest.approx(0.3) and row.D_std == pytest.approx(0.05)
    assert "| nmt | raw | 0.10 | 0.6000 |" in (tmp_path / "s.md").read_text()
    assert len(pd.read_csv(tmp_path / "runs.csv")) == 3


def test_per_sentence_table_matches_the_corpus_ratio(nmt_model_and_test, tmp_path):
    table = run(*nmt_model_and_test, tmp_path, sentences_csv=tmp_path / "s.csv")
    sentences = pd.read_csv(tmp_path / "s.csv")
    assert list(sentences.columns) == [
        *("task", "variant", "seed", "p", "sentence", "M", "N", "predicted", "R", "T", "D"),
        *("loss_context", "loss_no_target"),
    ]
    # every test sentence has a predicted token at every p (at least one is masked)
    assert len(sentences) == 2 * 5 and set(sentences.sentence) == set(range(5))
    first = sentences[sentences.p == 0.2].set_index("sentence")
    assert first.N.tolist() == [7, 4, 3, 10, 8] and first.M.tolist() == [5, 9, 3, 12, 6]
    assert first.predicted.sum() == table.predicted.iloc[0]
    # eq. 3: R(p) is the mean of the sentences' eq. 2 values (4 significant digits written)
    per_p = sentences.groupby("p")[["R", "T"]].mean()
    # D(p): a ratio of the losses summed over every sentence's masked tokens
    sums = sentences.groupby("p")[["loss_context", "loss_no_target"]].sum()
    from_sums = 1 - sums.loss_context / sums.loss_no_target
    assert from_sums.to_numpy() == pytest.approx(table.D.to_numpy(), abs=2e-3)
    assert per_p.R.to_numpy() == pytest.approx(table.R.to_numpy(), abs=2e-4)
    assert per_p["T"].to_numpy() == pytest.approx(table["T"].to_numpy(), abs=2e-4)
    assert (sentences.task == "nmt").all() and (sentences.seed == 1).all()


def _trained_nmt(tmp_path, name: str, target_of):
    """A tiny CoMMA trained to convergence on sentences whose target is `target_of(source,
    generator)`, saved as a model file, with a test split of the same kind."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)

    def corpus(n):
        src = [torch.randint(5, 20, (6,), generator=g) for _ in range(n)]
        return Split(
            PackedSequences.from_list(src),
            PackedSequences.from_list([target_of(s, g) for s in src]),
            [str(k) for k in range(n)],
        )

    config = CoMMAConfig(task="nmt", src_vocab=20, tgt_vocab=20, **ARCH)
    model = CoMMA(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    train = corpus(256)
    for step in range(300):
        indices = torch.arange(32) + 32 * (step % 8)
        loss, _ = model.loss(collate(train, indices.numpy()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model_path, test_path = tmp_path / f"{name}.pt", tmp_path / f"{name}_test.pt"
    saved = {"format": MODEL_FORMAT, "config": config.to_dict(), "model": model.state_dict()}
    torch_save(saved, model_path)
    save_split(test_path, corpus(64))
    return model_path, test_path


def test_masked_loss_dependency_separates_copying_from_independent_targets(tmp_path):
    """D(p) = 1 - L(masked | rest of target) / L(masked | no target). Targets whose tokens all
    copy one random token (not in the source): the visible target gives the masked ones away,
    D near 1. Targets whose positions each copy their source token or, independently, draw
    noise: the rest of the target tells nothing about a masked position, D near 0."""
    copies = _trained_nmt(
        tmp_path, "copies", lambda src, g: torch.randint(5, 20, (1,), generator=g).repeat(6)
    )

    def noisy_copy(src, g):  # each position: its source token or, independently, noise
        noise = torch.randint(5, 20, src.shape, generator=g)
        return torch.where(torch.rand(src.shape, generator=g) < 0.5, src, noise)

    independent = _trained_nmt(tmp_path, "independent", noisy_copy)
    high = run(*copies, tmp_path, p_grid=[0.2, 0.5])
    low = run(*independent, tmp_path, p_grid=[0.2, 0.5])
    assert (high.D > 0.8).all(), high[["p", "D", "loss_context", "loss_no_target"]]
    assert (low.D.abs() < 0.1).all(), low[["p", "D", "loss_context", "loss_no_target"]]
    assert (high.D_ci_low <= high.D).all() and (high.D_ci_high >= high.D).all()
    assert (high.loss_context < high.loss_no_target).all()


def test_corpus_dependency_is_a_ratio_of_summed_losses_not_a_mean_of_ratios():
    """One sentence whose masked token the source alone predicts almost for free (L_none
    0.001) would push a mean of per-sentence ratios to -99; summed, every token weighs the
    same and D stays the fraction of the loss that the visible target removes."""
    context = torch.tensor([1.0, 2.0, 0.1])
    no_target = torch.tensor([2.0, 4.0, 0.001])
    per_sentence = loss_dependency(context, no_target, torch.tensor([1, 2, 1]))
    assert per_sentence.mean() < -30
    assert corpus_dependency(context, no_target) == pytest.approx(1 - 3.1 / 6.001)
    low, high = dependency_ci(context, no_target, n_boot=200, seed=0)
    assert low <= corpus_dependency(context, no_target) <= high
    with pytest.raises(ValueError, match=">= 0"):
        corpus_dependency(torch.tensor([-1.0]), torch.tensor([1.0]))
    assert math.isnan(corpus_dependency(torch.zeros(2), torch.zeros(2)))
