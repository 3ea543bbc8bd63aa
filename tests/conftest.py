import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch

from bmvit.data.synthetic import SynthSpec, generate

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SMALL = SynthSpec(train_videos=12, val_videos=4, seconds=4, width=96, height=72, seed=3)


@pytest.fixture(scope="session")
def small_synth(tmp_path_factory):
    """A small synthetic dataset in the AVA layout, shared by the tests of one session."""
    return generate(tmp_path_factory.mktemp("synth"), SMALL, workers=1)


@pytest.fixture
def no_proxy(monkeypatch):
    """HTTP clients reach the tests' servers on 127.0.0.1 directly, whatever proxy the machine sets."""
    for k in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
