"""rules download_*: fetch one dataset archive, checked against its sha256 or a lock file."""

from _workflow import rule_log
from comma.data.download import download

with rule_log(snakemake):
    download(
        snakemake.params.url,
        snakemake.output[0],
        sha256=snakemake.params.sha256,
        lock_path=snakemake.params.lock,
        members=snakemake.params.get("members", ()),
    )
