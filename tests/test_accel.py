"""Backends agree with eager execution (export parity)."""

import pytest
import torch
from diffusers import AceStepTransformer1DModel

from demon_nb.accel import BACKENDS, accelerate, availability
from demon_nb.accel.onnx_backend import module_key


class DiTCall(torch.nn.Module):
    """The denoiser component: tensors in, velocity out."""

    def __init__(self, dit):
        super().__init__()
        self.dit = dit

    def forward(self, x, t, encoder_hidden_states, context):
        return self.dit(x, t, t, encoder_hidden_states, context, return_dict=False)[0]


@pytest.fixture(scope="module")
def dit():
    torch.manual_seed(0)
    net = AceStepTransformer1DModel(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                    num_key_value_heads=2, head_dim=16, sliding_window=8, encoder_hidden_size=32)
    return DiTCall(net).eval()


def inputs(batch, frames=40):
    g = torch.Generator().manual_seed(batch)
    return (torch.randn(batch, frames, 64, generator=g), torch.rand(batch, generator=g),
            torch.randn(batch, 5, 32, generator=g), torch.randn(batch, frames, 128, generator=g))


def test_onnx_matches_eager_at_several_batch_sizes(dit, tmp_path):
    run = accelerate(dit, inputs(2), "onnx", cache_dir=tmp_path)
    for batch in (1, 3, 8):
        x = inputs(batch)
        with torch.no_grad():
            expected = dit(*x)
        assert (run(*x) - expected).abs().max().item() < 1e-4


def test_onnx_export_is_cached_by_key(dit, tmp_path):
    accelerate(dit, inputs(2), "onnx", cache_dir=tmp_path)
    files = list((tmp_path / "onnx").glob("*.onnx"))
    assert len(files) == 1 and files[0].stem == module_key(dit, inputs(2))
    torch.manual_seed(1)
    other = DiTCall(AceStepTransformer1DModel(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                              num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                              sliding_window=8, encoder_hidden_size=32))
    assert module_key(other, inputs(2)) != files[0].stem  # different weights, different key


def test_compile_matches_eager():
    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.Conv1d(8, 16, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv1d(16, 2, 3, padding=1))
    run = accelerate(conv, (torch.randn(2, 8, 50),), "compile")
    x = torch.randn(3, 8, 50)
    with torch.no_grad():
        assert torch.allclose(run(x), conv(x), atol=1e-5)


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="backend"):
        accelerate(torch.nn.Identity(), (torch.zeros(1),), "cuda-graphs")


@pytest.mark.skipif(not availability("tensorrt")[0], reason=availability("tensorrt")[1])
def test_tensorrt_matches_eager(dit, tmp_path):  # pragma: no cover - needs tensorrt + CUDA
    dit = dit.cuda()
    run = accelerate(dit, [x.cuda() for x in inputs(2)], "tensorrt", cache_dir=tmp_path, max_batch=8)
    for batch in (1, 4, 8):
        x = [t.cuda() for t in inputs(batch)]
        with torch.no_grad():
            expected = dit(*x)
        assert (run(*x).float() - expected).abs().max().item() < 5e-2


def test_backends_list():
    assert BACKENDS == ("eager", "compile", "onnx", "tensorrt")


def test_mini_default_backend_matches_eager():
    from demon_nb.models import load
    from demon_nb.models.mini import DEFAULT_BACKEND

    fast = load("mini")
    eager = load("mini", backend="eager", text_encoder=fast.text_encoder)
    assert fast.backends["denoiser"] == DEFAULT_BACKEND and eager.denoiser.backend == "eager"
    cond = fast.text_encoder.encode("calm piano ballad in A minor, 80 bpm")
    x = torch.randn(3, fast.frames, 64)
    t = torch.tensor([0.9, 0.5, 0.1])
    batch = fast.denoiser.collate([cond] * 3, [None] * 3)
    assert (fast.denoiser.velocity(x, t, batch) - eager.denoiser.velocity(x, t, batch)).abs().max() < 1e-4
