"""Parity with the official model and sampler (fixtures from ../shared)."""
