"""Acceleration backends behind one interface, chosen per component.

A *component* is a ``torch.nn.Module`` whose forward takes tensors with a
leading batch axis and returns one tensor (the denoiser network, a codec's
decode or encode). :func:`accelerate` returns a callable with the same inputs:

- ``eager``: the module itself;
- ``compile``: ``torch.compile`` (Inductor), batch axis dynamic;
- ``onnx``: exported once (``torch.onnx.export``, dynamic batch), run by ONNX Runtime,
  cached on disk by a key of the weights, shapes and versions;
- ``tensorrt``: an engine built from the same ONNX export (dynamic batch profile,
  fp16/bf16, cached by weights, shapes, TensorRT version and GPU name); needs
  ``tensorrt`` and CUDA, which these CPU machines do not have.
"""

from __future__ import annotations

import importlib.util
from typing import Callable, Sequence

import torch

BACKENDS = ("eager", "compile", "onnx", "tensorrt")


def availability(backend: str) -> tuple[bool, str]:
    """(usable here?, reason if not)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {list(BACKENDS)}, got {backend!r}")
    if backend == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        return False, "onnxruntime is not installed"
    if backend == "tensorrt":
        if importlib.util.find_spec("tensorrt") is None:
            return False, "tensorrt is not installed (its libraries live outside PyPI)"
        if not torch.cuda.is_available():
            return False, "TensorRT needs a CUDA GPU"
    return True, ""


def accelerate(module: torch.nn.Module, example_inputs: Sequence[torch.Tensor], backend: str = "eager", *,
               max_batch: int = 16, cache_dir=None, precision: str = "fp16",
               threads: int | None = None) -> Callable[..., torch.Tensor]:
    """A callable running ``module`` on the chosen backend (same positional tensor inputs);
    ``threads``: ONNX Runtime's intra-op threads (default: torch's thread count)."""
    usable, reason = availability(backend)
    if not usable:
        raise ValueError(f"backend: {backend!r} is not available here: {reason}")
    module = module.eval()
    if backend == "eager":
        return module
    if backend == "compile":
        return torch.compile(module, dynamic=True)
    from .onnx_backend import export_onnx, onnx_runner

    path = export_onnx(module, example_inputs, max_batch=max_batch, cache_dir=cache_dir)
    if backend == "onnx":
        return onnx_runner(path, threads)
    from .tensorrt_backend import tensorrt_runner

    return tensorrt_runner(path, example_inputs, max_batch=max_batch, precision=precision, cache_dir=cache_dir)
