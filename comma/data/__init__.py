"""Datasets: readers of the real formats, the embedded mini corpus, preparation, packing."""
