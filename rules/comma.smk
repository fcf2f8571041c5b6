# CoMMA (paper section 2): train one per task, {corpus}_{constraint} (raw_noac; kd_noac: on the
# KD corpus, section 4.2; raw_ac: with the eq. 7-8 attention constraint, section 5.2) and seed;
# measure R(p) on the test set; summarize over seeds.


rule train_comma:
    input:
        unpack(comma_inputs),
        vocab=vocab_files,
    output:
        model=comma_run("model.pt"),
        metrics=comma_run("metrics.jsonl"),
    log:
        "logs/comma/train_comma/{task}_{corpus}_{constraint}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/train_comma/{task}_{corpus}_{constraint}_seed{seed}.tsv"
    priority: comma_priority
    conda:
        "../envs/comma.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        architecture=family_architecture("comma"),
        training=family_training("comma"),
        constraint=comma_constraint,
        probe=comma_probe(),
    script:
        "../workflow_scripts/train_comma.py"


rule measure_ratio:
    input:
        model=comma_run("model.pt"),
        test=prepared("{task}", "test.pt"),
    output:
        ratio=comma_run("ratio.csv"),
        heads=comma_run("ratio_heads.csv"),
        sentences=comma_run("ratio_sentences.csv"),
    log:
        "logs/comma/measure_ratio/{task}_{corpus}_{constraint}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/measure_ratio/{task}_{corpus}_{constraint}_seed{seed}.tsv"
    conda:
        "../envs/comma.yaml"
    threads: 1
    params:
        **{
            k: v
            for k, v in config["ratio"].items()
            if k not in ("length_control", "probe_sentences")
        },
        variant=comma_variant,
    script:
        "../workflow_scripts/measure_ratio.py"


rule aggregate_ratio:
    input:
        comma_files("ratio.csv", COMMA_VARIANTS),
    output:
        runs="results/ratio.csv",
        summary="results/ratio_summary.csv",
        table=report(
            "results/ratio_summary.md",
            caption="../report/ratio_summary.rst",
            category="R(p) tables",
        ),
    log:
        "logs/comma/aggregate_ratio.log",
    benchmark:
        "logs/benchmarks/aggregate_ratio.tsv"
    conda:
        "../envs/comma.yaml"
    script:
        "../workflow_scripts/aggregate_ratio.py"
