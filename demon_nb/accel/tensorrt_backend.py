"""TensorRT engine from the ONNX export: dynamic batch profile, fp16/bf16, disk cache.

Written against the documented TensorRT 10 Python API (Builder, OnnxParser,
optimization profiles, ``execute_async_v3``). It cannot run on the CPU machines
here; its tests skip with the reason from ``demon_nb.accel.availability``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Sequence

import torch

from .onnx_backend import default_cache_dir


def engine_key(onnx_path: Path, shapes: Sequence[tuple], precision: str, max_batch: int) -> str:
    import tensorrt as trt

    h = hashlib.sha256(Path(onnx_path).read_bytes())
    h.update(f"{shapes}{precision}{max_batch}{trt.__version__}{torch.cuda.get_device_name()}".encode())
    return h.hexdigest()[:24]


def build_engine(onnx_path: Path, example_inputs: Sequence[torch.Tensor], *, max_batch: int, precision: str) -> bytes:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_flag({"fp16": trt.BuilderFlag.FP16, "bf16": trt.BuilderFlag.BF16}[precision])
    profile = builder.create_optimization_profile()
    for i, x in enumerate(example_inputs):
        rest = tuple(x.shape[1:])
        profile.set_shape(network.get_input(i).name, (1, *rest), (min(4, max_batch), *rest), (max_batch, *rest))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the engine")
    return bytes(serialized)


def tensorrt_runner(onnx_path: Path, example_inputs: Sequence[torch.Tensor], *, max_batch: int = 8,
                    precision: str = "fp16", cache_dir=None) -> Callable[..., torch.Tensor]:
    import tensorrt as trt

    if precision not in ("fp16", "bf16"):
        raise ValueError(f"precision: expected 'fp16' or 'bf16', got {precision!r}")
    shapes = [tuple(x.shape[1:]) for x in example_inputs]
    cache = Path(cache_dir or default_cache_dir()) / "tensorrt"
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{engine_key(onnx_path, shapes, precision, max_batch)}.engine"
    if not path.exists():
        path.write_bytes(build_engine(onnx_path, example_inputs, max_batch=max_batch, precision=precision))
    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(path.read_bytes())
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    output = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)

    def run(*tensors: torch.Tensor) -> torch.Tensor:
        stream = torch.cuda.current_stream()
        contiguous = [x.contiguous() for x in tensors]
        for name, x in zip(inputs, contiguous):
            context.set_input_shape(name, tuple(x.shape))
            context.set_tensor_address(name, x.data_ptr())
        out = torch.empty(tuple(context.get_tensor_shape(output)), device=tensors[0].device, dtype=tensors[0].dtype)
        context.set_tensor_address(output, out.data_ptr())
        context.execute_async_v3(stream.cuda_stream)
        return out

    return run
