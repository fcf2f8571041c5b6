"""rules extract_*: unpack one dataset archive's top-level folder, safely and atomically."""

from _workflow import rule_log
from comma.data.download import extract

with rule_log(snakemake):
    extract(snakemake.input[0], snakemake.output[0], snakemake.params.top_level)
