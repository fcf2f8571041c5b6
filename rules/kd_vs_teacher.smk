# Knowledge distillation against teacher quality (issue #27): KD corpora from the NMT teacher
# at several points of its training, each with kd and rawkept CoMMA and a NAT.
#
# The earlier teachers are the study's NMT teacher trained afresh, same seed and settings, to
# fewer steps (experiments.kd_vs_teacher.teacher_steps); the last point is the study's own
# teacher and reuses its KD corpus, CoMMA and NAT runs. Why not snapshots of the study's
# teacher: those would change rule train_teacher (its outputs, so the main DAG) for an
# experiment outside `all`. The difference is none by construction: the learning rate
# (inverse square root with warm-up, comma.engine.schedule) and the data order (epochs planned
# from the seed) do not depend on max_steps, so a teacher trained for N steps is the study's
# teacher as it was after N updates (tests/test_kd_vs_teacher.py checks it on a small model:
# the same losses, and continued, the same weights), at the cost of training it again.
#
# Each rule below is the study's own rule (`use rule`: its script, params and resources) on a
# point's files, work/kd_vs_teacher/step{steps}/ and results/kd_vs_teacher/step{steps}/, which
# mirror the study's (at_point). The target `kd_vs_teacher` is not part of `all`.
include: "kd_vs_teacher_inputs.smk"


use rule train_teacher as kd_vs_teacher_train_teacher with:
    output:
        model=at_point(teacher_file("model.pt")),
        metrics=at_point(teacher_file("metrics.jsonl")),
    log:
        "logs/kd_vs_teacher/train_teacher/step{steps}/{task}.log",
    benchmark:
        "logs/benchmarks/kd_vs_teacher_train_teacher/step{steps}/{task}.tsv"
    wildcard_constraints:
        task=kd_plan.TASK,
        steps=r"\d+",
    params:
        training=point_teacher_training,


use rule evaluate_teacher as kd_vs_teacher_evaluate_teacher with:
    input:
        model=at_point(teacher_file("model.pt")),
        test=prepared("{task}", "test.pt"),
        train=prepared("{task}", "train.pt"),
        references=prepared("{task}", "test.ref.txt"),
        vocab=vocab_files,
    output:
        metrics=at_point("results/teacher/{task}/metrics.json"),
        hypotheses=at_point(teacher_file("test.hyp.txt")),
    log:
        "logs/kd_vs_teacher/evaluate_teacher/step{steps}/{task}.log",
    benchmark:
        "logs/benchmarks/kd_vs_teacher_evaluate_teacher/step{steps}/{task}.tsv"
    wildcard_constraints:
        task=kd_plan.TASK,
        steps=r"\d+",


use rule distill as kd_vs_teacher_distill with:
    input:
        model=at_point(teacher_file("model.pt")),
        train=prepared("{task}", "train.pt"),
    output:
        shard=at_point(distill_file("shard{shard}.pt")),
    log:
        "logs/kd_vs_teacher/distill/step{steps}/{task}/shard{shard}.log",
    benchmark:
        "logs/benchmarks/kd_vs_teacher_distill/step{steps}/{task}/shard{shard}.tsv"
    wildcard_constraints:
        task=kd_plan.TASK,
        steps=r"\d+",
        shard=r"\d+",


use rule merge_distilled as kd_vs_teacher_merge_distilled with:
    input:
        shards=expand(
            at_point(distill_file("shard{shard}.pt")),
            shard=DISTILL_SHARDS,
            allow_missing=True,
        ),
        raw=prepared("{task}", "train.pt"),
    output:
        train=at_point(corpus_train("{task}", "kd")),
        raw_kept=at_point(corpus_train("{task}", "rawkept")),
        report=at_point("results/distill/{task}.json"),
    log:
        "logs/kd_vs_teacher/merge_distilled/step{steps}/{task}.log",
    benchmark:
        "logs/benchmarks/kd_vs_teacher_merge_distilled/step{steps}/{task}.tsv"
    wildcard_constraints:
        task=kd_plan.TASK,
        steps=r"\d+",


use rule train_comma as kd_vs_teacher_train_comma with:
    input:
        unpack(point_comma_inputs),
        vocab=vocab_files,
    output:
        model=at_point(comma_run("model.pt")),
        metrics=at_point(comma_run("metrics.jsonl")),
    log:
        "logs/kd_vs_teacher/train_comma/step{steps}/{task}_{corpus}_{constraint}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/kd_vs_teacher_train_comma/step{steps}/{task}_{corpus}_{constraint}_seed{seed}.tsv"
    wildcard_constraints:
        task=kd_plan.TASK,
        steps=r"\d+",
        corpus="kd|rawkept",
        constraint="noac",


use rule measure_ratio as kd_vs_teacher_measure_ratio with:
    input:
        model=at_point(comma_run("model.pt")),
        test=prepared("{task}", "test.pt"),
    output:
        ratio=at_point(comma_run("ratio.csv")),
        heads=at_point(comma_run("ratio_heads.csv")),
        sentences=at_point(comma_run("ratio_sentences.csv")),
    log:
        "logs/kd_vs_teacher/measure_ratio/step{steps}/{task}_{corpus}_{constraint}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/kd_vs_teacher_measure_ratio/step{steps}/{task}_{corpus}_{constraint}_seed{seed}.tsv"
    wildcard_constraints:
        task=kd_plan.TASK,
        steps=r"\d+",
        corpus="kd|rawkept",
        constraint="noac",


# NAT on the KD corpus without the alignment constraint (Table 4's "NAT w/o AC", which the
# final point reuses): with AC it would also learn each teacher's attention, and the NAT BLEU
# would then mix the quality of the teacher's targets with that of its alignments.
use rule train_nar as kd_vs_teacher_train_nar with:
    input:
        unpack(point_nar_inputs),
        vocab=vocab_files,
    output:
        model=at_point(nar_run("model.pt")),
        metrics=at_point(nar_run("metrics.jsonl")),
    log:
        "logs/kd_vs_teacher/train_nar/step{steps}/{task}_{corpus}_{constraint}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/kd_vs_teacher_train_nar/step{steps}/{task}_{corpus}_{constraint}_seed{seed}.tsv"
    wildcard_constraints:
        task=kd_plan.TASK,
        steps=r"\d+",
        corpus="kd",
        constraint="noac",
        seed=r"\d+",


use rule evaluate_nar as kd_vs_teacher_evaluate_nar with:
    input:
        model=at_point(nar_run("model.pt")),
        test=prepared("{task}", "test.pt"),
        references=prepared("{task}", "test.ref.txt"),
        vocab=vocab_files,
    output:
        metrics=at_point(nar_result("metrics.json")),
        hypotheses=at_point(nar_run("test.hyp.txt")),
    log:
        "logs/kd_vs_teacher/evaluate_nar/step{steps}/{task}_{corpus}_{constraint}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/kd_vs_teacher_evaluate_nar/step{steps}/{task}_{corpus}_{constraint}_seed{seed}.tsv"
    wildcard_constraints:
        task=kd_plan.TASK,
        steps=r"\d+",
        corpus="kd",
        constraint="noac",
        seed=r"\d+",


# The figure and table: R, T and D of kd against its rawkept twin, and NAT BLEU, per teacher
# point, judged with the findings' rule (comma.analysis.kd_vs_teacher).
rule kd_vs_teacher:
    input:
        kd_vs_teacher_inputs,
    output:
        figure="results/kd_vs_teacher.png",
        table="results/kd_vs_teacher.md",
    log:
        "logs/kd_vs_teacher/report.log",
    benchmark:
        "logs/benchmarks/kd_vs_teacher.tsv"
    conda:
        "../envs/comma.yaml"
    params:
        plan=kd_vs_teacher_files,
        min_seeds=config["findings"]["min_seeds"],
        min_dependency=config["findings"]["min_dependency"],
    script:
        "../workflow_scripts/kd_vs_teacher.py"
