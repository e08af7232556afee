"""Benchmarks: one command each, every figure next to a baseline from the same run."""
