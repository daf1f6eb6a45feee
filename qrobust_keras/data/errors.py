"""Exceptions raised by the data loaders, so callers can tell "files missing" from "files broken".

Example:

>>> from qrobust_keras.data.errors import DataNotFoundError
>>> issubclass(DataNotFoundError, FileNotFoundError)
True
"""

from __future__ import annotations

import pickle

__all__ = ["DataNotFoundError", "CorruptDataError", "UnsafePickleError", "WavFormatError"]


class DataNotFoundError(FileNotFoundError):
    """A dataset folder or file is missing; the message says where the loader looked and where to put the files."""


class CorruptDataError(ValueError):
    """A dataset file exists but cannot be read as the expected format (truncated, wrong keys, wrong shape)."""


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for an object outside the small allow-list needed to rebuild numpy arrays; nothing was run."""


class WavFormatError(CorruptDataError):
    """A .wav file is truncated, not RIFF/WAVE, not PCM/float, or not at the expected sample rate."""
