"""selectlab benchmarks (the benchmark issue fills this in)."""
