# Calibration of R, T and D against a known dependency (issue #27): mini NMT corpora whose
# hidden register is drawn at several levels of entropy; raw CoMMA per level and seed.
# Each draw (level<i>: level i's prior from the study's seed; twin<i>: the same prior from the
# twin's corpus seed) lives in work/calibration/<draw>/: the corpus and the generator's report
# of its true dependency, the corpus prepared as the study's NMT corpus (data/nmt/), one raw
# CoMMA per seed (comma/nmt/seed<seed>/) measured on the draw's own test set. The rules call
# the study's own rules (`use rule`: prepare_nmt, train_comma, measure_ratio); the target
# `calibration` is not part of `all` (docs/experiments.md).
include: "calibration_inputs.smk"


rule calibration_corpus:
    output:
        corpus=directory(calibration_file("iwslt14/de-en")),
        report=calibration_file("register.json"),
    log:
        "logs/calibration/{draw}/corpus.log",
    benchmark:
        "logs/benchmarks/calibration/{draw}/corpus.tsv"
    wildcard_constraints:
        draw=DRAW_WILDCARD,
    conda:
        "../envs/comma.yaml"
    params:
        train=config["mini"]["nmt"]["train"],
        test=config["mini"]["nmt"]["test"],
        seed=lambda wildcards: CALIBRATION_DRAWS[wildcards.draw].corpus_seed,
        register_prior=lambda wildcards: list(CALIBRATION_DRAWS[wildcards.draw].prior),
        proposals=CALIBRATION.get("proposals"),
        proposal_seed=config["seed"],  # one estimate of the acceptance rates for every draw
    script:
        "../workflow_scripts/calibration_corpus.py"


# The study's preparation (rule prepare_nmt: its script and settings) on a draw's corpus.
use rule prepare_nmt as calibration_prepare with:
    input:
        calibration_file("iwslt14/de-en"),
    output:
        **{split: calibration_prepared(f"{split}.pt") for split in SPLITS},
        dict_src=calibration_prepared("dict.src.txt"),
        dict_tgt=calibration_prepared("dict.tgt.txt"),
        bpe_codes=calibration_prepared("bpe.codes"),
        test_ref=calibration_prepared("test.ref.txt"),
        stats=calibration_prepared("stats.json"),
    log:
        "logs/calibration/{draw}/prepare.log",
    benchmark:
        "logs/benchmarks/calibration/{draw}/prepare.tsv"
    wildcard_constraints:
        draw=DRAW_WILDCARD,


# A raw CoMMA (raw_noac) as rule train_comma trains the study's, with its settings.
use rule train_comma as calibration_train_comma with:
    input:
        unpack(calibration_train_inputs),
    output:
        model=calibration_run("model.pt"),
        metrics=calibration_run("metrics.jsonl"),
    log:
        "logs/calibration/{draw}/train_comma_{task}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/calibration/{draw}/train_comma_{task}_seed{seed}.tsv"
    wildcard_constraints:
        draw=DRAW_WILDCARD,
        task="nmt",
    params:
        constraint={},  # raw_noac: no attention constraint


# R, T and D on the draw's own test set, as rule measure_ratio; the variant column names the draw.
use rule measure_ratio as calibration_measure_ratio with:
    input:
        model=calibration_run("model.pt"),
        test=calibration_prepared("test.pt"),
    output:
        ratio=calibration_run("ratio.csv"),
        heads=calibration_run("ratio_heads.csv"),
        sentences=calibration_run("ratio_sentences.csv"),
    log:
        "logs/calibration/{draw}/measure_ratio_{task}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/calibration/{draw}/measure_ratio_{task}_seed{seed}.tsv"
    wildcard_constraints:
        draw=DRAW_WILDCARD,
        task="nmt",
    params:
        variant=lambda wildcards: wildcards.draw,


rule calibration:
    input:
        unpack(calibration_inputs),
    output:
        figure=report(
            "results/calibration.png",
            caption="../report/calibration.rst",
            category="Calibration",
        ),
        table="results/calibration.md",
    log:
        "logs/calibration/calibration.log",
    benchmark:
        "logs/benchmarks/calibration/calibration.tsv"
    conda:
        "../envs/comma.yaml"
    params:
        draws=list(CALIBRATION_DRAWS),
        min_seeds=config["findings"]["min_seeds"],
    script:
        "../workflow_scripts/calibration.py"
