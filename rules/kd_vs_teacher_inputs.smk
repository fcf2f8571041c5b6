# Paths and input functions of the experiment "KD against teacher quality" (rules/kd_vs_teacher.smk).
from comma.analysis import kd_vs_teacher_plan as kd_plan


# A teacher point's files mirror the study's under work/kd_vs_teacher/step{steps}/ and
# results/kd_vs_teacher/step{steps}/: at_point(teacher_file("model.pt")) is
# work/kd_vs_teacher/step{steps}/teacher/{task}/model.pt.
def at_point(path, steps="{steps}"):
    top, rest = path.split("/", 1)
    return f"{top}/kd_vs_teacher/step{steps}/{rest}"


def point_teacher_training(wildcards):
    """training.teacher.nmt with max_steps = the point's steps (everything else the study's)."""
    return {**family_training("teacher")(wildcards), "max_steps": int(wildcards.steps)}


def point_comma_inputs(wildcards):
    """comma_inputs of the study's run, with the training corpus (and a kd run's rawkept
    twin, whose sizes plan its batches) from the point's KD corpus."""
    return {
        role: (
            at_point(path, wildcards.steps)
            if role in ("train", "batch_order")
            else path
        )
        for role, path in comma_inputs(wildcards).items()
    }


def point_nar_inputs(wildcards):
    """nar_inputs of the study's run (kd_noac: the training corpus only), from the point's."""
    inputs = nar_inputs(wildcards)
    return {**inputs, "train": at_point(inputs["train"], wildcards.steps)}


def kd_vs_teacher_files(wildcards=None):
    """Every teacher point's files (the final point: the study's own) and the study's
    raw/rawkept twin runs (the noise floor, the instrument check). ValueError naming the
    key if experiments.kd_vs_teacher cannot plan a run; raised only with the target in the
    DAG."""
    task = kd_plan.TASK
    seeds = SEEDS

    def run_files(path_of, variant):
        corpus, constraint = COMMA_VARIANTS[variant].split("_")
        return {
            seed: path_of(
                comma_run("ratio.csv").format(
                    task=task, corpus=corpus, constraint=constraint, seed=seed
                )
            )
            for seed in seeds
        }

    points = []
    for point in kd_plan.teacher_points(config):
        where = (
            (lambda p: p) if point.final else (lambda p, s=point.steps: at_point(p, s))
        )
        points.append(
            {
                "steps": point.steps,
                "final": point.final,
                "teacher_model": where(teacher_file("model.pt", task)),
                "teacher_log": where(teacher_file("metrics.jsonl", task)),
                "teacher_metrics": where(f"results/teacher/{task}/metrics.json"),
                "distill": where(f"results/distill/{task}.json"),
                "ratio": {v: run_files(where, v) for v in ("kd", "rawkept")},
                "nat": {
                    seed: where(
                        nar_result("metrics.json").format(
                            task=task, corpus="kd", constraint="noac", seed=seed
                        )
                    )
                    for seed in kd_plan.nat_seeds(config)
                },
            }
        )
    twins = {v: run_files(lambda p: p, v) for v in ("raw", "rawkept")}
    return {"task": task, "points": points, "twins": twins}


def kd_vs_teacher_inputs(wildcards):
    """Every file of the plan that the report reads (comma.analysis.kd_vs_teacher_plan)."""
    return kd_plan.plan_files(kd_vs_teacher_files())
