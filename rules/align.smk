# Alignment extraction (paper section 5.1): the teachers' teacher-forced attention.
# Per training corpus (raw or kd) of each task: the teacher's attention map (NMT, ASR; the AC
# targets of NAT and CoMMA), expected positions (ASR windows) and durations (FastSpeech).


rule extract_alignment:
    input:
        teacher=teacher_file("model.pt"),
        train=lambda wildcards: corpus_train(wildcards.task, wildcards.corpus),
    output:
        alignment=alignment_file("alignment.pt"),
        summary=alignment_file("summary.json"),
    log:
        "logs/align/extract_alignment/{task}_{corpus}.log",
    benchmark:
        "logs/benchmarks/extract_alignment/{task}_{corpus}.tsv"
    wildcard_constraints:
        corpus="raw|kd",
    conda:
        "../envs/comma.yaml"
    threads: 1
    params:
        attention=lambda wildcards: config["align"][wildcards.task]["attention"],
        min_focus_rate=lambda wildcards: config["align"][wildcards.task].get(
            "min_focus_rate", 0.0
        ),
        batch_sentences=config["align"]["batch_sentences"],
        seed=config["seed"],
    script:
        "../workflow_scripts/extract_alignment.py"
