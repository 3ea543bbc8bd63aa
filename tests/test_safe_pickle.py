"""The restricted unpickler loads ACT-style annotation pickles and refuses everything else."""

import pickle
import struct

import numpy as np
import pytest

from bmvit.data.formats.safe_pickle import load_pickle
from bmvit.errors import DataError


def _sample():
    return {
        "labels": ["Basketball", "Biking"],
        "nframes": {"Biking/v_1": 12, "Basketball/v_2": np.int64(9)},
        "resolution": {"Biking/v_1": (240, 320)},
        "gttubes": {"Biking/v_1": {1: [np.arange(15, dtype=np.float32).reshape(3, 5)]}},
        "train_videos": [["Biking/v_1"]],
        "misc": ({1, 2}, frozenset({3}), b"raw", 1.5, None, True, np.float64(2.5)),
    }


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_loads_builtins_and_numpy_every_protocol(tmp_path, protocol):
    p = tmp_path / "gt.pkl"
    p.write_bytes(pickle.dumps(_sample(), protocol=protocol))
    got = load_pickle(p)
    want = _sample()
    assert got["labels"] == want["labels"] and got["nframes"] == want["nframes"]
    np.testing.assert_array_equal(got["gttubes"]["Biking/v_1"][1][0], want["gttubes"]["Biking/v_1"][1][0])
    assert got["gttubes"]["Biking/v_1"][1][0].dtype == np.float32
    assert got["misc"] == want["misc"]


def _py2_array_pickle() -> bytes:
    """A pickle as Python 2's cPickle (protocol 2) writes a dict holding a float32 numpy array:
    ``__builtin__`` names and the raw array bytes as a Python 2 ``str`` (BINSTRING)."""
    def glob(mod, name):
        return b"c" + mod.encode() + b"\n" + name.encode() + b"\n"

    def pystr(s: bytes):  # Python 2 str
        return b"U" + bytes([len(s)]) + s if len(s) < 256 else b"T" + struct.pack("<i", len(s)) + s

    data = np.arange(10, dtype="<f4").tobytes()
    dtype = glob("numpy", "dtype") + pystr(b"f4") + b"K\x00K\x01\x87R" + \
        b"(K\x03" + pystr(b"<") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    arr = glob("numpy.core.multiarray", "_reconstruct") + glob("numpy", "ndarray") + b"K\x00\x85" + pystr(b"b") + \
        b"\x87R" + b"(K\x01K\x02K\x05\x86" + dtype + b"\x89" + pystr(data) + b"tb"
    body = b"}(" + pystr(b"tube") + arr + pystr(b"set") + glob("__builtin__", "set") + b"]K\x01a\x85R" + b"u."
    return b"\x80\x02" + body


def test_loads_python2_pickle(tmp_path):
    p = tmp_path / "py2.pkl"
    p.write_bytes(_py2_array_pickle())
    got = load_pickle(p)
    np.testing.assert_array_equal(got["tube"], np.arange(10, dtype=np.float32).reshape(2, 5))
    assert got["set"] == {1}


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_refuses_code_execution(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps({"labels": ["a"], "x": _Exploit(marker)}, protocol=2))
    with pytest.raises(DataError, match=r"evil\.pkl: refused to unpickle global '(posix|os|nt)\.system'"):
        load_pickle(p)
    assert not marker.exists()


@pytest.mark.parametrize("obj, name", [
    (eval, "builtins.eval"),
    (__import__("collections").Counter({"a": 1}), "collections.Counter"),
    (np.load, "numpy.load"),
])
def test_refuses_other_globals(tmp_path, obj, name):
    p = tmp_path / "x.pkl"
    p.write_bytes(pickle.dumps([obj]))
    with pytest.raises(DataError, match=rf"x\.pkl: refused to unpickle global '{name}'"):
        load_pickle(p)


def test_not_a_pickle_and_missing(tmp_path):
    p = tmp_path / "junk.pkl"
    p.write_bytes(b"\x80\x02}q\x00(X")  # truncated
    with pytest.raises(DataError, match=r"junk\.pkl: not a readable pickle"):
        load_pickle(p)
    with pytest.raises(DataError, match=r"nope\.pkl: annotation pickle not found"):
        load_pickle(tmp_path / "nope.pkl")


@pytest.mark.parametrize("body", [
    b"cbuiltins\nbytearray\n(I2147483648\ntR.",  # bytearray(2 GiB), zero-filled: memory actually used
    b"cnumpy\nndarray\n((I16384\nI16384\ntS'f8'\ntR.",  # an uninitialised 2 GiB array
    b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(I2147483648\ntS'b'\ntR.",
])
def test_a_tiny_file_may_not_allocate_gigabytes(tmp_path, body):
    p = tmp_path / "bomb.pkl"
    p.write_bytes(body)
    with pytest.raises(DataError, match=r"bomb.pkl: not a readable pickle \(UnpicklingError: asks for 2147483648 bytes"):
        load_pickle(p)


def test_small_size_only_constructions_still_load(tmp_path):
    p = tmp_path / "ok.pkl"
    p.write_bytes(b"cbuiltins\nbytearray\n(I16\ntR.")
    assert load_pickle(p) == bytearray(16)
    p.write_bytes(pickle.dumps({"a": np.zeros((300, 300))}, protocol=2))  # 720 kB of array data
    assert load_pickle(p)["a"].shape == (300, 300)
