"""Benchmarks: one module per ``python -m demon_nb bench NAME``; each prints one JSON object."""
