# The embedded mini corpora, generated offline and deterministically from the seed, in the
# real datasets' layouts (IWSLT14 De-En, LJSpeech-1.1, LibriTTS) so the same readers parse them.


rule generate_mini_iwslt14:
    output:
        directory("resources/iwslt14/de-en"),
    log:
        "logs/data/generate_mini_iwslt14.log",
    benchmark:
        "logs/benchmarks/generate_mini_iwslt14.tsv"
    priority: PREPARATION_PRIORITY
    conda:
        "../envs/comma.yaml"
    params:
        train=config["mini"]["nmt"]["train"],
        test=config["mini"]["nmt"]["test"],
        seed=config["seed"],
    script:
        "../workflow_scripts/generate_mini_iwslt14.py"


rule generate_mini_ljspeech:
    output:
        directory("resources/LJSpeech-1.1"),
    log:
        "logs/data/generate_mini_ljspeech.log",
    benchmark:
        "logs/benchmarks/generate_mini_ljspeech.tsv"
    priority: PREPARATION_PRIORITY
    conda:
        "../envs/comma.yaml"
    params:
        utterances=config["mini"]["ljspeech"]["utterances"],
        min_words=config["mini"]["ljspeech"]["min_words"],
        max_words=config["mini"]["ljspeech"]["max_words"],
        seed=config["seed"],
    script:
        "../workflow_scripts/generate_mini_ljspeech.py"


rule generate_mini_libritts:
    output:
        [directory(libritts_dir(subset)) for subset in LIBRITTS_SUBSETS.values()],
    log:
        "logs/data/generate_mini_libritts.log",
    benchmark:
        "logs/benchmarks/generate_mini_libritts.tsv"
    priority: PREPARATION_PRIORITY
    conda:
        "../envs/comma.yaml"
    params:
        root=lambda wildcards, output: str(Path(output[0]).parent),
        subsets={
            LIBRITTS_SUBSETS[split]: config["mini"]["libritts"]["utterances"][split]
            for split in SPLITS
        },
        speakers=config["mini"]["libritts"]["speakers"],
        chapters_per_speaker=config["mini"]["libritts"]["chapters_per_speaker"],
        min_words=config["mini"]["libritts"]["min_words"],
        max_words=config["mini"]["libritts"]["max_words"],
        seed=config["seed"],
    script:
        "../workflow_scripts/generate_mini_libritts.py"
