"""evaluate_robustness: run several attacks at several budgets and report per-attack and worst-case accuracy.

Example:

>>> import numpy as np
>>> from qrobust_keras._keras import keras
>>> from qrobust_keras.evaluation import evaluate_robustness
>>> model = keras.Sequential([keras.layers.Flatten(input_shape=(4, 4, 1)), keras.layers.Dense(3)])
>>> x = np.random.default_rng(0).uniform(size=(16, 4, 4, 1)).astype("float32")
>>> y = model.predict(x, verbose=0).argmax(1)
>>> report = evaluate_robustness(model, x, y, attacks=["fgsm", "pgd"], eps=[2 / 255, 8 / 255], verbose=0)
>>> report.robust_accuracy[1] <= min(report.accuracy["fgsm"][1], report.accuracy["pgd"][1])
True
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from qrobust_keras.attacks import registry
from qrobust_keras.attacks.common import as_predict_fn, check_attack_inputs, parse_norm, perturbation_norms
from qrobust_keras.evaluation.report import RobustnessReport, format_eps
from qrobust_keras.evaluation.shards import (block_seed, check_shard, model_fingerprint, samples_fingerprint,
                                             shard_bounds)
from qrobust_keras.evaluation.suite import custom_label, is_randomized, suite_label, suite_plan

DEFAULT_WHITE_BOX = ("fgsm", "pgd", "apgd-ce", "apgd-dlr")

Diagnostic = Callable[[Any, np.ndarray, np.ndarray, RobustnessReport], Any]


def _is_keras_model(model: Any) -> bool:
    from qrobust_keras._keras import keras

    return isinstance(model, keras.Model)


def evaluate_robustness(
    model: Any,
    x: Any,
    y: Any,
    attacks: Sequence[str] | None = None,
    eps: Sequence[float] | float = (2 / 255, 8 / 255),
    n: int | None = None,
    norm: Any = "inf",
    seed: int = 0,
    batch_size: int | None = None,
    verbose: int = 1,
    attack_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    scale: str = "image",
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    cascade: bool = False,
    diagnostics: Mapping[str, Diagnostic] | None = None,
    model_name: str | None = None,
    suite: str | None = None,
    source_model: Any = None,
    shard: tuple[int, int] | None = None,
    search_model: Any = None,
) -> RobustnessReport:
    """Accuracy of ``model`` under each attack at each eps, and the per-sample worst case over all attacks.

    Only clean-correct samples are attacked; a sample counts as robust at eps when it is clean-correct and every
    attack at that eps leaves it correctly classified ("robust accuracy", as in AutoAttack, Croce & Hein 2020,
    arXiv 2003.01690). Every adversarial example is re-scored here with the model's inference-mode predictions (the
    attacks' own success claims are not trusted), and its perturbation is checked against eps.

    Seed blocks: the samples are cut into blocks of ``B = batch_size`` (256 when None) consecutive samples, and
    every attack runs once per block, on the block's samples it attacks, with seed
    :func:`~qrobust_keras.evaluation.shards.block_seed` ``(seed, k)`` for block ``k`` (``seed`` itself for block 0,
    so an evaluation of at most ``B`` samples draws what the attacks called with ``seed`` draw). A sample's random
    start, and so its result, depends only on its own block; this is what makes ``shard=`` exact.

    Args:
        model: a Keras classifier (all attacks), or a predict function / object with ``predict`` returning scores
            (black-box attacks only: white-box attacks are refused with a TypeError).
        x: inputs in [clip_min, clip_max], shape (N, ...).
        y: true labels (N,) or one-hot.
        attacks: registry names (see :mod:`qrobust_keras.attacks.registry`), e.g. ``["fgsm", "pgd", "square"]``
            (None: ``suite``'s attacks, or FGSM, PGD, APGD-CE and APGD-DLR when no suite is given).
        eps: budgets in input units (L-inf: [0, 1] for images, e.g. ``[2/255, 8/255]``; L2: Euclidean).
        n: evaluate only the first n samples (None: all).
        norm: "inf" or "2" for every attack.
        seed: seed of the attacks (results are reproducible); block ``k`` of samples gets ``block_seed(seed, k)``.
        batch_size: passed to every attack and used for clean predictions; also the seed block (None: each
            attack's default, 256 for predictions and blocks).
        verbose: 0 silent; 1 one progress bar over (attack, eps) runs; 2 also the attacks' own bars.
        attack_kwargs: per-attack overrides of the registry defaults, e.g. ``{"pgd": {"steps": 50}}``.
        scale: default table to use: "image", "audio" or "quick" (see the registry).
        clip_min, clip_max: valid input range.
        cascade: run each attack only on the samples that survived the previous ones at that eps (faster, same
            worst case; per-attack rows become cumulative).
        diagnostics: optional ``{name: fn(model, x, y, report) -> dict}`` run at the end; results are attached to
            ``report.diagnostics[name]`` (the hook for gradient-masking checks).
        model_name: name shown in the report (default: the model's name).
        suite: ``"standard"`` (AutoAttack's standard version as a cascade; a model whose predictions are random at
            inference gets its rand version), ``"rand"`` or ``"quick"``; see :mod:`qrobust_keras.evaluation.suite`.
            Give either ``suite`` or ``attacks``. ``attack_kwargs`` may still override settings; the report then
            says the suite was changed.
        source_model: for a model without gradients (an int8 ``.tflite`` runner), the Keras model it was exported
            from: white-box attacks run on it and their examples are scored on ``model`` (transfer), black-box
            attacks run on ``model`` itself. Without it a suite on such a model runs its black-box attacks only and
            the report calls the result an upper bound.
        search_model: for a model without gradients, a faster stand-in with the same classes that the black-box
            attacks query while they search (the same int8 ``.tflite`` file on LiteRT's optimized kernels, about
            20x faster, while ``model`` runs the reference kernels TFLite Micro matches). Every clean prediction
            and adversarial example is still scored on ``model``, so the numbers are ``model``'s; an example that
            fools only the stand-in counts as not broken. ``settings["search_model"]`` names it.
        shard: ``(index, count)``: evaluate only shard ``index`` of ``count`` of the (first ``n``) samples, the
            whole seed blocks :func:`~qrobust_keras.evaluation.shards.shard_bounds` gives it, with the seeds the
            unsharded evaluation uses for them. ``x``/``y`` stay the whole sample list. The report's
            ``settings["shard"]`` records ``index``, ``count``, ``start``, ``stop``, ``n_total``, ``block`` and
            ``samples_sha256`` (of the whole list); :meth:`RobustnessReport.merge` joins the ``count`` shard reports
            into one equal, per sample, to the unsharded report. None: every sample.

    Returns:
        A :class:`RobustnessReport`; ``settings["model_sha256"]`` (and ``"source_model_sha256"``) fingerprint the
        model (:func:`~qrobust_keras.evaluation.shards.model_fingerprint`).

    Raises:
        ValueError: bad attack names, eps, norm, n, shard, labels or inputs; more shards than seed blocks.
        TypeError: a white-box attack with a model that has no gradients.
        RuntimeError: an attack returned a perturbation outside the eps-ball or the clip range.
    """
    norm = parse_norm(norm)
    if suite is not None and attacks is not None:
        raise ValueError(f"give either suite= or attacks=, not both; got suite={suite!r} and attacks={attacks!r}")
    if suite is not None:
        suite_plan(suite)                                      # the name is checked before any work
    attacks = DEFAULT_WHITE_BOX if attacks is None and suite is None else attacks
    if isinstance(attacks, str):
        attacks = [attacks]
    if attacks is not None and not attacks:
        raise ValueError("attacks must name at least one attack; got an empty list")
    if isinstance(eps, (int, float, np.floating, np.integer)):
        eps_list = [eps]
    elif isinstance(eps, np.ndarray) or (hasattr(eps, "__iter__") and not isinstance(eps, (str, bytes, dict))):
        eps_list = list(np.ravel(eps)) if isinstance(eps, np.ndarray) else list(eps)
    else:
        raise TypeError(f"eps must be a number or a list of numbers (budgets in the model's input units, e.g. "
                        f"2/255); got eps={eps!r}")
    if not eps_list:
        raise ValueError("eps must hold at least one budget; got an empty list")
    if scale not in registry.SCALES:
        raise ValueError(f"scale must be one of {registry.SCALES}; got scale={scale!r}")
    keras_model = _is_keras_model(model)
    if source_model is not None and (keras_model or not _is_keras_model(source_model)):
        raise TypeError("source_model= is the Keras model a gradient-free model (a .tflite runner) was exported "
                        f"from; got model {type(model).__name__} and source_model {type(source_model).__name__}")
    if search_model is not None and (keras_model or _is_keras_model(search_model)):
        raise TypeError("search_model= is a faster stand-in for a gradient-free model (e.g. the same .tflite file on "
                        f"optimized kernels); got model {type(model).__name__} and search_model "
                        f"{type(search_model).__name__}")
    x_all = np.asarray(x)
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer or None; got n={n!r}")
        if n > len(x_all):
            raise ValueError(f"n={n} exceeds the {len(x_all)} samples given")
        x_all, y = x_all[:n], np.asarray(y)[:n]
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None; got batch_size={batch_size!r}")
    block = int(batch_size or 256)
    shard_record = None
    if shard is not None:
        shard_index, shard_count = check_shard(shard)
        start, stop = shard_bounds(len(x_all), shard_index, shard_count, block)
        shard_record = {"index": shard_index, "count": shard_count, "start": start, "stop": stop,
                        "n_total": len(x_all), "block": block,
                        "samples_sha256": samples_fingerprint(x_all, np.asarray(y))}
        x_all, y = x_all[start:stop], np.asarray(y)[start:stop]
    first_block = 0 if shard_record is None else shard_record["start"] // block
    for e in eps_list:
        x_all, labels, _ = check_attack_inputs(x_all, y, e, norm, clip_min, clip_max)

    start_all = time.perf_counter()
    if keras_model:
        # Scores from the cached compiled forward pass the attacks also use (logits: same argmax as the softmax).
        from qrobust_keras.attacks.common import PredictFn
        from qrobust_keras.attacks.gradients import forward_fn

        forward = forward_fn(model)
        predict = PredictFn(lambda a: forward(a).numpy(), batch_size or 256, name=model.name)
    else:
        predict = as_predict_fn(model, batch_size or 256)
    scores = predict(x_all)
    if keras_model:
        from qrobust_keras.attacks.common import as_int_labels

        labels = as_int_labels(labels, len(x_all), scores.shape[1])
    clean_correct = scores.argmax(axis=1) == labels
    count = len(x_all)
    searched = None if search_model is None else as_predict_fn(search_model)(x_all[:1])
    if searched is not None and searched.shape != scores[:1].shape:
        raise ValueError(f"search_model= must score the same classes as model; it gives {searched.shape[-1]} "
                         f"scores per sample, model {scores.shape[1]}")
    names, overrides, cascade, plan_settings, plan_notes = _attack_plan(
        attacks, suite, attack_kwargs, cascade, norm, scores.shape[1], keras_model, source_model, predict, x_all)

    accuracy = {a: [] for a in names}
    mean_norm: dict[str, list] = {a: [] for a in names}
    queries: dict[str, list] = {a: [] for a in names}
    seconds: dict[str, list] = {a: [] for a in names}
    robust_masks, robust_acc = [], []
    notes: dict[str, list[str]] = {}
    common: dict[str, Any] = {"verbose": 1 if verbose >= 2 else 0, "return_info": True}
    if batch_size is not None:
        common["batch_size"] = int(batch_size)
    if clip_min != 0.0 or clip_max != 1.0:
        common.update(clip_min=clip_min, clip_max=clip_max)
    bar = None
    if verbose == 1:
        from qrobust_keras._keras import keras

        bar = keras.utils.Progbar(len(names) * len(eps_list), unit_name="attack run")
    done = 0
    broken_by: list[list[str | None]] = []
    for e in eps_list:
        robust = clean_correct.copy()
        first: list[str | None] = [None if ok else "clean" for ok in clean_correct.tolist()]
        for name in names:
            attacked = np.flatnonzero(robust if cascade else clean_correct)
            survived = np.zeros(count, bool)
            t0 = time.perf_counter()
            q_mean = None
            norms, used = [np.zeros(0)], []
            if e == 0 or attacked.size == 0:
                survived[attacked] = True
            else:
                white = registry.get_attack(name).kind == "white"
                target = source_model if white and source_model is not None else \
                    (model if search_model is None else search_model)
                for k in range(0, count, block):  # one attack call per seed block (see the docstring)
                    ids = attacked[(attacked >= k) & (attacked < k + block)]
                    if not ids.size:
                        continue
                    x_adv, info = registry.run_attack(
                        name, target, x_all[ids], labels[ids], e, norm=norm, scale=scale,
                        overrides=overrides.get(name), **common, seed=block_seed(seed, first_block + k // block))
                    _check_bounds(name, x_all[ids], x_adv, e, norm, clip_min, clip_max)
                    survived[ids] = predict(x_adv).argmax(axis=1) == labels[ids]
                    norms.append(perturbation_norms(x_all[ids], x_adv, norm)[~survived[ids]])
                    if getattr(info, "queries", None) is not None:
                        used.append(np.atleast_1d(info.queries))
                    for note in getattr(info, "notes", []) or []:
                        notes.setdefault(note, [])
                        if name not in notes[note]:
                            notes[note].append(name)
                if used:
                    q_mean = float(np.mean(np.concatenate(used)))
            norms = np.concatenate(norms)
            seconds[name].append(time.perf_counter() - t0)
            for i in np.flatnonzero(robust & ~survived & clean_correct):
                first[i] = name
            robust &= survived
            accuracy[name].append(float(np.sum(robust if cascade else survived)) / count)
            mean_norm[name].append(float(norms.mean()) if norms.size else None)
            queries[name].append(q_mean)
            done += 1
            if bar is not None:
                bar.update(done, values=[("worst", float(robust.sum()) / count)])
        broken_by.append(first)
        robust_masks.append(robust.tolist())
        robust_acc.append(float(robust.sum()) / count)

    report = RobustnessReport(
        model=model_name or getattr(model, "name", None) or getattr(model, "__name__", None)
        or type(model).__name__,
        n=count, norm=norm, eps=[float(e) for e in eps_list], attacks=names,
        clean_accuracy=float(clean_correct.mean()), accuracy=accuracy, robust_accuracy=robust_acc,
        mean_norm=mean_norm, queries=queries, seconds=seconds, total_seconds=0.0,
        clean_correct=clean_correct.tolist(), robust=robust_masks, broken_by=broken_by,
        settings={"seed": seed, "scale": scale, "batch_size": batch_size, "cascade": bool(cascade),
                  "clip_min": clip_min, "clip_max": clip_max,
                  "attack_kwargs": {k: _jsonable(v) for k, v in overrides.items()},
                  "eps_labels": [format_eps(e, norm, scale) for e in eps_list], **plan_settings,
                  "model_sha256": model_fingerprint(model),
                  **({} if source_model is None else {"source_model_sha256": model_fingerprint(source_model)}),
                  **({} if shard_record is None else {"shard": shard_record}),
                  **({} if search_model is None else {"search_model": repr(search_model)})},
        notes=plan_notes + [f"{', '.join(attacks_)}: {note}" for note, attacks_ in notes.items()])
    for name, fn in (diagnostics or {}).items():
        report.attach_diagnostics(name, fn(model, x_all, labels, report))
    report.total_seconds = time.perf_counter() - start_all
    return report


def _attack_plan(attacks, suite, attack_kwargs, cascade, norm, n_classes, keras_model, source_model, predict,
                 x) -> tuple[list[str], dict, bool, dict, list[str]]:
    """(attack names, per-attack overrides, cascade, settings for the report, notes) of one evaluation."""
    notes: list[str] = []
    user = {registry.canonical_name(k): dict(v) for k, v in (attack_kwargs or {}).items()}
    if suite is None:
        names = [registry.canonical_name(a) for a in attacks]
        overrides, label = user, custom_label(names)
    else:
        plan = suite_plan(suite, n_classes)
        if suite == "standard" and is_randomized(predict, x):
            plan = suite_plan("rand", n_classes)
            notes.append("the model's predictions differ between two passes on the same inputs (random at "
                         "inference): AutoAttack's rand version ran instead of the standard one")
        names, cascade = list(plan.attacks), plan.cascade
        overrides = {name: {**plan.attack_kwargs[name], **user.get(name, {})} for name in names}
        label = suite_label(plan, user)
        if not keras_model and source_model is None:
            names = [a for a in names if registry.get_attack(a).kind == "black"]
            if not names:
                raise ValueError(f"suite {plan.name!r} has no black-box attack to run on a model without gradients; "
                                 "pass source_model= (the Keras model it was exported from)")
            label = f"black-box only ({', '.join(names)}): an upper bound, not the {plan.name} suite"
        elif source_model is not None:
            label += "; white-box attacks transferred from the source Keras model, black-box attacks on the model"
    if len(set(names)) != len(names):
        raise ValueError(f"attacks contains duplicates: {list(attacks)}")
    unused = set(user) - set(names)
    if unused:
        raise ValueError(f"attack_kwargs names attacks that are not run: {sorted(unused)}; attacks: {names}")
    for name in names:
        spec = registry.get_attack(name)
        if norm not in spec.norms:
            raise ValueError(f"attack {name!r} supports norm {' or '.join(spec.norms)}; got norm={norm!r}")
    white = [a for a in names if registry.get_attack(a).kind == "white"]
    if white and not keras_model and source_model is None:
        raise TypeError(f"white-box attacks {white} need a Keras model with gradients; got a "
                        f"{type(predict).__name__}. Pass source_model= (the Keras model it was exported from) to "
                        f"attack it by transfer, or use black-box attacks: {registry.list_attacks('black')}")
    settings = {"suite": suite, "suite_label": label, "transfer_from_source": source_model is not None}
    return names, {k: v for k, v in overrides.items() if v}, bool(cascade), settings, notes


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def _check_bounds(name: str, x: np.ndarray, x_adv: np.ndarray, eps: float, norm: str, clip_min: float,
                  clip_max: float) -> None:
    """Refuse results outside the threat model (an honest evaluation never silently accepts them)."""
    x_adv = np.asarray(x_adv)
    if x_adv.shape != x.shape:
        raise RuntimeError(f"attack {name!r} returned shape {x_adv.shape} for inputs of shape {x.shape}")
    worst = float(perturbation_norms(x, x_adv, norm).max())
    if worst > eps * (1 + 1e-6) + 1e-12 or not math.isfinite(worst):
        raise RuntimeError(f"attack {name!r} returned a perturbation of norm {worst:g} > eps={eps:g}")
    if float(x_adv.min()) < clip_min or float(x_adv.max()) > clip_max:
        raise RuntimeError(f"attack {name!r} returned values outside [{clip_min}, {clip_max}]")


def __getattr__(name: str):
    if name == "run_attacks":  # lived here before evaluation/summary.py
        from qrobust_keras.evaluation.summary import run_attacks

        return run_attacks
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
