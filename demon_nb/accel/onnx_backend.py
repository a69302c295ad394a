"""ONNX export (dynamic batch) and an ONNX Runtime runner, cached on disk."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch


def default_cache_dir() -> Path:
    return Path(os.environ.get("DEMON_NB_CACHE", Path.home() / ".cache" / "demon_nb"))


def module_key(module: torch.nn.Module, example_inputs: Sequence[torch.Tensor], *extra: str) -> str:
    """sha256 over weights, input shapes past the batch axis, dtypes and versions."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    for x in example_inputs:
        h.update(f"{tuple(x.shape[1:])}{x.dtype}".encode())
    h.update(f"{type(module).__qualname__}{torch.__version__}{''.join(extra)}".encode())
    return h.hexdigest()[:24]


def export_onnx(module: torch.nn.Module, example_inputs: Sequence[torch.Tensor], *, max_batch: int = 16,
                cache_dir=None) -> Path:
    """Export once per key; the batch axis of every input and of the output is dynamic."""
    cache = Path(cache_dir or default_cache_dir()) / "onnx"
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{module_key(module, example_inputs)}.onnx"
    if path.exists():
        return path
    names = [f"input_{i}" for i in range(len(example_inputs))]
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    tmp = path.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(module, tuple(example_inputs), str(tmp), input_names=names, output_names=["output"],
                          dynamic_shapes=tuple({0: batch} for _ in example_inputs), dynamo=True,
                          external_data=False, verbose=False)
    tmp.replace(path)
    return path


def onnx_runner(path: Path, threads: int | None = None) -> Callable[..., torch.Tensor]:
    """ONNX Runtime session (CPU, or CUDA when its provider is present) as a tensor function."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    # no busy-waiting between ops: the tick thread shares two cores with the kernel and the browser
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    session = ort.InferenceSession(str(path), options, providers=providers)
    names = [i.name for i in session.get_inputs()]

    def run(*inputs: torch.Tensor) -> torch.Tensor:
        feed = {n: np.ascontiguousarray(x.detach().to("cpu").numpy()) for n, x in zip(names, inputs)}
        out = session.run(None, feed)[0]
        return torch.from_numpy(out).to(inputs[0].device)

    run.session = session  # for inspection
    return run
