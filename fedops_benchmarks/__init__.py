"""Benchmarks and paper replications (run with ``fedops bench ...``)."""
