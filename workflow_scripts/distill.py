"""rule distill: one shard of the KD corpus, the teacher's outputs for a block of its training
split (comma.stages.distill.distill_shard)."""

from _workflow import rule_log
from comma.stages.distill import distill_shard

params = snakemake.params
with rule_log(snakemake):
    distill_shard(
        snakemake.input.model,
        snakemake.input.train,
        snakemake.output.shard,
        shard=int(params.shard),
        shards=int(params.shards),
        decoding=dict(params.decoding),
        seed=int(params.seed),
    )
