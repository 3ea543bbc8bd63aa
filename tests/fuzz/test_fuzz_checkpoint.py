"""Fuzz: checkpoints — bmvit safetensors (with the embedded config), torch pickles, garbage
(tests/fuzz/invariant.py). Readers: ``engine.checkpoint.load_weights``, ``models.checkpoints.files.read_weights``
/ ``read_checkpoint``, and ``bmvit convert`` on the same files.
"""

from __future__ import annotations

import io
import json

import torch
from hypothesis import strategies as st
from safetensors.torch import save as st_save

from bmvit.config import Config, to_dict
from bmvit.engine.checkpoint import load_weights
from bmvit.models.checkpoints.files import read_weights
from bmvit.models.checkpoints.mvit import read_checkpoint
from tests.fuzz.invariant import expect_ok_or_named_error, mutated_bytes, run_cli

STATE = {"conv_proj.weight": torch.arange(24, dtype=torch.float32).reshape(2, 3, 1, 2, 2),
         "conv_proj.bias": torch.ones(2), "blocks.0.norm1.weight": torch.ones(2), "head.1.weight": torch.zeros(3, 2)}
CONFIG_JSON = json.dumps(to_dict(Config()))
SAFETENSORS = st_save(STATE, metadata={"config": CONFIG_JSON, "step": "12"})


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


TORCH_FILES = [_torch_bytes(STATE), _torch_bytes({"model_state": STATE, "epoch": 3}),
               _torch_bytes({"state_dict": STATE, "cfg": {"a": [1, 2]}})]


def _check_state(sd) -> None:
    assert all(isinstance(k, str) for k in sd) and all(isinstance(v, torch.Tensor) for v in sd.values())


def test_fuzz_bmvit_checkpoint(fuzz, tmp_path):
    path = tmp_path / "model.safetensors"

    def check(data):
        path.write_bytes(data)
        got, _ = expect_ok_or_named_error(lambda: load_weights(path), [path])
        if got is not None:
            state, cfg, meta = got
            _check_state(state)
            assert isinstance(cfg, Config) and isinstance(meta, dict)

    fuzz.run(mutated_bytes(SAFETENSORS), check, "bmvit checkpoint (safetensors bytes)", 60)


def test_fuzz_embedded_config(fuzz, tmp_path):
    """The JSON config and metadata stored inside a checkpoint, damaged."""
    path = tmp_path / "model.safetensors"

    def check(args):
        config_text, step_text = args
        path.write_bytes(st_save(STATE, metadata={"config": config_text, "step": step_text}))
        got, _ = expect_ok_or_named_error(lambda: load_weights(path), [path])
        if got is not None:
            assert isinstance(got[1], Config)

    config = st.just(CONFIG_JSON) | mutated_bytes(CONFIG_JSON.encode()).map(lambda b: b.decode("utf-8", "replace"))
    step = st.sampled_from(["12", "", "nan", "{", "[1, 2]", "\"x\"", "1e999", "NaN"])
    fuzz.run(st.tuples(config, step), check, "bmvit checkpoint (embedded config)", 40)


def test_fuzz_weights_files(fuzz, tmp_path):
    def check(args):
        suffix, data = args
        path = tmp_path / f"weights{suffix}"
        path.write_bytes(data)
        sd, _ = expect_ok_or_named_error(lambda: read_weights(path), [path])
        if sd is not None:
            assert hasattr(sd, "keys")
        got, _ = expect_ok_or_named_error(lambda: read_checkpoint(path, "auto"), [path])
        if got is not None:
            _check_state(got[0])

    torch_file = st.sampled_from(TORCH_FILES).flatmap(lambda b: st.just(b) | mutated_bytes(b))
    strategy = st.one_of(st.tuples(st.sampled_from([".pth", ".pyth"]), torch_file),
                         st.tuples(st.just(".safetensors"), mutated_bytes(SAFETENSORS)),
                         st.tuples(st.sampled_from([".pth", ".safetensors"]), st.binary(max_size=256)))
    fuzz.run(strategy, check, "weights files (torch pickle / safetensors / garbage)", 60)


def test_fuzz_convert_cli(fuzz, tmp_path):
    src = tmp_path / "ref.pth"

    def check(data):
        src.write_bytes(data)
        rc, out, _ = run_cli(["convert", src, "--from", "torchvision", "--out", tmp_path / "out.safetensors"], [src])
        if rc == 0:
            assert "wrote" in out

    fuzz.run(st.sampled_from(TORCH_FILES).flatmap(mutated_bytes), check, "bmvit convert (CLI)", 25)
