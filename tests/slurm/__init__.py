"""A real single-node Slurm for tests/test_slurm.py (see cluster.py)."""
