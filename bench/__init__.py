"""Benchmarks: each figure is printed next to a baseline measured in the same run, because
this machine is shared and noisy and only ratios carry over between runs."""
