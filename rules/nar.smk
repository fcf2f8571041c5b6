# NAR models (paper Tables 2-4): NAT, NAR-ASR and FastSpeech, each variant of the tables
# ({corpus}_{constraint}: raw or KD corpus, with or without the alignment constraint) trained
# once per seed of `seeds` (initialization, data order and dropout), evaluated with the
# teachers' metrics, and laid out as the tables (mean and spread over seeds).


rule train_nar:
    input:
        unpack(nar_inputs),
        vocab=vocab_files,
    output:
        model=nar_run("model.pt"),
        metrics=nar_run("metrics.jsonl"),
    log:
        "logs/nar/train_nar/{task}_{corpus}_{constraint}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/train_nar/{task}_{corpus}_{constraint}_seed{seed}.tsv"
    wildcard_constraints:
        corpus="raw|kd",
        constraint="ac|noac",
        seed=r"\d+",
    conda:
        "../envs/comma.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        architecture=family_architecture("nar"),
        training=family_training("nar"),
        seed=lambda wildcards: int(wildcards.seed),
    script:
        "../workflow_scripts/train_nar.py"


rule evaluate_nar:
    input:
        model=nar_run("model.pt"),
        test=prepared("{task}", "test.pt"),
        references=prepared("{task}", "test.ref.txt"),
        vocab=vocab_files,
    output:
        metrics=report(
            nar_result("metrics.json"),
            caption="../report/nar_metrics.rst",
            category="NAR models",
            subcategory="{task}",
        ),
        hypotheses=nar_run("test.hyp.txt"),
    log:
        "logs/nar/evaluate_nar/{task}_{corpus}_{constraint}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/evaluate_nar/{task}_{corpus}_{constraint}_seed{seed}.tsv"
    wildcard_constraints:
        task="nmt|asr",
        corpus="raw|kd",
        constraint="ac|noac",
        seed=r"\d+",
    conda:
        "../envs/comma.yaml"
    threads: 1
    params:
        batch_sentences=lambda wildcards: config["decoding"][wildcards.task][
            "batch_sentences"
        ],
        decoding=nar_decoding,
        seed=lambda wildcards: int(wildcards.seed),
    script:
        "../workflow_scripts/evaluate_nar.py"


rule evaluate_nar_tts:
    input:
        model=nar_run("model.pt"),
        test=prepared("{task}", "test.pt"),
        stats=prepared("{task}", "stats.json"),
    output:
        metrics=report(
            nar_result("metrics.json"),
            caption="../report/nar_metrics.rst",
            category="NAR models",
            subcategory="{task}",
        ),
        hypotheses=nar_run("test.hyp.pt"),
        samples=report(
            directory(nar_result("samples")),
            patterns=["{utterance}.{kind}.wav"],
            caption="../report/nar_samples.rst",
            category="NAR models",
            subcategory="{task}",
        ),
    log:
        "logs/nar/evaluate_nar/{task}_{corpus}_{constraint}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/evaluate_nar/{task}_{corpus}_{constraint}_seed{seed}.tsv"
    wildcard_constraints:
        task="tts",
        corpus="raw|kd",
        constraint="ac|noac",
        seed=r"\d+",
    conda:
        "../envs/comma.yaml"
    threads: 1
    params:
        batch_sentences=config["decoding"]["tts"]["batch_sentences"],
        evaluation=config["evaluation"]["tts"],
        features=feature_params(),
        seed=lambda wildcards: int(wildcards.seed),
    script:
        "../workflow_scripts/evaluate_nar.py"
