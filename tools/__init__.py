"""Harnesses that run the product but do not ship in its wheel: the sandbox and the benchmarks."""
