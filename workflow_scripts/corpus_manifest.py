"""rule corpus_manifest: every file of a raw corpus folder with its size and sha256."""

from _workflow import rule_log
from comma.data.manifest import write_manifest

with rule_log(snakemake):
    write_manifest(snakemake.input[0], snakemake.output[0])
