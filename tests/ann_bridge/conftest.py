"""Shared fixtures for ann_bridge tests: tiny seeded models and small images."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("captum")

from torch import nn  # noqa: E402


@pytest.fixture(autouse=True)
def _two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


class TinyCNN(nn.Module):
    """conv(1->4) relu(inplace) pool conv(4->6) relu gap linear(6->3)."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 3)
        self.classes = ("happy", "fearful", "neutral")

    def forward(self, x):
        x = self.pool(self.relu1(self.conv1(x)))
        x = self.relu2(self.conv2(x))
        return self.fc(self.gap(x).flatten(1))


@pytest.fixture
def tiny_cnn():
    return TinyCNN(seed=0).eval()


@pytest.fixture
def images():
    return np.random.default_rng(0).random((3, 16, 16)).astype(np.float32)
