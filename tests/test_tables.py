"""comma.analysis.tables: the paper's Tables 2-4 laid out from metrics files."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from comma.analysis.tables import TABLE_ROWS, nar_variants_of_tables, write_tables


def _metrics(tmp_path, name, **values):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(values))
    return path


def _fixture(tmp_path, tasks=("nmt", "asr", "tts"), seeds=(1, 2, 3)):
    teachers = {
        "nmt": _metrics(tmp_path, "t_nmt", bleu=40.0, wer=30.0),
        "asr": _metrics(tmp_path, "t_asr", bleu=50.0, wer=20.0),
        "tts": _metrics(tmp_path, "t_tts", mcd=3.5, mel_l1_dtw=0.9),
    }
    nar = {}
    for task, variants in nar_variants_of_tables(tasks).items():
        nar[task] = {}
        for k, variant in enumerate(variants):
            nar[task][variant] = {}
            for seed in seeds:  # seed s adds (s - 2) to every metric: mean as seed 2, std 1
                shift = seed - 2
                values = (
                    dict(mcd=4.0 + k + shift, mel_l1_dtw=1.0 + k + shift)
                    if task == "tts"
                    else dict(bleu=30.0 - k + shift, wer=40.0 + k + shift)
                )
                nar[task][variant][seed] = _metrics(tmp_path, f"{task}_{variant}_{seed}", **values)
    return {t: teachers[t] for t in tasks}, nar


def test_variants_are_the_paper_rows():
    variants = nar_variants_of_tables(["nmt", "asr", "tts"])
    assert variants == {
        "nmt": ["kd_ac", "raw_ac", "kd_noac"],
        "asr": ["raw_ac", "raw_noac"],
        "tts": ["kd_ac", "raw_ac", "kd_noac"],
    }
    assert nar_variants_of_tables(["asr"]) == {"asr": ["raw_ac", "raw_noac"]}


def test_tables_take_every_number_from_the_metrics_files(tmp_path):
    teachers, nar = _fixture(tmp_path)
    tables = write_tables(teachers, nar, tmp_path / "out", preset="mini")
    table2 = pd.read_csv(tmp_path / "out" / "table2.csv")
    # one row per model and seed; the teacher once, without a seed
    assert list(table2.model) == [
        "Transformer",
        *["NAT"] * 3,
        "Transformer ASR",
        *["NAR-ASR"] * 3,
        "Transformer TTS",
        *["FastSpeech"] * 3,
    ]
    assert pd.isna(table2.seed.iloc[0]) and list(table2.seed.iloc[1:4]) == [1, 2, 3]
    nat = table2[table2.model == "NAT"].set_index("seed")
    assert nat.loc[2, "bleu"] == 30.0 and nat.loc[3, "bleu"] == 31.0  # nmt kd_ac, seeds shift
    fastspeech = table2[table2.model == "FastSpeech"].set_index("seed")
    assert fastspeech.loc[1, "mcd"] == 3.0 and pd.isna(fastspeech.loc[1, "bleu"])
    table4 = tables["table4"]
    asr_noac = table4[table4.model == "NAR-ASR w/o AC"].set_index("seed")
    assert asr_noac.loc[2, "wer"] == 41.0 and (asr_noac.kind == "NAR").all()
    assert (table4[table4.model == "FastSpeech w/o AC"].constraint == "noac").all()
    md = (tmp_path / "out" / "table3.md").read_text()
    # mean ± sample std over seeds 1-3: 29 - 1, 29, 29 + 1 -> 29.00 ± 1.00
    assert "| NMT (BLEU / WER) | NAT w/o KD | raw | yes | 3 | 29.00 ± 1.00 / 41.00 ± 1.00 |" in md
    assert "| NMT (BLEU / WER) | Transformer | raw |  |  | 40.00 / 30.00 |" in md
    assert "MOS" in md
    assert len(table4) == sum(
        1 if variant is None else 3 for rows in TABLE_ROWS["table4"].values() for _, variant in rows
    )


def test_a_single_seed_is_shown_without_a_spread(tmp_path):
    teachers, nar = _fixture(tmp_path, tasks=("asr",), seeds=(2,))
    write_tables(teachers, nar, tmp_path / "out")
    md = (tmp_path / "out" / "table4.md").read_text()
    assert "| ASR (BLEU / WER) | NAR-ASR w/o AC | raw | no | 1 | 29.00 / 41.00 |" in md


def test_tables_keep_only_the_configured_tasks_and_name_a_missing_file(tmp_path):
    teachers, nar = _fixture(tmp_path, tasks=("tts",))
    tables = write_tables(teachers, nar, tmp_path / "out")
    assert set(tables["table2"].task) == {"tts"}
    nar["tts"]["kd_ac"][2] = tmp_path / "missing.json"
    with pytest.raises(Exception, match="missing.json"):
        write_tables(teachers, nar, tmp_path / "out2")
