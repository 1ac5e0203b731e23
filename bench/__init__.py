"""Benchmarks: the job against a plain-Python loop doing the same work."""
