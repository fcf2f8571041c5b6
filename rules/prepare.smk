# Preparation: Moses tokenization + joint BPE (NMT), transcripts + BPE and log-mel (ASR),
# g2p phonemes and log-mel (TTS). Log-mel features are their own cached step per corpus, so
# changing BPE or the phoneme split never recomputes them.


rule logmel:
    input:
        mel_corpus_dir,
    output:
        "work/features/{corpus}/{part}.pt",
    log:
        "logs/prepare/logmel_{corpus}_{part}.log",
    benchmark:
        "logs/benchmarks/logmel/{corpus}_{part}.tsv"
    wildcard_constraints:
        corpus="ljspeech|libritts",
    conda:
        "../envs/comma.yaml"
    threads: 2
    params:
        features=feature_params(),
    script:
        "../workflow_scripts/logmel.py"


rule prepare_nmt:
    input:
        "resources/iwslt14/de-en",
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
        mels="work/features/ljspeech/all.pt",
    output:
        **prepared_splits("tts"),
        dict_src=prepared("tts", "dict.src.txt"),
        stats=prepared("tts", "stats.json"),
    log:
        "logs/prepare/prepare_tts.log",
    benchmark:
        "logs/benchmarks/prepare_tts.tsv"
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
