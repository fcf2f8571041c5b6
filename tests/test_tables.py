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


def _fixture(tmp_path, tasks=("nmt", "asr", "tts")):
    teachers = {
        "nmt": _metrics(tmp_path, "t_nmt", bleu=40.0, wer=30.0),
        "asr": _metrics(tmp_path, "t_asr", bleu=50.0, wer=20.0),
        "tts": _metrics(tmp_path, "t_tts", mcd=3.5, mel_l1_dtw=0.9),
    }
    nar = {}
    for task, variants in nar_variants_of_tables(tasks).items():
        nar[task] = {}
        for k, variant in enumerate(variants):
            values = (
                dict(mcd=4.0 + k, mel_l1_dtw=1.0 + k)
                if task == "tts"
                else dict(bleu=30.0 - k, wer=40.0 + k)
            )
            nar[task][variant] = _metrics(tmp_path, f"{task}_{variant}", **values)
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
    assert list(table2.model) == [
        "Transformer",
        "NAT",
        "Transformer ASR",
        "NAR-ASR",
        "Transformer TTS",
        "FastSpeech",
    ]
    assert table2.set_index("model").loc["NAT", "bleu"] == 30.0  # nmt kd_ac, the first variant
    assert table2.set_index("model").loc["FastSpeech", "mcd"] == 4.0
    assert pd.isna(table2.set_index("model").loc["FastSpeech", "bleu"])
    table4 = tables["table4"].set_index("model")
    assert (
        table4.loc["NAR-ASR w/o AC", "wer"] == 41.0
        and table4.loc["NAR-ASR w/o AC", "kind"] == "NAR"
    )
    assert table4.loc["FastSpeech w/o AC", "constraint"] == "noac"
    md = (tmp_path / "out" / "table3.md").read_text()
    assert "| NMT (BLEU / WER) | NAT w/o KD | raw | yes | 29.00 / 41.00 |" in md
    assert "MOS" in md
    assert sum(len(rows) for rows in TABLE_ROWS["table4"].values()) == len(table4)


def test_tables_keep_only_the_configured_tasks_and_name_a_missing_file(tmp_path):
    teachers, nar = _fixture(tmp_path, tasks=("tts",))
    tables = write_tables(teachers, nar, tmp_path / "out")
    assert set(tables["table2"].task) == {"tts"}
    nar["tts"]["kd_ac"] = tmp_path / "missing.json"
    with pytest.raises(Exception, match="missing.json"):
        write_tables(teachers, nar, tmp_path / "out2")
