# Preparation: Moses tokenization + joint BPE (NMT), transcripts + BPE and log-mel (ASR),
# g2p phonemes and log-mel (TTS). Log-mel features are their own cached step per corpus, so
# changing BPE or the phoneme split never recomputes them.
#
# Every raw corpus folder gets a manifest (its files' names, sizes, sha256; comma.data.manifest),
# which the rules that read the folder take as input. Snakemake dates a directory() output by
# its own timestamp file, so a file edited in place used to go unnoticed ("Nothing to be done").
# The manifest is not written by the rule that makes the folder: rerunning that rule would
# generate or extract the corpus again over the edit. Its own rule has a parameter that is a
# cheap digest of the files' names, sizes and modification times (a stat each, taken whenever
# Snakemake builds the DAG); an edit changes it, Snakemake reruns a job whose parameters
# changed, and the rewritten manifest reruns what reads the corpus. Each reading job also
# checks the folder against the manifest before it starts (_workflow.rule_log), which names a
# changed file the digest could not see (an edit that kept size and time, or made while the
# workflow ran) and says to rerun with --forcerun corpus_manifest.


rule corpus_manifest:
    input:
        "{folder}",
    output:
        "{folder}.manifest.json",
    log:
        "logs/prepare/corpus_manifest/{folder}.log",
    benchmark:
        "logs/benchmarks/corpus_manifest/{folder}.tsv"
    wildcard_constraints:
        folder=RAW_CORPUS_WILDCARD,
    priority: PREPARATION_PRIORITY
    conda:
        "../envs/comma.yaml"
    params:
        state=lambda wildcards: folder_state(wildcards.folder),
    script:
        "../workflow_scripts/corpus_manifest.py"


rule logmel:
    input:
        mel_corpus_dir,
        manifest=mel_corpus_manifest,
    output:
        "work/features/{corpus}/{part}.pt",
    log:
        "logs/prepare/logmel_{corpus}_{part}.log",
    benchmark:
        "logs/benchmarks/logmel/{corpus}_{part}.tsv"
    wildcard_constraints:
        corpus="ljspeech|libritts",
    priority: PREPARATION_PRIORITY
    conda:
        "../envs/comma.yaml"
    # One thread: a 2-thread job waits for both cores to be free at once, and on two cores a
    # 1-thread training job always holds one (a measured fig2 run lost 16 minutes so). The
    # mini corpora's four parts take 26 CPU-s in all; profiles/slurm gives it 8 on a cluster.
    threads: 1
    params:
        features=feature_params(),
    script:
        "../workflow_scripts/logmel.py"


rule prepare_nmt:
    input:
        "resources/iwslt14/de-en",
        manifest=corpus_manifest("resources/iwslt14/de-en"),
    output:
        **prepared_splits("nmt"),
        dict_src=prepared("nmt", "dict.src.txt"),
        dict_tgt=prepared("nmt", "dict.tgt.txt"),
        bpe_codes=prepared("nmt", "bpe.codes"),
        test_ref=prepared("nmt", "test.ref.txt"),
        stats=prepared("nmt", "stats.json"),
    log:
        "logs/prepare/prepare_nmt.log",
    benchmark:
        "logs/benchmarks/prepare_nmt.tsv"
    priority: PREPARATION_PRIORITY
    conda:
        "../envs/comma.yaml"
    params:
        **config["prepare"]["nmt"],
    script:
        "../workflow_scripts/prepare_nmt.py"


rule prepare_asr:
    input:
        **{
            f"mels_{split}": f"work/features/libritts/{LIBRITTS_SUBSETS[split]}.pt"
            for split in SPLITS
        },
        corpora=[libritts_dir(subset) for subset in LIBRITTS_SUBSETS.values()],
        manifests=[
            corpus_manifest(libritts_dir(subset))
            for subset in LIBRITTS_SUBSETS.values()
        ],
    output:
        **prepared_splits("asr"),
        dict_tgt=prepared("asr", "dict.tgt.txt"),
        bpe_codes=prepared("asr", "bpe.codes"),
        test_ref=prepared("asr", "test.ref.txt"),
        stats=prepared("asr", "stats.json"),
    log:
        "logs/prepare/prepare_asr.log",
    benchmark:
        "logs/benchmarks/prepare_asr.tsv"
    priority: PREPARATION_PRIORITY
    conda:
        "../envs/comma.yaml"
    params:
        **config["prepare"]["asr"],
        root=lambda wildcards, input: str(Path(input.corpora[0]).parent),
        subsets=LIBRITTS_SUBSETS,
    script:
        "../workflow_scripts/prepare_asr.py"


rule prepare_tts:
    input:
        corpus="resources/LJSpeech-1.1",
        manifest=corpus_manifest("resources/LJSpeech-1.1"),
        mels="work/features/ljspeech/all.pt",
    output:
        **prepared_splits("tts"),
        dict_src=prepared("tts", "dict.src.txt"),
        stats=prepared("tts", "stats.json"),
    log:
        "logs/prepare/prepare_tts.log",
    benchmark:
        "logs/benchmarks/prepare_tts.tsv"
    priority: PREPARATION_PRIORITY
    conda:
        "../envs/comma.yaml"
    params:
        **config["prepare"]["tts"]["split"],
        min_seconds=config["prepare"]["tts"]["min_seconds"],
        max_seconds=config["prepare"]["tts"]["max_seconds"],
        max_chars_per_second=config["prepare"]["tts"]["max_chars_per_second"],
        seed=config["seed"],
    script:
        "../workflow_scripts/prepare_tts.py"
