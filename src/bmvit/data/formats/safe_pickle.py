"""A restricted unpickler for annotation pickles (ACT / MOC-Detector ``*-GT.pkl``).

Contract: :func:`load_pickle` returns the object stored in a pickle file built only from
builtin containers and scalars (dict, list, tuple, set, str, bytes, int, float, bool, None),
``collections.OrderedDict`` and numpy arrays / dtypes / scalars. Any other global the pickle
asks for (a function, a class, a module attribute: everything that lets a pickle run code) is
refused with a :class:`~bmvit.errors.DataError` naming the file and the refused
``module.name``; nothing of the file is executed before that.

Allocation is bounded too: the few allowed callables that create storage from a *size* alone
(``bytearray(n)``, ``numpy.ndarray(shape)``, numpy's ``_reconstruct(cls, shape, dtype)``) may not
ask for more bytes than the file holds plus 1 MiB (a real pickle carries its arrays' bytes, and
numpy writes ``_reconstruct`` with shape ``(0,)``): a 30-byte file asking for 20 GB is refused as
unreadable instead of filling the machine's memory.

The ACT files were written by Python 2 (``cPickle``), so strings are decoded as latin-1 (the
encoding numpy needs for the raw bytes of Python 2 arrays) and Python 2 module names
(``__builtin__``, ``copy_reg``) are mapped to Python 3 ones, as :mod:`pickle` does, before the check.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import collections
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bmvit.errors import DataError

__all__ = ["ALLOWED_GLOBALS", "load_pickle"]


def _numpy_attr(path: str) -> Any:
    """``numpy._core.x.y`` (numpy >= 2) or ``numpy.core.x.y`` (numpy 1), without import-by-name."""
    mod_name, _, attr = path.rpartition(".")
    core = getattr(np, "_core", None) or np.core
    mod = core
    for part in mod_name.split(".")[1:]:
        mod = getattr(mod, part)
    return getattr(mod, attr)


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python 3 pickles of bytes use it (protocol < 3): text codecs only."""
    if codecs.lookup(encoding).name not in ("latin-1", "iso8859-1", "utf-8", "ascii"):
        raise pickle.UnpicklingError(f"_codecs.encode with codec {encoding!r} is not allowed")
    return codecs.encode(text, encoding, errors)


def _allowed() -> dict[tuple[str, str], Callable[..., Any] | type]:
    table: dict[tuple[str, str], Any] = {
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "list"): list,
        ("builtins", "dict"): dict,
        ("builtins", "tuple"): tuple,
        ("builtins", "bytearray"): bytearray,
        ("builtins", "complex"): complex,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("_codecs", "encode"): _latin1_encode,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for core in ("numpy.core", "numpy._core"):  # pickles name the module numpy had when written
        table[(f"{core}.multiarray", "_reconstruct")] = _numpy_attr("numpy.multiarray._reconstruct")
        table[(f"{core}.multiarray", "scalar")] = _numpy_attr("numpy.multiarray.scalar")
        try:
            table[(f"{core}.numeric", "_frombuffer")] = _numpy_attr("numpy.numeric._frombuffer")
        except AttributeError:  # pragma: no cover - very old numpy
            pass
    return table


ALLOWED_GLOBALS = _allowed()


SLACK_BYTES = 1 << 20  # allocations a pickle may ask for beyond its own size


def _nbytes(shape: Any, dtype: Any = float) -> int:
    """Bytes of an array of ``shape`` and ``dtype`` (a malformed pair raises, as numpy would)."""
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    return int(np.prod([int(d) for d in dims], dtype=object)) * np.dtype(dtype).itemsize


def _bounded(allowed: Any, limit: int) -> Any:
    """``allowed`` (a callable of :data:`ALLOWED_GLOBALS`) refusing to allocate more than ``limit`` bytes."""
    def check(nbytes: int) -> None:
        if nbytes > limit:
            raise pickle.UnpicklingError(f"asks for {nbytes} bytes, more than the file's size allows")

    if allowed is bytearray:
        def make(*args):
            if args and isinstance(args[0], int):
                check(args[0])
            return bytearray(*args)
    elif allowed is np.ndarray:
        def make(shape, dtype=float, *args, **kwargs):
            check(_nbytes(shape, dtype))
            return np.ndarray(shape, dtype, *args, **kwargs)
    elif getattr(allowed, "__name__", "") == "_reconstruct":
        def make(cls, shape, dtype, *args):
            check(_nbytes(shape, dtype))  # numpy writes shape (0,), dtype b'b' (int8)
            return allowed(getattr(cls, "__wrapped__", cls), shape, dtype, *args)  # ndarray, not its guard
    else:
        return allowed
    make.__wrapped__ = allowed
    return make


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path, limit: int) -> None:
        super().__init__(file, encoding="latin1", fix_imports=True)
        self._path, self._limit = path, limit

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (__builtin__ -> builtins, ...), as pickle's fix_imports does
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        obj = ALLOWED_GLOBALS.get((module, name))
        if obj is None:
            raise DataError(
                f"{self._path}: refused to unpickle global '{module}.{name}' "
                "(annotation pickles may only hold builtin containers and numpy arrays)"
            )
        return _bounded(obj, self._limit)

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self._path}: refused to unpickle a persistent id ({pid!r})")


def load_pickle(path: str | Path) -> Any:
    """Load ``path`` with the restricted unpickler (module docstring); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: annotation pickle not found")
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, path, path.stat().st_size + SLACK_BYTES).load()
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - damaged data fails in many ways (UnpicklingError, EOFError,
        # OverflowError of a corrupt length, TypeError of a bad reduce, MemoryError, RecursionError, ...);
        # nothing but the allowed globals ran, so each means one thing: the file is not a readable pickle
        detail = " ".join(str(e).split())[:120]
        raise DataError(f"{path}: not a readable pickle ({type(e).__name__}: {detail})") from None
