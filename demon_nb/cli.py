"""``python -m demon_nb {lab,app,render,bench,train-mini,train-lora}``.

Benchmarks live one per module in ``demon_nb/bench/<name>.py``; each exposes
``main(argv) -> int`` and prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys


def _bench_names() -> list[str]:
    from . import bench

    return sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_"))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "bench": "run a benchmark: bench NAME [--json] ...",
        "lab": "open JupyterLab on notebooks/01_play.ipynb (loopback, token)",
        "app": "serve the instrument alone as a page with Voila (loopback, token)",
        "render": "render a piece offline to a WAV file",
        "train-mini": "train the built-in model",
        "train-lora": "train a style LoRA for the built-in model",
    }
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        parser = argparse.ArgumentParser(prog="python -m demon_nb")
        parser.add_argument("command", choices=sorted(commands), help="; ".join(f"{k}: {v}" for k, v in commands.items()))
        parser.parse_args(argv[:1])
        return 2
    command, rest = argv[0], argv[1:]
    if command == "bench":
        names = _bench_names()
        if not rest or rest[0] not in names:
            print(f"usage: python -m demon_nb bench NAME [--json]; NAME is one of: {', '.join(names)}", file=sys.stderr)
            return 2
        module = importlib.import_module(f"demon_nb.bench.{rest[0]}")
        return int(module.main(rest[1:]) or 0)
    module_name = {"lab": "demon_nb.lab", "app": "demon_nb.app", "render": "demon_nb.render", "train-mini": "demon_nb.models.mini.train",
                   "train-lora": "demon_nb.models.mini.train_lora"}[command]
    return int(importlib.import_module(module_name).main(rest) or 0)
