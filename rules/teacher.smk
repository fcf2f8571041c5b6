# AR teachers (paper Table 1): Transformer NMT, Transformer ASR and Transformer TTS, one per
# task; their test-set accuracy (Table 2's AR rows: BLEU/WER, and for TTS mel distances in
# place of MOS, with Griffin-Lim samples). The trainer's resumable checkpoint,
# work/teacher/{task}/resume.pt, is not an output: it survives a killed job, which resumes.


rule train_teacher:
    input:
        train=prepared("{task}", "train.pt"),
        vocab=vocab_files,
    output:
        model=teacher_file("model.pt"),
        metrics=teacher_file("metrics.jsonl"),
    log:
        "logs/teacher/train_teacher/{task}.log",
    benchmark:
        "logs/benchmarks/train_teacher/{task}.tsv"
    conda:
        "../envs/comma.yaml"
    threads: 1
    resources:
        mem_mb=teacher_mem_mb,
        runtime=teacher_runtime,
    params:
        architecture=family_architecture("teacher"),
        training=family_training("teacher"),
        seed=config["seed"],
    script:
        "../workflow_scripts/train_teacher.py"


rule evaluate_teacher:
    input:
        model=teacher_file("model.pt"),
        test=prepared("{task}", "test.pt"),
        train=prepared("{task}", "train.pt"),
        references=prepared("{task}", "test.ref.txt"),
        vocab=vocab_files,
    output:
        metrics=report(
            "results/teacher/{task}/metrics.json",
            caption="../report/teacher_metrics.rst",
            category="AR teachers",
            subcategory="{task}",
        ),
        hypotheses=teacher_file("test.hyp.txt"),
    log:
        "logs/teacher/evaluate_teacher/{task}.log",
    benchmark:
        "logs/benchmarks/evaluate_teacher/{task}.tsv"
    wildcard_constraints:
        task="nmt|asr",
    conda:
        "../envs/comma.yaml"
    threads: 1
    params:
        task=lambda wildcards: wildcards.task,
        decoding=lambda wildcards: config["decoding"][wildcards.task],
        seed=config["seed"],
    script:
        "../workflow_scripts/evaluate_teacher.py"


rule evaluate_teacher_tts:
    input:
        model=teacher_file("model.pt", "tts"),
        test=prepared("tts", "test.pt"),
        train=prepared("tts", "train.pt"),
        stats=prepared("tts", "stats.json"),
    output:
        metrics=report(
            "results/teacher/tts/metrics.json",
            caption="../report/teacher_metrics.rst",
            category="AR teachers",
            subcategory="tts",
        ),
        hypotheses=teacher_file("test.hyp.pt", "tts"),
        samples=report(
            directory("results/teacher/tts/samples"),
            patterns=["{utterance}.{kind}.wav"],
            caption="../report/teacher_samples.rst",
            category="AR teachers",
            subcategory="tts",
        ),
    log:
        "logs/teacher/evaluate_teacher/tts.log",
    benchmark:
        "logs/benchmarks/evaluate_teacher/tts.tsv"
    conda:
        "../envs/comma.yaml"
    threads: 1
    params:
        task="tts",
        decoding=config["decoding"]["tts"],
        evaluation=config["evaluation"]["tts"],
        features=feature_params(),
        seed=config["seed"],
    script:
        "../workflow_scripts/evaluate_teacher.py"


# The ASR teacher transcribes the TTS teacher's test utterances (Griffin-Lim audio) and their
# recordings: the WER of synthesized speech, the usual objective intelligibility check; with
# both tasks in the study.
INTELLIGIBILITY = (
    ["results/teacher/tts/intelligibility.json"] if {"asr", "tts"} <= set(TASKS) else []
)


rule tts_intelligibility:
    input:
        generated=teacher_file("test.hyp.pt", "tts"),
        test=prepared("tts", "test.pt"),
        tts_stats=prepared("tts", "stats.json"),
        ljspeech="resources/LJSpeech-1.1",
        ljspeech_manifest=corpus_manifest("resources/LJSpeech-1.1"),
        asr_model=teacher_file("model.pt", "asr"),
        asr_stats=prepared("asr", "stats.json"),
        asr_vocab=prepared("asr", "dict.tgt.txt"),
    output:
        metrics=report(
            "results/teacher/tts/intelligibility.json",
            caption="../report/teacher_metrics.rst",
            category="AR teachers",
            subcategory="tts",
        ),
    log:
        "logs/teacher/tts_intelligibility.log",
    benchmark:
        "logs/benchmarks/tts_intelligibility.tsv"
    conda:
        "../envs/comma.yaml"
    threads: 1
    params:
        features=feature_params(),
        decoding=config["decoding"]["asr"],
        griffin_lim_iters=config["evaluation"]["tts"]["griffin_lim_iters"],
        seed=config["seed"],
    script:
        "../workflow_scripts/tts_intelligibility.py"


rule teachers:
    input:
        expand("results/teacher/{task}/metrics.json", task=TASKS),
        INTELLIGIBILITY,
