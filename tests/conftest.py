import pytest
import torch

# Two cores: one torch thread keeps the suite from oversubscribing them.
torch.set_num_threads(1)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)
