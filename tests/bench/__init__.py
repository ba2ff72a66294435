"""The benchmarks' code paths and the long-running profiles (full-random, load)."""
