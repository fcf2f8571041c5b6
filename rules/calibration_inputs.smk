# Settings, paths and input functions of the calibration's rules (rules/calibration.smk).
from comma.analysis.calibration_plan import DRAW_WILDCARD, calibration_draws

CALIBRATION = config.get("experiments", {}).get("calibration") or {}
# Checked while the workflow is parsed: a bad prior or twin stops every run, naming its key.
CALIBRATION_DRAWS = {
    draw.name: draw for draw in calibration_draws(CALIBRATION, config["seed"])
}


def calibration_file(name, draw="{draw}"):
    """A file of one draw of the calibration: work/calibration/<draw>/<name>."""
    return f"work/calibration/{draw}/{name}"


def calibration_prepared(name, draw="{draw}"):
    """A draw's prepared corpus, laid out as work/data/nmt/: work/calibration/<draw>/data/nmt/."""
    return calibration_file(f"data/nmt/{name}", draw)


def calibration_run(name, draw="{draw}", seed="{seed}"):
    """A file of one raw CoMMA of a draw: work/calibration/<draw>/comma/{task}/seed<seed>/."""
    return calibration_file(f"comma/{{task}}/seed{seed}/{name}", draw)


def calibration_train_inputs(wildcards):
    """As comma_inputs for a raw_noac run: the training split, the vocabularies, and the
    validation split for the R(p) probe at every checkpoint."""
    inputs = {
        "train": calibration_prepared("train.pt", wildcards.draw),
        "vocab": [
            calibration_prepared(name, wildcards.draw)
            for name in TASKS_BY_NAME[wildcards.task].vocabularies
        ],
    }
    if comma_probe() is not None:
        inputs["valid"] = calibration_prepared("valid.pt", wildcards.draw)
    return inputs


def calibration_inputs(wildcards):
    """Every draw's report and every run's R(p) table, in the order of the draws; only from
    a generator (data.source mini)."""
    if config["data"]["source"] != "mini":
        raise ValueError(
            "the target calibration needs the mini NMT generator (comma.mini.nmt), which "
            f"draws corpora at known register priors; this preset has data.source "
            f"{config['data']['source']!r} (real IWSLT14, no generator, no known dependency): "
            "run it on the mini preset (config.yaml)"
        )
    return {
        "reports": [calibration_file("register.json", d) for d in CALIBRATION_DRAWS],
        "ratios": [
            calibration_run("ratio.csv", d, seed).format(task="nmt")
            for d in CALIBRATION_DRAWS
            for seed in SEEDS
        ],
    }
