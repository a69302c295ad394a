"""Benchmarks: one module per ``python -m demon_nb bench NAME``; each prints one JSON object."""

from __future__ import annotations

import argparse


def bench_parser(name: str, model: str | None = None, **kwargs) -> argparse.ArgumentParser:
    """The parser every benchmark starts from: ``--json`` (the output is always one JSON
    object; the flag is accepted for the documented command lines) and, given a default,
    ``--model``."""
    parser = argparse.ArgumentParser(prog=f"python -m demon_nb bench {name}", **kwargs)
    parser.add_argument("--json", action="store_true", help="print one JSON object (always on)")
    if model is not None:
        parser.add_argument("--model", default=model)
    return parser
