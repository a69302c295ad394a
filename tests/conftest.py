import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded_torch():
    """Every test starts from seed 0 and leaves torch's thread count as it found it
    (``demon_nb.instrument()`` sets it for the kernel it plays in)."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
