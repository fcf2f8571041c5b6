# Knowledge distillation (paper section 4.1, eq. 4): the AR teacher decodes its training set.
# NMT and ASR: beam search, TTS: greedy mel generation, with decoding.{task} of the config, in
# distill.shards jobs per task (contiguous blocks of the training split; GPU jobs on a cluster).
# Outputs that hit the maximum length or never stop are left out of the KD corpus and counted.
# The KD corpus, work/data/{task}/kd/train.pt, has the raw training split's exact format;
# work/data/{task}/rawkept/train.pt holds the raw pairs of the same sentences (for a paired
# raw-vs-KD comparison).


rule distill:
    input:
        model=teacher_file("model.pt"),
        train=prepared("{task}", "train.pt"),
    output:
        shard=distill_file("shard{shard}.pt"),
    log:
        "logs/distill/distill/{task}/shard{shard}.log",
    benchmark:
        "logs/benchmarks/distill/{task}/shard{shard}.tsv"
    wildcard_constraints:
        shard=r"\d+",
    conda:
        "../envs/comma.yaml"
    threads: 1
    params:
        shard=lambda wildcards: int(wildcards.shard),
        shards=len(DISTILL_SHARDS),
        decoding=lambda wildcards: config["decoding"][wildcards.task],
        seed=config["seed"],
    script:
        "../workflow_scripts/distill.py"


rule merge_distilled:
    input:
        shards=expand(
            distill_file("shard{shard}.pt"), shard=DISTILL_SHARDS, allow_missing=True
        ),
        raw=prepared("{task}", "train.pt"),
    output:
        train=corpus_train("{task}", "kd"),
        raw_kept=corpus_train("{task}", "rawkept"),
        report=report(
            "results/distill/{task}.json",
            caption="../report/distill.rst",
            category="Knowledge distillation",
            subcategory="{task}",
        ),
    log:
        "logs/distill/merge_distilled/{task}.log",
    benchmark:
        "logs/benchmarks/merge_distilled/{task}.tsv"
    conda:
        "../envs/comma.yaml"
    threads: 1
    script:
        "../workflow_scripts/merge_distilled.py"
