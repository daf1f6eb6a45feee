"""A restricted unpickler for dataset files: rebuilds numpy arrays and plain Python values, and nothing else.

Python pickles can name any importable callable (``os.system``, ``builtins.eval``) and have it run on load. The
CIFAR-10 batches only need numpy's array reconstruction, so :func:`safe_load` admits exactly those globals and raises
:class:`~qrobust_keras.data.errors.UnsafePickleError` - before anything is called - for every other one.

Example (an in-memory pickle shaped like a CIFAR-10 batch; ``safe_load(open(path, "rb"))`` reads a file):

>>> import io, os, pickle
>>> import numpy as np
>>> from qrobust_keras.data.safe_pickle import safe_load
>>> blob = pickle.dumps({"labels": [3, 8], "data": np.zeros((2, 3072), np.uint8)}, protocol=2)
>>> batch = safe_load(io.BytesIO(blob))
>>> batch["labels"], batch["data"].shape, batch["data"].dtype.name
([3, 8], (2, 3072), 'uint8')
>>> safe_load(io.BytesIO(pickle.dumps(os.system)))               # a pickle that would call os.system
Traceback (most recent call last):
...
qrobust_keras.data.errors.UnsafePickleError: refusing to load global ...system: ...
"""

from __future__ import annotations

import io
import pickle
from typing import BinaryIO

from qrobust_keras.data.errors import CorruptDataError, UnsafePickleError

__all__ = ["ALLOWED_GLOBALS", "SafeUnpickler", "safe_load", "safe_loads"]

#: (module, name) pairs a pickle may reference: numpy array/scalar/dtype reconstruction (numpy 1 and 2 paths), and
#: ``_codecs.encode``, which Python 3 uses to write ``bytes`` (array buffers) under pickle protocols 0-2 (it only
#: converts a string to bytes with a named codec).
ALLOWED_GLOBALS = frozenset({
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
})


class SafeUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` only resolves :data:`ALLOWED_GLOBALS`; persistent ids are refused."""

    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"refusing to load global {module}.{name}: this pickle asks for code that dataset files never need "
            f"(allowed: numpy array reconstruction only). The file may be malicious or not a dataset file; "
            "nothing from it was executed")

    def persistent_load(self, pid):
        raise UnsafePickleError(f"refusing persistent id {pid!r}: dataset pickles do not use persistent ids")


def safe_load(file: BinaryIO, *, encoding: str = "latin1", name: str | None = None):
    """Unpickle ``file`` with :class:`SafeUnpickler`.

    Args:
        file: binary file object.
        encoding: how Python 2 ``str`` objects are decoded (``"latin1"`` keeps numpy array bytes intact and turns
            Python 2 keys into ``str``; ``"bytes"`` keeps them as ``bytes``).
        name: file name for error messages.

    Returns:
        The unpickled object.

    Raises:
        UnsafePickleError: the pickle references a global outside :data:`ALLOWED_GLOBALS`.
        CorruptDataError: the stream is truncated or not a pickle.
    """
    label = name or getattr(file, "name", "<stream>")
    try:
        return SafeUnpickler(file, encoding=encoding).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            MemoryError) as exc:
        raise CorruptDataError(f"{label!s} is not a readable pickle (truncated or corrupted?): "
                               f"{type(exc).__name__}: {exc}") from exc


def safe_loads(data: bytes, **kwargs):
    """:func:`safe_load` on a bytes object."""
    return safe_load(io.BytesIO(data), **kwargs)
