# comma-study: Ren et al. (ACL 2020), "A Study of Non-autoregressive Model for Sequence
# Generation", as one cached DAG. Default config: the embedded mini preset (config.yaml);
# the paper's setup: --configfile config/paper.yaml.
from pathlib import Path


configfile: Path(workflow.basedir) / "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"


if config["data"]["source"] == "mini":

    include: "rules/data.smk"

else:

    include: "rules/download.smk"


include: "rules/prepare.smk"
include: "rules/teacher.smk"
include: "rules/distill.smk"
include: "rules/align.smk"
include: "rules/nar.smk"
include: "rules/comma.smk"
include: "rules/report_inputs.smk"
include: "rules/report.smk"
include: "rules/calibration.smk"
include: "rules/kd_vs_teacher.smk"


rule all:
    default_target: True
    input:
        "results/data_summary.md",
        "results/data_lengths.png",
        "results/fig2.pdf",
        "results/fig3.pdf",
        "results/fig4.pdf",
        "results/dependency.pdf",
        "results/ratio_summary.md",
        "results/length_control.md",
        "results/table2.md",
        "results/table3.md",
        "results/table4.md",
        "results/findings.md",
        "results/training_curves.png",
        "results/ratio_convergence.png",
        "results/runtimes.md",
        INTELLIGIBILITY,
