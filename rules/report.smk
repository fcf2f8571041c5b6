# Human-facing summaries under results/.


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
        "benchmarks/runs/summarize_data.tsv"
    conda:
        "../envs/comma.yaml"
    params:
        tasks=TASKS,
        preset=config["preset"],
    script:
        "../workflow_scripts/summarize_data.py"


rule figure2:
    input:
        "results/ratio.csv",
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
        "benchmarks/runs/figure2.tsv"
    conda:
        "../envs/comma.yaml"
    params:
        tasks=TASKS,
    script:
        "../workflow_scripts/figure2.py"


rule findings:
    input:
        "results/ratio.csv",
    output:
        report(
            "results/findings.md",
            caption="../report/findings.rst",
            category="Findings",
        ),
    log:
        "logs/report/findings.log",
    benchmark:
        "benchmarks/runs/findings.tsv"
    conda:
        "../envs/comma.yaml"
    script:
        "../workflow_scripts/findings.py"
