# The real datasets (paper preset, data.source: download): one download rule per archive,
# then one extraction rule per archive into the folders the preparation rules read.
# Checksums: LJSpeech and LibriTTS publish a sha256, checked by the download itself and again by
# Snakemake's ensure() (a mismatch fails the job and deletes the archive). fairseq's IWSLT14
# mirror publishes none: the first download's sha256 is recorded in the lock file
# data.iwslt14.lock (a path relative to the working directory, --directory) and every later
# download must match it; delete that file to accept a new upstream version.


localrules:
    download_iwslt14,
    download_ljspeech,
    download_libritts,


rule download_iwslt14:
    output:
        "resources/archives/de-en.tgz",
    log:
        "logs/download/download_iwslt14.log",
    benchmark:
        "logs/benchmarks/download_iwslt14.tsv"
    priority: PREPARATION_PRIORITY
    retries: 2
    conda:
        "../envs/comma.yaml"
    params:
        url=config["data"]["iwslt14"]["url"],
        sha256=None,
        lock=config["data"]["iwslt14"]["lock"],
        # every one checked before the first download's sha256 is pinned
        members=["de-en/train.tags.de-en.de", "de-en/train.tags.de-en.en"],
    script:
        "../workflow_scripts/download.py"


rule download_ljspeech:
    output:
        ensure(
            "resources/archives/LJSpeech-1.1.tar.bz2",
            sha256=config["data"]["ljspeech"]["sha256"],
        ),
    log:
        "logs/download/download_ljspeech.log",
    benchmark:
        "logs/benchmarks/download_ljspeech.tsv"
    priority: PREPARATION_PRIORITY
    retries: 2
    conda:
        "../envs/comma.yaml"
    params:
        url=config["data"]["ljspeech"]["url"],
        sha256=config["data"]["ljspeech"]["sha256"],
        lock=None,
    script:
        "../workflow_scripts/download.py"


rule download_libritts:
    output:
        ensure(
            "resources/archives/LibriTTS/{subset}.tar.gz",
            sha256=libritts_sha256,
        ),
    log:
        "logs/download/download_libritts_{subset}.log",
    benchmark:
        "logs/benchmarks/download_libritts/{subset}.tsv"
    priority: PREPARATION_PRIORITY
    retries: 2
    conda:
        "../envs/comma.yaml"
    params:
        url=lambda wildcards: config["data"]["libritts"]["url"].replace(
            "{subset}", wildcards.subset
        ),
        sha256=libritts_sha256,
        lock=None,
    script:
        "../workflow_scripts/download.py"


rule extract_iwslt14:
    input:
        "resources/archives/de-en.tgz",
    output:
        directory("resources/iwslt14/de-en"),
    log:
        "logs/download/extract_iwslt14.log",
    benchmark:
        "logs/benchmarks/extract_iwslt14.tsv"
    priority: PREPARATION_PRIORITY
    conda:
        "../envs/comma.yaml"
    params:
        top_level="de-en",
    script:
        "../workflow_scripts/extract_archive.py"


rule extract_ljspeech:
    input:
        "resources/archives/LJSpeech-1.1.tar.bz2",
    output:
        directory("resources/LJSpeech-1.1"),
    log:
        "logs/download/extract_ljspeech.log",
    benchmark:
        "logs/benchmarks/extract_ljspeech.tsv"
    priority: PREPARATION_PRIORITY
    conda:
        "../envs/comma.yaml"
    params:
        top_level="LJSpeech-1.1",
    script:
        "../workflow_scripts/extract_archive.py"


rule extract_libritts:
    input:
        "resources/archives/LibriTTS/{subset}.tar.gz",
    output:
        directory(libritts_dir("{subset}")),
    log:
        "logs/download/extract_libritts_{subset}.log",
    benchmark:
        "logs/benchmarks/extract_libritts/{subset}.tsv"
    priority: PREPARATION_PRIORITY
    conda:
        "../envs/comma.yaml"
    params:
        top_level=lambda wildcards: f"LibriTTS/{wildcards.subset}",
    script:
        "../workflow_scripts/extract_archive.py"
