# Human-facing summaries under results/: figures 2-4, Tables 2-4, the findings, the length-matched
# control, training curves and runtimes, every one a report item (snakemake --report
# results/report.html). Their input functions: rules/report_inputs.smk.


rule summarize_data:
    input:
        stats=expand(prepared("{task}", "stats.json"), task=TASKS),
        splits=expand(prepared("{task}", "{split}.pt"), task=TASKS, split=SPLITS),
    output:
        table="results/data_summary.md",
        plot=report(
            "results/data_lengths.png",
            caption="../report/data_lengths.rst",
            category="Data",
        ),
    log:
        "logs/report/summarize_data.log",
    benchmark:
        "logs/benchmarks/summarize_data.tsv"
    conda:
        "../envs/comma.yaml"
    params:
        tasks=TASKS,
        preset=config["preset"],
    script:
        "../workflow_scripts/summarize_data.py"


# Each figure reads only the runs it shows: Figure 2 the raw runs, Figures 3 and 4 raw and
# their variant, so that `snakemake results/fig2.pdf` trains no teacher and a change to the
# kd runs redraws Figure 3 alone.
rule figure2:
    input:
        comma_files("ratio.csv", ["raw"]),
    output:
        pdf=report(
            "results/fig2.pdf",
            caption="../report/fig2.rst",
            category="Figures",
        ),
        png="results/fig2.png",
    log:
        "logs/report/figure2.log",
    benchmark:
        "logs/benchmarks/figure2.tsv"
    conda:
        "../envs/comma.yaml"
    params:
        tasks=TASKS,
    script:
        "../workflow_scripts/figure2.py"


rule figure_dependency:
    input:
        comma_files("ratio.csv", ["raw"]),
    output:
        pdf=report(
            "results/dependency.pdf",
            caption="../report/dependency.rst",
            category="Figures",
        ),
        png="results/dependency.png",
    log:
        "logs/report/figure_dependency.log",
    benchmark:
        "logs/benchmarks/figure_dependency.tsv"
    conda:
        "../envs/comma.yaml"
    params:
        tasks=TASKS,
    script:
        "../workflow_scripts/figure_dependency.py"


# Figure 3 pairs kd with rawkept, the raw targets of the same sentences (the KD corpus leaves
# out those whose teacher output hit the length limit or never stopped).
rule figure3:
    input:
        comma_files("ratio.csv", ["rawkept", "kd"]),
    output:
        pdf=report(
            "results/fig3.pdf",
            caption="../report/fig3.rst",
            category="Figures",
        ),
        png="results/fig3.png",
    log:
        "logs/report/figure3.log",
    benchmark:
        "logs/benchmarks/figure3.tsv"
    conda:
        "../envs/comma.yaml"
    params:
        variant="kd",
        baseline="rawkept",
        # The paper's Figure 3 has NMT and TTS; ASR is measured here too.
        tasks=[task for task in ("nmt", "tts", "asr") if task in TASKS],
        notes={"asr": "beyond the paper"},
        title=(
            "Figure 3: R(p) of CoMMA trained on raw vs knowledge-distilled (KD) targets "
            "of the same sentences"
        ),
    script:
        "../workflow_scripts/figure_variant.py"


rule figure4:
    input:
        comma_files("ratio.csv", ["raw", "ac"]),
    output:
        pdf=report(
            "results/fig4.pdf",
            caption="../report/fig4.rst",
            category="Figures",
        ),
        png="results/fig4.png",
    log:
        "logs/report/figure4.log",
    benchmark:
        "logs/benchmarks/figure4.tsv"
    conda:
        "../envs/comma.yaml"
    params:
        variant="ac",
        baseline="raw",
        tasks=[task for task in TASK_NAMES if task in TASKS],
        notes={},
        title=(
            "Figure 4: R(p) of CoMMA trained without vs with the alignment constraint "
            f"(AC: {AC_MODE_TEXT[COMMA_AC_MODE]})"
        ),
    script:
        "../workflow_scripts/figure_variant.py"


rule length_control:
    input:
        comma_files("ratio_sentences.csv", ["raw"]),
    output:
        bins=report(
            "results/length_control.csv",
            caption="../report/length_control.rst",
            category="R(p) tables",
            subcategory="Length control",
        ),
        slopes="results/length_control_slopes.csv",
        table=report(
            "results/length_control.md",
            caption="../report/length_control.rst",
            category="R(p) tables",
            subcategory="Length control",
        ),
        plot=report(
            "results/length_control.png",
            caption="../report/length_control.rst",
            category="R(p) tables",
            subcategory="Length control",
        ),
    log:
        "logs/report/length_control.log",
    benchmark:
        "logs/benchmarks/length_control.tsv"
    conda:
        "../envs/comma.yaml"
    params:
        **LENGTH_CONTROL,
    script:
        "../workflow_scripts/length_control.py"


rule findings:
    input:
        ratio="results/ratio.csv",
        length_bins="results/length_control.csv",
        length_slopes="results/length_control_slopes.csv",
        tables=expand("results/table{k}.csv", k=(2, 3, 4)),
        distill=expand("results/distill/{task}.json", task=TASKS),
    output:
        report(
            "results/findings.md",
            caption="../report/findings.rst",
            category="Findings",
        ),
    log:
        "logs/report/findings.log",
    benchmark:
        "logs/benchmarks/findings.tsv"
    conda:
        "../envs/comma.yaml"
    params:
        min_seeds=config["findings"]["min_seeds"],
        min_dependency=config["findings"]["min_dependency"],
        ac_mode=COMMA_AC_MODE,
    script:
        "../workflow_scripts/findings.py"


rule training_curves:
    input:
        lambda wildcards: [run["path"] for run in training_curve_runs(wildcards)],
    output:
        report(
            "results/training_curves.png",
            caption="../report/training_curves.rst",
            category="Training",
        ),
    log:
        "logs/report/training_curves.log",
    benchmark:
        "logs/benchmarks/training_curves.tsv"
    conda:
        "../envs/comma.yaml"
    params:
        runs=training_curve_runs,
    script:
        "../workflow_scripts/training_curves.py"


rule ratio_convergence:
    input:
        comma_files("metrics.jsonl", list(COMMA_VARIANTS)),
    output:
        plot=report(
            "results/ratio_convergence.png",
            caption="../report/ratio_convergence.rst",
            category="Training",
        ),
        table="results/ratio_convergence.md",
    log:
        "logs/report/ratio_convergence.log",
    benchmark:
        "logs/benchmarks/ratio_convergence.tsv"
    conda:
        "../envs/comma.yaml"
    params:
        runs=[
            (
                task,
                variant,
                seed,
                comma_files("metrics.jsonl", [variant], [task], [seed])[0],
            )
            for task in TASKS
            for variant in COMMA_VARIANTS
            for seed in SEEDS
        ],
    script:
        "../workflow_scripts/ratio_convergence.py"


# After the study's final products, which every expensive job precedes: it reruns when they do
# and reads every job's record from logs/benchmarks/.
rule runtimes:
    input:
        after=[
            "results/findings.md",
            "results/fig2.pdf",
            "results/fig3.pdf",
            "results/fig4.pdf",
            "results/data_summary.md",
            "results/training_curves.png",
        ],
    output:
        table=report(
            "results/runtimes.csv",
            caption="../report/runtimes.rst",
            category="Training",
            subcategory="Runtimes",
        ),
        summary="results/runtimes.md",
        plot=report(
            "results/runtimes.png",
            caption="../report/runtimes.rst",
            category="Training",
            subcategory="Runtimes",
        ),
    log:
        "logs/report/runtimes.log",
    benchmark:
        "logs/benchmarks/runtimes.tsv"
    conda:
        "../envs/comma.yaml"
    params:
        directory="logs/benchmarks",
        exclude=["logs/benchmarks/runtimes.tsv"],  # this rule's own, from a previous run
    script:
        "../workflow_scripts/runtimes.py"


rule tables:
    input:
        teachers=expand("results/teacher/{task}/metrics.json", task=TASKS),
        nar=[
            path
            for per_task in nar_metrics_files().values()
            for per_seed in per_task.values()
            for path in per_seed.values()
        ],
    output:
        **{
            f"{table}_{kind}": (
                report(
                    f"results/{table}.csv",
                    caption=f"../report/{table}.rst",
                    category="Tables",
                )
                if kind == "csv"
                else f"results/{table}.{kind}"
            )
            for table in ("table2", "table3", "table4")
            for kind in ("csv", "md")
        },
    log:
        "logs/report/tables.log",
    benchmark:
        "logs/benchmarks/tables.tsv"
    conda:
        "../envs/comma.yaml"
    params:
        teachers={task: f"results/teacher/{task}/metrics.json" for task in TASKS},
        nar=nar_metrics_files(),
        preset=config["preset"],
    script:
        "../workflow_scripts/tables.py"
