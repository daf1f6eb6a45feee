"""The JSON summary of an evaluation that ``qrobust evaluate``, the demo and run reports show: :func:`run_attacks`
runs a Keras model or an int8 ``.tflite`` file through :func:`~qrobust_keras.evaluation.evaluate_robustness` and
adds the C&W-L2 scoring (a minimum-norm attack read at each L-inf budget); :func:`merge_summaries` joins the
summaries of a sharded evaluation, and :func:`write_evaluation` writes one as ``qrobust evaluate`` does.

Example:

>>> import numpy as np
>>> import qrobust_keras as qrk
>>> model = qrk.models.resnet8(policy="int4")
>>> x = np.random.default_rng(0).uniform(size=(4, 32, 32, 3)).astype("float32"); y = np.arange(4)
>>> out = qrk.evaluation.run_attacks(model, "keras", x, y, ["fgsm"], [8 / 255])
>>> sorted(out["results"]), list(out["worst"])
(['fgsm'], ['8/255'])
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

from qrobust_keras._files import atomic_write
from qrobust_keras.attacks import registry
from qrobust_keras.evaluation.report import RobustnessReport, evaluation_markdown, format_eps, plot_accuracy_vs_eps
from qrobust_keras.evaluation.robustness import evaluate_robustness
from qrobust_keras.evaluation.suite import custom_label

__all__ = ["run_attacks", "merge_summaries", "write_evaluation"]


def run_attacks(model: Any, kind: str, x: np.ndarray, y: np.ndarray, attacks: Sequence[str],
                eps_list: Sequence[float], *, steps: int | None = None, queries: int | None = None, seed: int = 0,
                verbose: int = 0, batch_size: int = 256, clip_range: tuple[float, float] = (0.0, 1.0),
                scale: str = "image", suite: str | None = None, source_model: Any = None,
                shard: tuple[int, int] | None = None, search_model: Any = None) -> dict[str, Any]:
    """Robust accuracy of ``model`` per attack and L-inf budget and the per-sample worst case, as the JSON-ready
    summary that ``qrobust evaluate``, the demo and run reports show (``evaluate_robustness`` plus C&W-L2 scoring).

    L-inf attacks run through :func:`evaluate_robustness` (registry defaults of ``scale``; ``steps`` overrides the
    iterations of iterative attacks, ``queries`` the Square budget). A sample is robust at ``eps`` when it is
    correct clean and under every attack at that ``eps``. C&W-L2 minimizes the L2 distortion and has no L-inf
    budget (Carlini & Wagner 2017): it runs once, and a sample counts as broken at ``eps`` when its C&W example is
    misclassified within L-inf distance ``eps``.

    Args:
        model: a Keras model (``kind="keras"``) or a :class:`~qrobust_keras.export.TFLiteModel` (``kind="tflite"``:
            black-box attacks only).
        kind: ``"keras"`` or ``"tflite"``.
        x, y: inputs in ``clip_range`` and integer labels.
        attacks: registry names (``cw_l2`` included).
        eps_list: L-inf budgets in input units.
        suite: a named suite (``"standard"``, ``"rand"``, ``"quick"``) instead of ``attacks`` (which must then be
            empty); ``steps``/``queries`` do not apply.
        source_model: for ``kind="tflite"``, the Keras model the file was exported from (white-box attacks
            transfer from it); see :func:`evaluate_robustness`.
        batch_size: the attacks' batch size and the seed block (see :func:`evaluate_robustness`); a ``.tflite``
            file keeps the attacks' own batch sizes and blocks of 256.
        shard: ``(index, count)``: evaluate only that shard of ``x`` (see :func:`evaluate_robustness`); the summary
            then covers the shard's samples, and :func:`merge_summaries` joins the ``count`` summaries. C&W-L2 is
            refused with a shard (its distortion medians cannot be merged).
        search_model: for ``kind="tflite"``, a faster runner of the same file that black-box attacks query while
            they search; every example is scored on ``model`` (see :func:`evaluate_robustness`).

    Returns:
        ``{"n", "clean", "results": {attack: {eps_label: acc}}, "worst": {eps_label: acc}, "eps", "attacks":
        settings, "suite_label", "upper_bound", "robustness_report": RobustnessReport.to_dict()}`` (accuracies in [0, 1], labels from
        :func:`~qrobust_keras.evaluation.report.format_eps`); with ``cw_l2`` also ``"cw_l2_distortion"``: its success
        rate on the clean-correct samples and the mean/median L2 and L-inf distortion of the examples it found.

    Raises:
        ValueError: white-box attacks on a ``.tflite`` file, an unknown ``kind``, C&W-L2 or no L-inf attack with a
            shard, or what :func:`evaluate_robustness` refuses.
    """
    if kind not in ("keras", "tflite"):
        raise ValueError(f"kind must be 'keras' or 'tflite'; got kind={kind!r}")
    names = [registry.canonical_name(a) for a in attacks]
    if shard is not None and "cw_l2" in names:
        raise ValueError(f"attacks {names} include cw_l2, which a sharded evaluation cannot run (the medians of its "
                         "distortion cannot be merged from shards); drop cw_l2 or evaluate without shard=")
    if shard is not None and suite is None and not names:
        raise ValueError("a sharded evaluation needs at least one L-inf attack or a suite; got attacks=[]")
    block = batch_size if kind == "keras" else None
    if suite is not None:
        if names:
            raise ValueError(f"give either suite= or attacks=, not both; got suite={suite!r} and attacks={names}")
        report = evaluate_robustness(model, x, np.asarray(y), eps=list(eps_list), seed=seed, verbose=verbose,
                                     scale=scale, clip_min=clip_range[0], clip_max=clip_range[1], suite=suite,
                                     source_model=source_model, batch_size=block, shard=shard,
                                     search_model=search_model)
        names = report.attacks
    if kind == "tflite" and source_model is None:
        white = [a for a in names if registry.get_attack(a).kind == "white"]
        if white:
            raise ValueError(f"attacks {white} need gradients; a .tflite file can only be attacked with black-box "
                             f"attacks ({', '.join(registry.list_attacks('black'))}) or by transfer from its Keras "
                             "model")
    lo, hi = clip_range
    label = {e: format_eps(e, "inf", scale) for e in eps_list}
    linf = [a for a in names if a != "cw_l2"]
    overrides: dict = {}
    for name in linf:
        if steps is not None and name in ("bim", "pgd", "pgd-cw", "mim", "apgd-ce", "apgd-dlr", "spsa"):
            overrides[name] = {"steps": int(steps)}
        if queries is not None and name == "square":
            overrides[name] = {"queries": int(queries)}
    y = np.asarray(y)
    if suite is None and linf:
        report = evaluate_robustness(model, x, y, attacks=linf, eps=list(eps_list), seed=seed, verbose=verbose,
                                     attack_kwargs=overrides, scale=scale, clip_min=lo, clip_max=hi,
                                     batch_size=block, source_model=source_model, shard=shard,
                                     search_model=search_model)
    elif suite is None:
        report = None
    if report is not None:
        clean_ok = np.asarray(report.clean_correct, bool)
        robust = {e: np.asarray(mask, bool) for e, mask in zip(eps_list, report.robust)}
    else:
        scores = model.predict(x, batch_size=batch_size, verbose=0) if kind == "keras" else model.predict(x)
        clean_ok = scores.argmax(1) == y
        robust = {e: clean_ok.copy() for e in eps_list}
    white_ran = any(registry.get_attack(a).kind == "white" for a in names)
    cw = None
    if "cw_l2" in names:
        cw = _cw_l2_scores(model, x, y, clean_ok, robust, label, scale=scale, seed=seed, clip_range=clip_range,
                           batch_size=batch_size)
    return _summary(report, names, eps_list, scale, clean_ok, robust, cw,
                    upper_bound=kind == "tflite" and not (white_ran and source_model is not None))


def _summary(report: RobustnessReport | None, names: Sequence[str], eps_list: Sequence[float], scale: str,
             clean_ok: np.ndarray, robust: dict, cw: tuple | None, upper_bound: bool) -> dict[str, Any]:
    """The dict of :func:`run_attacks` from its parts: the L-inf report (None when only C&W-L2 ran), the attack
    names, budgets, per-sample clean and worst-case masks, and C&W-L2's rows (None when it did not run)."""
    label = {e: format_eps(e, "inf", scale) for e in eps_list}
    linf = [a for a in names if a != "cw_l2"]
    results: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    if report is not None:
        overrides = report.settings.get("attack_kwargs", {})
        results = {name: {label[e]: float(acc) for e, acc in zip(eps_list, report.accuracy[name])} for name in linf}
        settings = {name: {label[e]: registry.attack_kwargs(name, eps=e, scale=scale, overrides=overrides.get(name))
                           for e in eps_list} for name in linf}
    what_ran = report.suite_label if report is not None else custom_label(list(names))
    out = {"n": int(len(clean_ok)), "clean": float(clean_ok.mean()), "results": results, "suite_label": what_ran,
           "upper_bound": bool(upper_bound)}
    if cw is not None:
        results["cw_l2"], settings["cw_l2"], out["cw_l2_distortion"] = cw
    out.update(worst={label[e]: float(robust[e].mean()) for e in eps_list}, eps=[float(e) for e in eps_list],
               attacks=settings, robustness_report=None if report is None else report.to_dict())
    return out


_SUMMARY_KEYS = ("n", "clean", "results", "suite_label", "upper_bound", "cw_l2_distortion", "worst", "eps", "attacks",
                 "robustness_report")


def merge_summaries(evaluations: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One :func:`run_attacks` summary from the summaries of its shards (``run_attacks(..., shard=(i, N))`` for
    ``i = 0 .. N-1``, in any order; ``qrobust evaluate --shard I/N`` writes them as ``evaluation.json``).

    The shards' ``robustness_report`` entries are joined by :meth:`RobustnessReport.merge` (which checks that they
    fit together) and the summary is rebuilt from the joined report exactly as :func:`run_attacks` builds it, so it
    equals the unsharded summary per sample (accuracies, worst case, the report's masks). Keys a caller added to the
    shards' summaries (``qrobust evaluate``: ``model``, ``model_kind``, ``data``) are kept from shard 0.

    Raises:
        ValueError: an empty list, a summary without a robustness report, shards of different model kinds or that
            disagree on ``upper_bound``, or what :meth:`RobustnessReport.merge` refuses.
    """
    evaluations = list(evaluations)
    if not evaluations:
        raise ValueError("evaluations must hold at least one shard summary; got an empty list")
    reports = []
    for k, ev in enumerate(evaluations):
        if not isinstance(ev, Mapping) or not isinstance(ev.get("robustness_report"), Mapping):
            raise ValueError(f"evaluations[{k}] holds no robustness_report: merge takes the summaries of "
                             "run_attacks(..., shard=(i, N)) / the evaluation.json of qrobust evaluate --shard I/N")
        reports.append(RobustnessReport.from_dict(dict(ev["robustness_report"])))
    report = RobustnessReport.merge(reports)
    for key in ("model_kind", "upper_bound"):
        values = {json.dumps(ev.get(key)) for ev in evaluations}
        if len(values) > 1:
            raise ValueError(f"shards differ in {key}: {sorted(values)}; merge takes the shards of one evaluation")
    first = min(zip(reports, evaluations), key=lambda pair: pair[0].settings["shard"]["index"])[1]
    clean_ok = np.asarray(report.clean_correct, bool)
    robust = {e: np.asarray(mask, bool) for e, mask in zip(report.eps, report.robust)}
    out = _summary(report, report.attacks, report.eps, report.settings.get("scale", "image"), clean_ok, robust, None,
                   upper_bound=bool(first.get("upper_bound")))
    out.update({k: v for k, v in first.items() if k not in _SUMMARY_KEYS})
    return out


def write_evaluation(ev: Mapping[str, Any], out: str | os.PathLike, name: str, title: str) -> str:
    """Write a :func:`run_attacks` summary into the folder ``out`` (created) as ``qrobust evaluate`` does:
    ``evaluation.json`` (the summary), ``evaluation.md`` (:func:`evaluation_markdown` under ``title``) and
    ``accuracy_vs_eps.png`` (:func:`plot_accuracy_vs_eps`, the curve labelled ``name``), each written atomically.

    Returns:
        The markdown text.
    """
    os.makedirs(out, exist_ok=True)
    atomic_write(os.path.join(out, "evaluation.json"), json.dumps(ev, indent=2))
    md = evaluation_markdown(dict(ev), title)
    atomic_write(os.path.join(out, "evaluation.md"), md)
    plot_accuracy_vs_eps({name: dict(ev)}, os.path.join(out, "accuracy_vs_eps.png"))
    return md


def _cw_l2_scores(model: Any, x: np.ndarray, y: np.ndarray, clean_ok: np.ndarray, robust: dict, label: dict, *,
                  scale: str, seed: int, clip_range: tuple[float, float], batch_size: int) -> tuple:
    """C&W-L2 rows of :func:`run_attacks` (updates ``robust`` in place): accuracy per budget, settings, distortion."""
    lo, hi = clip_range
    x_adv = registry.run_attack("cw_l2", model, x, y, None, norm="2", scale=scale, seed=seed, clip_min=lo,
                                clip_max=hi, batch_size=batch_size)
    x_adv = x_adv[0] if isinstance(x_adv, tuple) else x_adv
    fooled = model.predict(x_adv, batch_size=batch_size, verbose=0).argmax(1) != y
    delta = (x_adv - x).reshape(len(x), -1)
    dist = np.abs(delta).max(1)
    l2 = np.sqrt(np.square(delta).sum(1))
    broken = clean_ok & fooled
    # Carlini & Wagner 2017 report minimum-norm attacks by success rate and distortion of the found examples.
    distortion = {"attacked": int(clean_ok.sum()), "success": float(broken.sum() / max(clean_ok.sum(), 1))}
    for stat, fn in (("mean", np.mean), ("median", np.median)):
        distortion[f"{stat}_l2"] = float(fn(l2[broken])) if broken.any() else None
        distortion[f"{stat}_linf"] = float(fn(dist[broken])) if broken.any() else None
    rows = {}
    for e in robust:
        ok = clean_ok & ~(fooled & (dist <= e + 1e-7))
        rows[label[e]] = float(ok.mean())
        robust[e] &= ok
    settings = dict(registry.attack_kwargs("cw_l2", eps=None, scale=scale),
                    note="L2 attack; broken at eps when misclassified within L-inf distance eps")
    return rows, settings, distortion
