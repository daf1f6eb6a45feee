"""Strict reading of RIFF/WAVE files into float waveforms, with clear errors for truncated or off-rate files.

Only the standard library and numpy are used: the RIFF chunks are walked by hand so that a truncated file (a data
chunk shorter than its header says) is an error, not a silently shorter clip, and unknown chunks (``LIST``, ``cue``)
are skipped.

Example (writes half a second of a 16-bit tone to a temporary folder first):

>>> import os, tempfile, wave
>>> import numpy as np
>>> from qrobust_keras.data.wav import read_wav, fit_length
>>> tmp = tempfile.TemporaryDirectory()
>>> path = os.path.join(tmp.name, "tone.wav")
>>> with wave.open(path, "wb") as f:
...     f.setnchannels(1)
...     f.setsampwidth(2)
...     f.setframerate(16000)
...     f.writeframes((8000 * np.sin(np.arange(8000) * 2 * np.pi * 440 / 16000)).astype("<i2").tobytes())
>>> x, rate = read_wav(path)                                  # e.g. read_wav("yes/022cd682_nohash_0.wav")
>>> x.dtype.name, x.shape, rate                               # float32 in [-1, 1)
('float32', (8000,), 16000)
>>> fit_length(x, 16000).shape                                # pad with zeros / trim to exactly 1 s
(16000,)
>>> os.truncate(path, 1000)                                   # cut the file short...
>>> read_wav(path)                                            # ...an error, not a shorter clip
Traceback (most recent call last):
...
qrobust_keras.data.errors.WavFormatError: '...tone.wav' is truncated: its data chunk declares 16000 bytes ...
>>> tmp.cleanup()
"""

from __future__ import annotations

import os
import struct
from math import gcd

import numpy as np

from qrobust_keras.data.errors import WavFormatError

__all__ = ["read_wav", "fit_length", "resample", "load_clip"]

_PCM = 1
_FLOAT = 3
_EXTENSIBLE = 0xFFFE


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a mono or multi-channel PCM (8/16/24/32-bit) or IEEE-float WAVE file.

    Args:
        path: the ``.wav`` file.

    Returns:
        ``(waveform, sample_rate)``: float32 samples scaled to [-1, 1) (int16 divided by 32768), shape ``(n,)`` for
        mono and ``(n, channels)`` otherwise; the sample rate in Hz.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        WavFormatError: if the file is not RIFF/WAVE, has no ``fmt``/``data`` chunk, uses an unsupported encoding, or
            is truncated (fewer data bytes than the header declares).
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 12 or raw[:4] not in (b"RIFF", b"RIFX") or raw[8:12] != b"WAVE":
        raise WavFormatError(f"{path!r} is not a RIFF/WAVE file (first bytes {raw[:12]!r}; file has {len(raw)} bytes)")
    if raw[:4] == b"RIFX":
        raise WavFormatError(f"{path!r} is big-endian RIFX; only little-endian RIFF WAVE is supported")
    pos, fmt, data = 12, None, None
    while pos + 8 <= len(raw):
        cid, size = raw[pos:pos + 4], struct.unpack("<I", raw[pos + 4:pos + 8])[0]
        body = raw[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            if len(body) < 16:
                raise WavFormatError(f"{path!r} is truncated: its fmt chunk has {len(body)} of 16 bytes")
            fmt = struct.unpack("<HHIIHH", body[:16]) + ((body[24:26],) if len(body) >= 26 else (b"",))
        elif cid == b"data":
            if len(body) < size:
                raise WavFormatError(
                    f"{path!r} is truncated: its data chunk declares {size} bytes but only {len(body)} are in the file "
                    f"({len(raw)} bytes in all); re-download or re-copy the file")
            data = body
            break
        pos += 8 + size + (size & 1)
    if fmt is None:
        raise WavFormatError(f"{path!r} has no 'fmt ' chunk (truncated header? {len(raw)} bytes)")
    if data is None:
        raise WavFormatError(f"{path!r} has no 'data' chunk (truncated file? {len(raw)} bytes)")
    code, channels, rate, _, block_align, bits, sub = fmt
    if code == _EXTENSIBLE and len(sub) == 2:
        code = struct.unpack("<H", sub)[0]
    if channels < 1 or bits not in (8, 16, 24, 32, 64) or block_align != channels * bits // 8:
        raise WavFormatError(f"{path!r} has an inconsistent fmt chunk: channels={channels}, bits={bits}, "
                             f"block_align={block_align}")
    if len(data) % block_align:
        raise WavFormatError(f"{path!r} is truncated: {len(data)} data bytes is not a whole number of "
                             f"{block_align}-byte frames")
    if code == _PCM and bits == 8:
        x = (np.frombuffer(data, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif code == _PCM and bits == 16:
        x = np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
    elif code == _PCM and bits == 24:
        b = np.frombuffer(data, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v) / float(1 << 23)).astype(np.float32)
    elif code == _PCM and bits == 32:
        x = (np.frombuffer(data, "<i4") / 2.0**31).astype(np.float32)
    elif code == _FLOAT and bits in (32, 64):
        x = np.frombuffer(data, "<f4" if bits == 32 else "<f8").astype(np.float32)
    else:
        raise WavFormatError(f"{path!r} uses format code {code} with {bits} bits; accepted: PCM 8/16/24/32-bit or "
                             "IEEE float 32/64-bit")
    if channels > 1:
        x = x.reshape(-1, channels)
    return x, int(rate)


def fit_length(waveform: np.ndarray, length: int = 16000) -> np.ndarray:
    """Pad with trailing zeros, or keep the first ``length`` samples, along the last axis (the MLCommons choice)."""
    waveform = np.asarray(waveform)
    n = waveform.shape[-1]
    if n >= length:
        return waveform[..., :length]
    pad = [(0, 0)] * (waveform.ndim - 1) + [(0, length - n)]
    return np.pad(waveform, pad)


def resample(waveform: np.ndarray, rate: int, target_rate: int = 16000) -> np.ndarray:
    """Polyphase resampling (``scipy.signal.resample_poly``, Kaiser-windowed FIR) along the last axis.

    Args:
        waveform: samples, last axis is time.
        rate: sample rate of ``waveform`` in Hz.
        target_rate: wanted sample rate in Hz.
    """
    if rate <= 0 or target_rate <= 0:
        raise ValueError(f"sample rates must be positive; got rate={rate}, target_rate={target_rate}")
    if rate == target_rate:
        return np.asarray(waveform, np.float32)
    from scipy.signal import resample_poly

    g = gcd(int(rate), int(target_rate))
    return resample_poly(waveform, target_rate // g, rate // g, axis=-1).astype(np.float32)


def load_clip(path: str | os.PathLike, sample_rate: int = 16000, length: int | None = 16000,
              resample_audio: bool = False) -> np.ndarray:
    """Read one mono clip at ``sample_rate`` and pad/trim it to ``length`` samples.

    Args:
        path: the ``.wav`` file.
        sample_rate: rate the caller needs, in Hz.
        length: samples to pad/trim to (``None`` keeps the clip's own length).
        resample_audio: resample files at another rate instead of raising.

    Returns:
        float32 waveform in [-1, 1), shape ``(length,)``.

    Raises:
        WavFormatError: for unreadable/truncated files, non-mono files, or a rate other than ``sample_rate`` when
            ``resample_audio`` is False.
    """
    x, rate = read_wav(path)
    if x.ndim != 1:
        raise WavFormatError(f"{os.fspath(path)!r} has {x.shape[1]} channels; expected a mono clip")
    if rate != sample_rate:
        if not resample_audio:
            raise WavFormatError(
                f"{os.fspath(path)!r} is sampled at {rate} Hz; expected {sample_rate} Hz. Pass resample=True to "
                f"resample it (polyphase filter), or convert the files first")
        x = resample(x, rate, sample_rate)
    return fit_length(x, length) if length is not None else x
