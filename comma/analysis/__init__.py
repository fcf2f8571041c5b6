"""What the study concludes from its artifacts: aggregation over seeds, verdicts and findings,
the length control, Tables 2-4, figures, training curves and runtimes. Reads result files."""
