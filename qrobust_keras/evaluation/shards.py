"""Sharded evaluation: which samples shard ``I/N`` evaluates, the seed of each block of samples, the fingerprints that
tie shards to one model and one sample list, and the checks that shards fit together before
:meth:`~qrobust_keras.evaluation.RobustnessReport.merge` joins them.

:func:`~qrobust_keras.evaluation.evaluate_robustness` attacks the samples in *seed blocks*: consecutive runs of
``block`` samples (its ``batch_size``, 256 when None) of the evaluated list. Every attack runs once per block, on the
block's samples it attacks, with the seed :func:`block_seed` ``(seed, k)`` of block ``k``; so a sample's random start
and its result depend only on its own block, never on which other samples share the run. A shard is a run of whole
blocks (:func:`shard_bounds`), so ``N`` shards evaluated on ``N`` machines and merged give, sample by sample, the
unsharded evaluation.

Example:

>>> from qrobust_keras.evaluation.shards import block_seed, shard_bounds
>>> [shard_bounds(1000, i, 3, block=256) for i in range(3)]
[(0, 256), (256, 512), (512, 1000)]
>>> block_seed(7, 0), block_seed(7, 1) == block_seed(7, 1) != block_seed(8, 1)
(7, True)
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from qrobust_keras._checks import check_int

if TYPE_CHECKING:
    from qrobust_keras.evaluation.report import RobustnessReport

__all__ = ["shard_bounds", "check_shard", "block_seed", "model_fingerprint", "samples_fingerprint", "check_shards"]


def check_shard(shard: Any) -> tuple[int, int]:
    """``shard`` as ``(index, count)`` ints with ``0 <= index < count``.

    Raises:
        ValueError: not a pair of integers with ``0 <= index < count``.
    """
    ok = isinstance(shard, (tuple, list)) and len(shard) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in shard)
    if not ok or not 0 <= shard[0] < shard[1]:
        raise ValueError(f"shard must be (index, count) with 0 <= index < count; got shard={shard!r}")
    return int(shard[0]), int(shard[1])


def shard_bounds(n: int, index: int, count: int, block: int) -> tuple[int, int]:
    """The samples ``[start, stop)`` of shard ``index`` of ``count`` over ``n`` samples cut into seed blocks.

    The ``K = ceil(n / block)`` blocks are dealt out in order: shard ``i`` holds blocks
    ``floor(i K / N) .. floor((i + 1) K / N) - 1``, so every shard is at least one whole block, the shards follow each
    other in order and together they are the ``n`` samples exactly once.

    Args:
        n: number of samples of the whole (unsharded) evaluation.
        index, count: the shard, ``0 <= index < count``.
        block: samples per seed block (the evaluation's ``batch_size``).

    Returns:
        ``(start, stop)`` sample indices.

    Raises:
        ValueError: bad numbers, or more shards than blocks (a shard would be empty).
    """
    n, block = check_int("n", n), check_int("block", block)
    index, count = check_shard((index, count))
    blocks = math.ceil(n / block)
    if count > blocks:
        raise ValueError(f"shard count {count} exceeds the {blocks} seed block(s) of {block} samples in the {n} "
                         f"samples: every shard holds whole blocks; use at most {blocks} shards, more samples or a "
                         "smaller batch_size")
    first, last = index * blocks // count, (index + 1) * blocks // count
    return first * block, min(last * block, n)


def block_seed(seed: int, block: int) -> int:
    """The seed the attacks get for seed block ``block``: ``seed`` itself for block 0 (an evaluation of one block
    draws exactly what the attacks called with ``seed`` draw), else the first 32-bit word of
    ``numpy.random.SeedSequence([seed, block])`` (independent streams per block).

    Raises:
        ValueError: a negative seed or block index.
    """
    seed, block = check_int("seed", seed, minimum=0), check_int("block", block, minimum=0)
    if block == 0:
        return seed
    return int(np.random.SeedSequence([seed, block]).generate_state(1)[0])


def model_fingerprint(model: Any) -> str | None:
    """The sha256 that says two shards evaluated the same model.

    Keras model: sha256 of its architecture (``model.to_json()`` without the Keras version; the class name when the
    model cannot be serialized) followed by every weight of ``model.weights``, in order, as dtype, shape and raw
    bytes: the same file loaded twice gives the same value, one changed weight another. An int8 runner
    (:class:`~qrobust_keras.export.TFLiteModel`): sha256 of the ``.tflite`` file's bytes. Anything else (a bare
    predict function): None.
    """
    from qrobust_keras._keras import keras

    if isinstance(model, keras.Model):
        digest = hashlib.sha256()
        try:
            arch = json.loads(model.to_json())
            arch.pop("keras_version", None)
            arch.pop("backend", None)
        except (NotImplementedError, TypeError, ValueError):  # a subclassed model without get_config
            arch = type(model).__name__
        digest.update(json.dumps(arch, sort_keys=True).encode("utf-8"))
        for weight in model.weights:
            value = np.ascontiguousarray(weight.numpy())
            digest.update(f"{value.dtype.str}{value.shape}".encode("ascii"))
            digest.update(value.tobytes())
        return digest.hexdigest()
    data = getattr(model, "model_bytes", None)
    if isinstance(data, (bytes, bytearray)):
        return hashlib.sha256(data).hexdigest()
    return None


def samples_fingerprint(x: Any, y: Any) -> str:
    """sha256 of the inputs and labels (dtype, shape and bytes of each): shards cut from one sample list share it."""
    digest = hashlib.sha256()
    for array in (np.ascontiguousarray(x), np.ascontiguousarray(y)):
        digest.update(f"{array.dtype.str}{array.shape}".encode("ascii"))
        digest.update(array.tobytes())
    return digest.hexdigest()


_SAME_SHARD_FIELDS = {"count": "shard count", "n_total": "total samples (n_total)", "block": "seed block (block)",
                      "samples_sha256": "samples (samples_sha256: the sample list the shards were cut from)"}


def check_shards(reports: Sequence["RobustnessReport"]) -> list["RobustnessReport"]:
    """The shard reports in shard order, after checking that they fit together.

    Checked: every report holds a shard record (``settings["shard"]``, written by
    ``evaluate_robustness(..., shard=(i, N))``); all were cut from the same sample list (``n_total``, ``block``,
    ``samples_sha256``) into the same ``N``; the indices are ``0 .. N-1``, each once; each shard holds exactly the
    samples :func:`shard_bounds` gives it; and they agree on the model (name and ``model_sha256``), norm, eps,
    attacks and every other setting (seed, scale, batch size, cascade, clip range, attack settings, suite).

    Raises:
        ValueError: naming what differs (the setting and the two values), the missing or duplicated shard, or the
            report without a shard record; also when a shard carries diagnostics (they cannot be merged).
    """
    reports = list(reports)
    if not reports:
        raise ValueError("reports must hold at least one shard report; got an empty list")
    for k, r in enumerate(reports):
        if not isinstance(r.settings.get("shard"), dict):
            raise ValueError(f"reports[{k}] (model {r.model!r}, n={r.n}) has no shard record (settings['shard']): "
                             "merge takes the reports of evaluate_robustness(..., shard=(i, N)) / qrobust evaluate "
                             "--shard I/N")
    name = lambda r: f"shard {r.settings['shard']['index']}/{r.settings['shard']['count']}"  # noqa: E731
    first = reports[0]
    for r in reports[1:]:
        for key, what in _SAME_SHARD_FIELDS.items():
            a, b = first.settings["shard"].get(key), r.settings["shard"].get(key)
            if a != b:
                raise ValueError(f"shards differ in {what}: {name(first)} has {a!r}, {name(r)} has {b!r}")
        for key in ("model", "norm", "eps", "attacks"):
            if getattr(first, key) != getattr(r, key):
                raise ValueError(f"shards differ in {key}: {name(first)} has {getattr(first, key)!r}, {name(r)} has "
                                 f"{getattr(r, key)!r}")
        for key in sorted((set(first.settings) | set(r.settings)) - {"shard"}):
            a, b = first.settings.get(key), r.settings.get(key)
            if a != b:
                raise ValueError(f"shards differ in {key}: {name(first)} has {key}={a!r}, {name(r)} has {key}={b!r}")
    count = first.settings["shard"]["count"]
    seen: dict[int, int] = {}
    for k, r in enumerate(reports):
        index = r.settings["shard"]["index"]
        if index in seen:
            raise ValueError(f"{name(r)} is given twice (reports[{seen[index]}] and reports[{k}]); merge takes each "
                             f"shard of {count} once")
        seen[index] = k
    missing = [f"{i}/{count}" for i in range(count) if i not in seen]
    if missing:
        raise ValueError(f"shard(s) {', '.join(missing)} missing: merge needs all {count} shards, each once; got "
                         f"{', '.join(name(r) for r in reports)}")
    ordered = sorted(reports, key=lambda r: r.settings["shard"]["index"])
    for r in ordered:
        s = r.settings["shard"]
        start, stop = shard_bounds(s["n_total"], s["index"], s["count"], s["block"])
        sizes = {len(r.clean_correct)} | {len(row) for row in r.robust} | {len(row) for row in r.broken_by}
        if (s.get("start"), s.get("stop")) != (start, stop) or {r.n} | sizes != {stop - start}:
            raise ValueError(f"{name(r)} should hold samples [{start}, {stop}) of {s['n_total']}; it records "
                             f"[{s.get('start')}, {s.get('stop')}) and n={r.n}")
        if r.diagnostics:
            raise ValueError(f"{name(r)} carries diagnostics {sorted(r.diagnostics)}: they are computed per shard and "
                             "cannot be merged; run them on the merged samples")
    return ordered
