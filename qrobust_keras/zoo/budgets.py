"""A zoo entry's robust accuracy, one budget at a time and each budget one seed block of 256 samples at a time: every
block's and every budget's report is kept in a cache folder as soon as it is computed, so a publish killed after
hours resumes at the block it was in, and an entry's own earlier evaluation is reused when it is provably of the same
model, samples and suite settings. Used by
:mod:`qrobust_keras.zoo.publish`.

Example:

>>> import numpy as np, qrobust_keras as qrk
>>> from qrobust_keras.zoo.budgets import evaluate_per_budget
>>> model = qrk.models.resnet8(policy="int4", filters=4)
>>> x = np.random.default_rng(0).uniform(size=(4, 32, 32, 3)).astype("float32"); y = np.arange(4)
>>> report = evaluate_per_budget(model, x, y, [2 / 255, 8 / 255], suite="quick", seed=0, scale="image",
...                              clip=(0.0, 1.0), name="tiny", cache=None, model_sha256="0" * 64, verbose=0)
>>> report.settings["eps_labels"]
['2/255', '8/255']
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any

import numpy as np

from qrobust_keras._checks import num_classes
from qrobust_keras._files import atomic_write

__all__ = ["evaluate_per_budget", "reusable_budgets", "BLOCK"]

BLOCK = 256  # evaluate_robustness's default seed block: the unit a budget is evaluated and checkpointed in


def evaluate_per_budget(model: Any, x: np.ndarray, y: np.ndarray, eps: list[float], *, suite: str, seed: int,
                        scale: str, clip: tuple[float, float], name: str, cache: str | None, model_sha256: str,
                        verbose: int = 1, reuse: Any = None, inputs: str = "model", block: int = BLOCK):
    """:func:`~qrobust_keras.evaluation.evaluate_robustness` one budget at a time, concatenated into one report.

    Args:
        model, x, y, suite, seed, scale: as for ``evaluate_robustness``; ``clip``: ``(clip_min, clip_max)``.
        eps: the budgets, evaluated in order.
        name: the model's name in the reports and progress lines.
        cache: folder keeping each budget's report, keyed by ``model_sha256`` (of the shipped model file), the
            suite and its settings, seed, scale, samples and labels, and ``inputs``; a budget found there with the
            same key is taken instead of evaluated. None: no cache.
        model_sha256: sha256 of the model file the numbers belong to.
        verbose: 1 prints progress. reuse: a report whose budgets are taken when :func:`reusable_budgets` allows.
        inputs: what the samples are, when one model file is evaluated on several input forms (``"model"``: its
            own inputs; ``"waveform"``: the DS-CNN behind its MFCC front end).
        block: samples per seed block (``evaluate_robustness``'s ``batch_size``), the unit each budget is evaluated
            and checkpointed in; the blocks' reports join into the one unsharded evaluation gives.
    """
    from qrobust_keras.evaluation import RobustnessReport, evaluate_robustness

    reused = {} if reuse is None else reusable_budgets(reuse, model, x, y, suite=suite, seed=seed, scale=scale,
                                                       clip=clip, verbose=verbose)

    from qrobust_keras.evaluation.suite import suite_plan

    # The suite's settings are part of the key: a budget cached under an earlier definition of the suite (the
    # standard suite before Square's restarts) is evaluated again.
    key = {"model_sha256": model_sha256, "suite": suite, "seed": seed, "n": int(len(x)), "scale": scale,
           "labels_sha256": hashlib.sha256(np.asarray(y).tobytes()).hexdigest(),
           "attack_kwargs": json.loads(json.dumps(suite_plan(suite, num_classes(model)).attack_kwargs)),
           **({} if inputs == "model" else {"inputs": inputs}), **({} if block == BLOCK else {"block": block})}
    reports = []
    for e in eps:
        match = [r for b, r in reused.items() if abs(b - e) < 1e-9]
        if match:
            reports.append(match[0])
            if verbose:
                print(f"{name}: eps {e:.6g} taken from the entry's earlier evaluation (same model, samples and suite)")
            continue
        tag = "" if inputs == "model" else f"{inputs}_"
        path = None if cache is None else os.path.join(cache, f"{model_sha256[:16]}_{tag}{suite}_{e:.8f}.json")
        cached = _read_cached(path, key)
        if cached is not None:
            reports.append(cached)
            if verbose:
                print(f"{name}: eps {e:.6g} taken from {path}")
            continue
        report = _evaluate_by_block(
            lambda shard: evaluate_robustness(model, x, y, eps=[e], suite=suite, seed=seed, scale=scale,
                                              clip_min=clip[0], clip_max=clip[1], verbose=verbose, model_name=name,
                                              shard=shard, batch_size=None if block == BLOCK else block),
            len(x), block, path, key, verbose, f"{name}: eps {e:.6g}")
        if path is not None:
            _write_cached(path, key, report)
            _remove_blocks(path)
        reports.append(report)
    joined = RobustnessReport.concat(reports)
    # the labels from the budgets' own eps: reports cached before evaluate_robustness took the scale into account
    # labelled an audio budget of 1.0 "255/255"
    joined.settings["eps_labels"] = joined.budget_labels()
    return joined


def _evaluate_by_block(evaluate: Any, n: int, block: int, path: str | None, key: dict, verbose: int, label: str):
    """One budget's report, evaluated one seed block of ``block`` samples at a time (``evaluate(shard)`` with
    ``shard=(k, count)``), each block's report kept beside ``path`` as soon as it is computed and joined with
    :meth:`~qrobust_keras.evaluation.RobustnessReport.merge`, which is per sample the unsharded evaluation. A budget
    of the standard suite on 1,017 images costs about an hour of CPU; a publish killed inside it loses at most the
    block it was in. The block files are removed once the budget's own report is written."""
    from qrobust_keras.evaluation import RobustnessReport

    count = math.ceil(n / block)
    if count == 1:
        return evaluate(None)
    parts = []
    for k in range(count):
        part_path = None if path is None else f"{path[:-len('.json')]}.block{k}of{count}.json"
        part = _read_cached(part_path, key)
        if part is not None:
            if verbose:
                print(f"{label}: seed block {k + 1} of {count} taken from {part_path}")
        else:
            part = evaluate((k, count))
            if part_path is not None:
                _write_cached(part_path, key, part)
        parts.append(part)
    return RobustnessReport.merge(parts)


def _read_cached(path: str | None, key: dict):
    """The report saved at ``path`` when it was saved under ``key``; otherwise None."""
    from qrobust_keras.evaluation import RobustnessReport

    if path is None or not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    return RobustnessReport.from_dict(saved["report"]) if saved.get("key") == key else None


def _write_cached(path: str, key: dict, report: Any) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    atomic_write(path, json.dumps({"key": key, "report": report.to_dict()}))


def _remove_blocks(path: str) -> None:
    folder, stem = os.path.split(path[:-len(".json")])
    for file in os.listdir(folder):
        if file.startswith(stem + ".block") and file.endswith(".json"):
            os.remove(os.path.join(folder, file))


def reusable_budgets(reuse: Any, model: Any, x: np.ndarray, y: np.ndarray, *, suite: str, seed: int, scale: str,
                     clip: tuple[float, float], verbose: int) -> dict[float, Any]:
    """The budgets of the report ``reuse`` that may stand for an evaluation of ``model`` on ``(x, y)``: only when it
    is of the same weights (``model_fingerprint``), suite, seed, scale, clip and samples (the count, and each
    sample's clean result recomputed now); otherwise none."""
    from qrobust_keras.evaluation.shards import model_fingerprint
    from qrobust_keras.evaluation.suite import settings_are_current

    st = reuse.settings
    clean = np.argmax(model.predict(x, batch_size=256, verbose=0), axis=-1) == np.asarray(y).reshape(-1)
    checks = {"model": st.get("model_sha256") == model_fingerprint(model), "suite": st.get("suite") == suite,
              "suite settings": settings_are_current(suite, st.get("attack_kwargs"), num_classes(model)),
              "seed": st.get("seed") == seed, "scale": st.get("scale") == scale,
              "clip": (st.get("clip_min"), st.get("clip_max")) == tuple(clip),
              "samples": reuse.n == len(x) and list(reuse.clean_correct) == clean.tolist()}
    failed = [k for k, ok in checks.items() if not ok]
    if failed:
        if verbose:
            print(f"the earlier evaluation is not reused: its {', '.join(failed)} differ")
        return {}
    return {part.eps[0]: part for part in reuse.split()}

