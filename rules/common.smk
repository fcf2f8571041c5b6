# Config validation and input functions shared by every rule file.
import re
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)  # comma, also when snakemake runs from another env
from comma.analysis.tables import nar_variants_of_tables
from comma.tasks import TASK_NAMES, TASKS as TASKS_BY_NAME, WILDCARD as TASK_WILDCARD
from comma.data.libritts import SAMPLE_RATE as LIBRITTS_RATE
from comma.data.ljspeech import SAMPLE_RATE as LJSPEECH_RATE
from comma.data.manifest import folder_state, manifest_of

from comma import workflow_config
from comma.workflow_config import check_config, prepare_config
from snakemake.common.configfile import load_configfile

SCHEMA = Path(workflow.basedir) / "config" / "schema.yaml"
# The config again from its layers, each over the ones before it: the Snakefile's config.yaml,
# every --configfile, --config. Snakemake merges the command line's layers first, so a per-task
# mapping over a preset's one value (training.comma.max_steps: {nmt: 10} over tiny.yaml's 30)
# lost the preset's value for the other tasks and fell back to config.yaml's.
_cli_files = workflow.config_settings.configfiles
_declared = workflow.configfiles[len(_cli_files) :]  # the Snakefile's `configfile:`
if workflow.config_settings.replace_workflow_config:
    _declared = []
_merged, _notes = workflow_config.merge_config_layers(
    [load_configfile(f) for f in [*_declared, *_cli_files]]
    + [dict(workflow.config_settings.config)]
)
config.clear()
config.update(_merged)
for _note in _notes:
    print(f"config: {_note}", file=sys.stderr)
# Types --config values (Snakemake hands seeds=[1,2] over as text), then checks the schema,
# naming each offending key (Snakemake's validate names none; the schema sets no defaults).
prepare_config(config, SCHEMA)
# What the schema cannot say: heads dividing d_model, min <= max, the mel range within the
# Nyquist frequency of the corpora whose log-mel the tasks read (their rates are the datasets').
MEL_CORPUS_RATES = {
    "asr": {"libritts": LIBRITTS_RATE},
    "tts": {"ljspeech": LJSPEECH_RATE},
}
check_config(
    config,
    sample_rates={
        corpus: rate
        for task in config.get("tasks") or []
        for corpus, rate in MEL_CORPUS_RATES.get(task, {}).items()
    },
)

TASKS = config["tasks"]
SPLITS = ["train", "valid", "test"]
LIBRITTS_SUBSETS = config["data"]["libritts"]["subsets"]  # split -> subset name

if config["data"]["source"] == "download":
    for _subset in LIBRITTS_SUBSETS.values():
        if _subset not in config["data"]["libritts"]["sha256"]:
            raise ValueError(
                f"config key data.libritts.sha256 has no checksum for the subset '{_subset}' "
                "named in data.libritts.subsets: add its published sha256"
            )


wildcard_constraints:
    task=TASK_WILDCARD,
    split="train|valid|test",
    corpus="raw|kd|rawkept",
    constraint="ac|noac",
    seed=r"\d+",
    subset="|".join(sorted(set(LIBRITTS_SUBSETS.values()))),


# Every prepared corpus lands in work/data/{task}/: one packed file per split beside the
# task's prepared_files (comma.tasks: vocabularies, BPE codes, references, stats.json).
def prepared(task, name):
    return f"work/data/{task}/{name}"


def prepared_splits(task):
    return {split: prepared(task, f"{split}.pt") for split in SPLITS}


def libritts_dir(subset):
    return f"resources/LibriTTS/{subset}"


# The raw corpus folders (generated, or downloaded and extracted); each has a manifest beside
# it (rule corpus_manifest), which the rules that read the folder take as input.
RAW_CORPORA = [
    "resources/iwslt14/de-en",
    "resources/LJSpeech-1.1",
    *(libritts_dir(subset) for subset in sorted(set(LIBRITTS_SUBSETS.values()))),
]
RAW_CORPUS_WILDCARD = "|".join(re.escape(folder) for folder in RAW_CORPORA)


def corpus_manifest(folder):
    """The manifest of a raw corpus folder: <folder>.manifest.json beside it."""
    return str(manifest_of(folder))


def libritts_sha256(wildcards):
    return config["data"]["libritts"]["sha256"][wildcards.subset]


def mel_corpus_dir(wildcards):
    """Raw corpus folder whose wavs become work/features/{corpus}/{part}.pt."""
    if wildcards.corpus == "ljspeech":
        return "resources/LJSpeech-1.1"
    return libritts_dir(wildcards.part)


def mel_corpus_manifest(wildcards):
    return corpus_manifest(mel_corpus_dir(wildcards))


def feature_params():
    return dict(config["features"])


SEEDS = config["seeds"]
# CoMMA and the NAR models name their training setup alike, {corpus}_{constraint}: the
# prepared corpus (raw) or the teacher's distillation of it (kd, rules/distill.smk), without
# (noac) or with (ac) the teacher's alignment constraint. CoMMA's runs of Figures 2-4 are raw,
# kd (section 4.2) and ac (section 5.2), the `variant` column of the R(p) tables.
CORPORA = ["raw", "kd", "rawkept"]
# rawkept: the raw targets of exactly the sentences the KD corpus keeps (the teacher's output
# of the others hit the length limit or never stopped), so that kd is compared paired.
COMMA_VARIANTS = {
    "raw": "raw_noac",
    "kd": "kd_noac",
    "ac": "raw_ac",
    "rawkept": "rawkept_noac",
}
DISTILL_SHARDS = list(range(config["distill"]["shards"]))


def corpus_train(task, corpus):
    """The training split of a corpus: raw (work/data/{task}/train.pt), kd (the teacher's
    outputs for the same sources, in the same format: work/data/{task}/kd/train.pt) or rawkept
    (the raw pairs of the sentences kd keeps: work/data/{task}/rawkept/train.pt)."""
    return prepared(task, "train.pt" if corpus == "raw" else f"{corpus}/train.pt")


def distill_file(name, task="{task}"):
    """A file of the distillation stage: work/distill/{task}/<name>."""
    return f"work/distill/{task}/{name}"


def alignment_file(name, task="{task}", corpus="{corpus}"):
    """Teacher alignments of a training corpus: work/align/{task}/{corpus}/<name>."""
    return f"work/align/{task}/{corpus}/{name}"


def comma_run(name):
    """A file of one CoMMA run: work/comma/{task}/{corpus}_{constraint}/seed{seed}/<name>."""
    return f"work/comma/{{task}}/{{corpus}}_{{constraint}}/seed{{seed}}/{name}"


def comma_files(name, variants, tasks=None, seeds=None):
    """The file `name` of every CoMMA run of `variants` (raw, kd, ac), task and seed."""
    return [
        comma_run(name).format(
            task=task, corpus=corpus, constraint=constraint, seed=seed
        )
        for task in (TASKS if tasks is None else tasks)
        for variant in variants
        for corpus, constraint in [COMMA_VARIANTS[variant].split("_")]
        for seed in (SEEDS if seeds is None else seeds)
    ]


def comma_variant(wildcards):
    """The R(p) tables' name of a CoMMA run (raw, kd, ac; another setup by its own name)."""
    setup = f"{wildcards.corpus}_{wildcards.constraint}"
    return {v: k for k, v in COMMA_VARIANTS.items()}.get(setup, setup)


def vocab_files(wildcards):
    return [
        prepared(wildcards.task, f) for f in TASKS_BY_NAME[wildcards.task].vocabularies
    ]


def family_architecture(family):
    """params: models.{family} (.{task}) as the family's model config takes it, without the
    keys that go to training (comma.workflow_config.family_settings)."""
    return lambda wildcards: workflow_config.family_settings(
        config, family, wildcards.task
    )[0]


def nar_decoding(wildcards):
    """params: the NAR model's decoding keywords (NAR-ASR's from evaluation.asr; none for NMT)."""
    return workflow_config.nar_decoding(config, wildcards.task)


def family_training(family):
    """params: training.{family} (.{task}) for this task with lr and batch size, without the
    job's resources (comma.workflow_config.family_settings)."""
    return lambda wildcards: workflow_config.family_settings(
        config, family, wildcards.task
    )[1]


# The corpora are downloaded or generated and prepared before any training starts: in a
# measured fig2 run the logmel of one LibriTTS subset (then 2 threads; now 1, rules/prepare.smk)
# waited 16 minutes for two CoMMA runs to free both cores together, and the three ASR runs then
# ran last, one of them alone.
PREPARATION_PRIORITY = 10
# CoMMA runs start longest first, so that no long run is left to run alone at the end of a
# study: a TTS step costs 156 ms, an ASR step 60 ms, an NMT step 29 ms at the mini preset
# (docs/measurements/comma_step_levers_2026-12-03.md), at 3,000-4,000 steps each.
COMMA_LONGEST_FIRST = ("tts", "asr", "nmt")


def comma_priority(wildcards):
    """The run's rank among the tasks' CoMMA runs by length: higher starts first."""
    order = COMMA_LONGEST_FIRST
    return len(order) - order.index(wildcards.task) if wildcards.task in order else 0


def comma_constraint(wildcards):
    """The attention constraint of an ac run (weight and mode); nothing for the others, so
    that changing it retrains only the ac runs."""
    if wildcards.constraint != "ac":
        return {}
    comma = config["models"]["comma"]
    return {"ac_weight": comma["ac_weight"], "ac_mode": comma["ac_mode"]}


def comma_inputs(wildcards):
    """A CoMMA run's training split (kd: the KD corpus, with its rawkept twin, whose sizes plan
    the kd run's batches) and, for ac, the teacher's alignment of that split."""
    inputs = {"train": corpus_train(wildcards.task, wildcards.corpus)}
    # kd: batches planned by the rawkept twin: same ids, same order
    if wildcards.corpus == "kd":
        inputs["batch_order"] = corpus_train(wildcards.task, "rawkept")
    if wildcards.constraint == "ac":
        inputs["alignment"] = alignment_file(
            "alignment.pt", wildcards.task, wildcards.corpus
        )
    if comma_probe() is not None:  # R(p) on validation sentences at every checkpoint
        inputs["valid"] = prepared(wildcards.task, "valid.pt")
    return inputs


def comma_probe():
    """R(p) on a validation slice at every CoMMA checkpoint (None: ratio.probe_sentences 0)."""
    ratio = config["ratio"]
    if not ratio["probe_sentences"]:
        return None
    return dict(
        sentences=ratio["probe_sentences"],
        p_grid=ratio["p_grid"],
        mask_seed=ratio["mask_seed"],
    )


# AR teachers (rules/teacher.smk): one per task, trained with the run's `seed`.
def teacher_file(name, task="{task}"):
    """A file of a task's AR teacher: work/teacher/{task}/<name>."""
    return f"work/teacher/{task}/{name}"


def teacher_runtime(wildcards):
    return config["training"]["teacher"][wildcards.task]["runtime_minutes"]


def teacher_mem_mb(wildcards):
    return config["training"]["teacher"][wildcards.task]["mem_mb"]


# NAR models (rules/nar.smk): the rows of the paper's Tables 2-4 per task (comma.analysis.tables), as
# {corpus}_{constraint}: trained on the raw or KD corpus, with or without the alignment
# constraint (AC: NAT's attention KL, NAR-ASR's attention window, FastSpeech's durations).
NAR_VARIANTS = nar_variants_of_tables(TASKS)


def nar_run(name):
    """A file of one NAR model: work/nar/{task}/{corpus}_{constraint}/seed{seed}/<name>."""
    return f"work/nar/{{task}}/{{corpus}}_{{constraint}}/seed{{seed}}/{name}"


def nar_result(name):
    """A result of one NAR model: results/nar/{task}/{corpus}_{constraint}/seed{seed}/<name>."""
    return f"results/nar/{{task}}/{{corpus}}_{{constraint}}/seed{{seed}}/{name}"


def nar_inputs(wildcards):
    """A NAR model's training split and, with the alignment constraint, the teacher's
    alignment of that split and its summary (TTS: utterances to leave out)."""
    inputs = {"train": corpus_train(wildcards.task, wildcards.corpus)}
    if wildcards.constraint == "ac":
        inputs["alignment"] = alignment_file(
            "alignment.pt", wildcards.task, wildcards.corpus
        )
        inputs["alignment_summary"] = alignment_file(
            "summary.json", wildcards.task, wildcards.corpus
        )
    return inputs


def nar_metrics_files(wildcards=None):
    """Every NAR model's test metrics, task -> variant -> seed -> path (what the tables
    read): each variant is trained once per seed of `seeds`, as CoMMA is."""
    return {
        task: {
            variant: {
                seed: f"results/nar/{task}/{variant}/seed{seed}/metrics.json"
                for seed in SEEDS
            }
            for variant in NAR_VARIANTS[task]
        }
        for task in TASKS
    }
