"""Benchmarks: library functions that measure and return numbers; `ctslice bench ...` prints them."""
