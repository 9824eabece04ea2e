"""Benchmarks run as commands (``physai bench ...``), never as timed tests."""
