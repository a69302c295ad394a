import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded_torch():
    torch.manual_seed(0)
    yield
