# Input functions and settings of the report rules (rules/report.smk), kept apart from the
# rules as `snakemake --lint` asks. Uses TASKS, SEEDS, COMMA_VARIANTS, NAR_VARIANTS, comma_run,
# nar_run and teacher_file of rules/common.smk.

# Analysis settings of the length-matched control (config ratio.length_control): bins of
# log2(M/N) of this width, compared only where two tasks each have this many test sentences.
LENGTH_CONTROL = config["ratio"]["length_control"]

# Which attention constraint made the ac runs, for figure titles and the findings.
COMMA_AC_MODE = config["models"]["comma"]["ac_mode"]
AC_MODE_TEXT = {
    "head": "each layer and head against the teacher's, soft maps",
    "broadcast": "one teacher map for every layer and head",
}


def nar_variant_wildcards(task, variant):
    """The wildcards of a NAR model's files: {corpus}_{constraint} (and the whole variant)."""
    corpus, constraint = variant.split("_")
    return dict(task=task, corpus=corpus, constraint=constraint, variant=variant)


def training_curve_runs(wildcards):
    """Every trained model's metrics.jsonl and its place in results/training_curves.png."""
    runs = [
        dict(
            family="teacher",
            task=task,
            label="teacher",
            path=teacher_file("metrics.jsonl", task),
        )
        for task in TASKS
    ]
    runs += [
        dict(
            family="comma",
            task=task,
            label=f"{variant} seed{seed}",
            group=variant,
            path=comma_files("metrics.jsonl", [variant], [task], [seed])[0],
        )
        for task in TASKS
        for variant in COMMA_VARIANTS
        for seed in SEEDS
    ]
    runs += [
        dict(
            family="nar",
            task=task,
            label=f"{variant} seed{seed}",
            group=variant,
            path=nar_run("metrics.jsonl").format(
                **nar_variant_wildcards(task, variant), seed=seed
            ),
        )
        for task in TASKS
        for variant in NAR_VARIANTS[task]
        for seed in SEEDS
    ]
    return runs
