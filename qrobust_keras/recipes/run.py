"""The resumable run folder: :func:`fit_recipe` trains a recipe into a folder that survives a kill, and the names
of the files in it, which every reader of a run folder (the CLI, the demo, reports) uses.

A run folder holds :data:`RUN_CONFIG` (the recipe and facts about the run), :data:`HISTORY_CSV` (one row per finished
epoch, :class:`HistoryCSV`), :data:`LAST_MODEL` (the model after the latest epoch, :class:`SaveLast`),
:data:`BACKUP_DIR` (Keras' ``BackupAndRestore`` state while training) and, once complete, :data:`FINAL_MODEL`.

Example:

>>> import numpy as np
>>> from qrobust_keras._keras import keras
>>> from qrobust_keras.recipes.run import HISTORY_CSV, HistoryCSV, read_history
>>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
>>> model.compile("adam", "sparse_categorical_crossentropy")
>>> x, y = np.zeros((8, 4), np.float32), np.zeros(8, np.int64)
>>> _ = model.fit(x, y, epochs=2, verbose=0, callbacks=[HistoryCSV(HISTORY_CSV)])
>>> [row["epoch"] for row in read_history(HISTORY_CSV)], HISTORY_CSV
([0, 1], 'history.csv')
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from qrobust_keras._checks import check_int
from qrobust_keras._files import atomic_save, atomic_write
from qrobust_keras._keras import keras
from qrobust_keras.models.io import copy_weights_by_name
from qrobust_keras.recipes.build import build_recipe, train_dataset
from qrobust_keras.recipes.catalog import _MLCOMMONS_WIDTH, Recipe
from qrobust_keras.training.step import create_fit_variables

__all__ = ["RUN_CONFIG", "HISTORY_CSV", "FINAL_MODEL", "LAST_MODEL", "BACKUP_DIR", "fit_recipe", "read_history",
           "HistoryCSV", "SaveLast", "save_model_atomic"]

RUN_CONFIG = "run_config.json"
HISTORY_CSV = "history.csv"
FINAL_MODEL = "model.h5"
LAST_MODEL = "last.h5"
BACKUP_DIR = "backup"


def save_model_atomic(model: keras.Model, path: str) -> None:
    """Save ``model`` as .h5 through a temporary file and ``os.replace``, so a kill never leaves a broken file."""
    atomic_save(path, lambda tmp: model.save(tmp, include_optimizer=False))


class HistoryCSV(keras.callbacks.Callback):
    """Write one row per finished epoch to a CSV file, rewriting it atomically each epoch.

    Unlike ``keras.callbacks.CSVLogger(append=True)``, rows of epochs that a resumed run repeats are replaced, not
    duplicated: when epoch ``e`` ends, rows with epoch >= ``e`` are dropped before the new row is written. Each row
    also carries the learning rate, the wall seconds of the epoch and its CPU seconds (``time.process_time``: every
    thread of the process, none of the time it was stopped or waiting for a shared machine).
    """

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self._start = 0.0
        self._cpu = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        import time

        self._start, self._cpu = time.time(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        import csv
        import io
        import os
        import time

        rows = read_history(self.path) if os.path.exists(self.path) else []
        rows = [r for r in rows if int(r["epoch"]) < epoch]
        row = {"epoch": epoch}
        try:
            row["lr"] = float(keras.backend.get_value(self.model.optimizer.learning_rate))
        except (AttributeError, TypeError, ValueError):
            pass
        row["seconds"] = round(time.time() - self._start, 2)
        row["cpu_seconds"] = round(time.process_time() - self._cpu, 2)
        row.update({k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0})
        rows.append(row)
        keys: list[str] = []
        for r in rows:
            keys += [k for k in r if k not in keys]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r.get(k, "") for k in keys})
        atomic_write(self.path, buf.getvalue())


class SaveLast(keras.callbacks.Callback):
    """Save the model to ``path`` (atomically) after every epoch, so the latest weights can be evaluated while a
    long run continues."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        save_model_atomic(self.model, self.path)


def read_history(path: str) -> list[dict]:
    """Rows of a history CSV written by :class:`HistoryCSV` (numbers as floats, ``epoch`` as int)."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        row = {}
        for k, v in r.items():
            if v in ("", None):
                continue
            try:
                row[k] = int(v) if k == "epoch" else float(v)
            except ValueError:
                row[k] = v
        out.append(row)
    return out


def _fit_finished(out: str, epochs: int) -> bool:
    """True when the run in ``out`` finished ``fit``: every epoch has its history row, ``last.h5`` exists and
    Keras' backup is gone (``BackupAndRestore`` deletes its files only when ``fit`` returns, after the last epoch's
    callbacks, so ``last.h5`` is then the model after the final epoch)."""
    import os

    history, last = os.path.join(out, HISTORY_CSV), os.path.join(out, LAST_MODEL)
    backup_files = [f for _, _, files in os.walk(os.path.join(out, BACKUP_DIR)) for f in files]
    if backup_files or not (os.path.exists(history) and os.path.exists(last)):
        return False
    done = {int(row["epoch"]) for row in read_history(history) if "epoch" in row}
    return done >= set(range(epochs))


def _initial_model(init_weights: str | keras.Model, recipe: Recipe) -> tuple[keras.Model, str]:
    """The model behind ``fit_recipe(init_weights=...)`` and how ``run_config.json`` records it."""
    import os

    if isinstance(init_weights, keras.Model):
        return init_weights, f"model object {init_weights.name!r}"
    if not isinstance(init_weights, (str, os.PathLike)):
        raise ValueError(f"init_weights must be a saved model path, 'mlcommons[:PATH]' or a keras.Model; got "
                         f"{type(init_weights).__name__} {init_weights!r}")
    init_weights = os.fspath(init_weights)
    if init_weights == "mlcommons" or init_weights.startswith("mlcommons:"):
        from qrobust_keras.models import load_mlcommons

        path = init_weights.partition(":")[2] or None
        if recipe.filters is not None and recipe.filters != _MLCOMMONS_WIDTH[recipe.model]:
            raise ValueError(f"the official MLCommons weights fit filters={_MLCOMMONS_WIDTH[recipe.model]} only; "
                             f"this recipe has filters={recipe.filters}")
        model = load_mlcommons(recipe.model, path, fold_input_scale=True)
        return model, "mlcommons:" + os.path.abspath(path or os.environ["QROBUST_MLCOMMONS_DIR"])
    from qrobust_keras.models import load_model

    if init_weights.startswith("zoo:"):  # a shipped model (sha256 checked): e.g. fine-tune the 2/255 entry at 8/255
        from qrobust_keras import zoo

        path = zoo.resolve(init_weights)
        return load_model(path, compile=False), f"{init_weights} (sha256 {zoo.sha256_file(path)})"
    if not os.path.exists(init_weights):
        raise FileNotFoundError(f"init_weights={init_weights!r} does not exist; pass a saved model (.h5/.keras file "
                                "or SavedModel folder), e.g. an earlier run's model.h5, 'zoo:NAME' for a zoo "
                                "model or 'mlcommons[:PATH]' for the official MLCommons Tiny weights")
    return load_model(init_weights, compile=False), os.path.abspath(init_weights)


def fit_recipe(recipe: Recipe, train: tuple, validation: tuple | None, out: str, *,
               extra_callbacks: list | None = None, verbose: int = 1, run_info: dict | None = None,
               clip_range: tuple[float, float] | None = None,
               init_weights: str | keras.Model | None = None, strategy: Any = None,
               robust_val_eps: float | None = None, robust_val_samples: int = 256) -> keras.Model:
    """Train a recipe into the run folder ``out``, resumable after a kill.

    Writes ``out/run_config.json`` (the recipe and ``run_info``), ``out/history.csv`` (one row per finished epoch:
    metrics, validation metrics, lr, seconds; rows of repeated epochs are replaced), ``out/last.h5`` after every
    epoch, ``out/backup/`` (``keras.callbacks.BackupAndRestore``: weights, optimizer state and epoch counter; deleted
    when training completes) and finally ``out/model.h5``. Running it again with the same folder resumes at the
    first unfinished epoch; a finished run is not trained again, and a run killed after its last epoch but before
    ``model.h5`` was written continues from ``last.h5`` with the steps after ``fit`` (no epoch is repeated).

    Resuming restores the weights, the optimizer state and the epoch counter exactly; the input order,
    augmentation and the stochastic quantizers' noise of the epochs after a resume are fresh draws from the same
    seed rather than the ones the uninterrupted run would have drawn (``tf.data`` and TensorFlow's random
    generators restart with the process), so a resumed run ends near but not bit-identical to an uninterrupted
    one. Mid-epoch kills repeat only the unfinished epoch.

    Args:
        recipe: the recipe (its ``epochs`` is the total number of epochs).
        train: ``(x, y)`` training data: uint8 or [0, 1] float images, or float features.
        validation: ``(x, y)`` evaluated after every epoch, or None.
        out: run folder (created).
        extra_callbacks: appended after the library's callbacks (after ``history.csv`` and ``last.h5`` are
            written).
        verbose: Keras fit verbosity (0, 1, 2).
        run_info: extra JSON-serializable facts recorded in ``run_config.json`` (data source, sizes).
        clip_range: input range for adversarial training; default [0, 1] for images, the training data's range
            for features.
        init_weights: a saved model (e.g. an earlier run's ``model.h5``) or a model object whose weights start
            the training, copied layer by layer by name (:func:`copy_weights_by_name`): fine-tuning, e.g.
            adversarial fine-tuning of a trained ``stq_jr`` model with ``stq_jr_at`` (Jeddi et al. 2020, arXiv
            2012.13628). ``"mlcommons"`` or ``"mlcommons:PATH"`` starts from the official MLCommons Tiny float
            weights (:func:`~qrobust_keras.models.load_mlcommons` with ``fold_input_scale=True``; PATH defaults to
            ``QROBUST_MLCOMMONS_DIR``): quantization-aware training from a trained float model, the usual QAT
            workflow (Jacob et al. 2018, arXiv 1712.05877). A resumed run continues from its backup instead.
            Default: the recipe's own ``init_weights`` (``"int4_at"``: ``"mlcommons"``); ``"none"`` trains from
            random weights (the run records the recipe with ``init_weights=None``).
        strategy: ``"default"`` (None), ``"mirrored"``, ``"multi-worker"`` or a ``tf.distribute.Strategy`` (see
            :mod:`qrobust_keras.training.distribute`): the model is built in its scope, the data are sharded per
            worker by ``tf.data`` with the recipe's global batch size unchanged, BatchNorm statistics are taken over
            the global batch, and only the chief writes ``out`` (other workers write to scratch folders they
            delete). Every worker of a multi-worker job runs the same call; a killed job resumes when it is started
            again with the same command (``BackupAndRestore`` works across workers). Create a multi-worker strategy
            before any other TensorFlow op of the process (pass the object), as TensorFlow requires.
        robust_val_eps: when given, the accuracy under PGD-10 at this L-inf budget (input units) on the first
            ``robust_val_samples`` validation samples is measured after every epoch and written to ``history.csv``
            as ``val_pgd_accuracy`` (:class:`~qrobust_keras.evaluation.RobustValidation`): the monitor that shows
            catastrophic overfitting of single-step adversarial training and robust overfitting.
        robust_val_samples: how many validation samples ``robust_val_eps`` attacks (default 256).

    Returns:
        The trained model (also saved as ``out/model.h5``).
    """
    import json
    import os
    import time

    from qrobust_keras.training.distribute import make_strategy, remove_worker_dir, sync_batchnorm, worker_dir

    strategy = make_strategy(strategy)
    if isinstance(init_weights, str) and init_weights.lower() == "none":
        init_weights = None
        if recipe.init_weights is not None:
            recipe = dataclasses.replace(recipe, init_weights=None,
                                         notes=recipe.notes + " Trained from random weights (init_weights='none').")
    os.makedirs(out, exist_ok=True)
    # every worker reads the run's state from `out`; only the chief writes there (`write` is a scratch folder on
    # the other workers)
    write = worker_dir(out, strategy)
    os.makedirs(write, exist_ok=True)
    final = os.path.join(out, FINAL_MODEL)
    x, y = train
    if clip_range is None:
        clip_range = (0.0, 1.0) if recipe.is_image else (float(np.min(x)), float(np.max(x)))
    config_path = os.path.join(out, RUN_CONFIG)
    previous = {}
    if os.path.exists(config_path):
        with open(config_path) as f:
            previous = json.load(f)
        defaults = {f.name: f.default for f in dataclasses.fields(Recipe)}
        old = previous.get("recipe") or {}
        # notes only describe the recipe: a library update that rewords them must not block a resume
        changed = sorted(k for k, v in recipe.to_dict().items() if k != "notes" and
                         (old[k] != v if k in old else v != defaults.get(k)))
        if old and changed:
            raise ValueError(f"run folder {out!r} holds a run of a different recipe (fields {changed} differ); use a "
                             "new --out folder or the same settings to resume")
    if os.path.exists(final):
        from qrobust_keras.models import load_model

        if verbose:
            print(f"qrobust: {final} exists: the run is complete, nothing to train")
        return load_model(final)
    config = {"recipe": recipe.to_dict(), "clip_range": list(clip_range), "run_info": run_info or {},
              "started": previous.get("started", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
              "status": "training"}
    with strategy.scope():
        model, callbacks = build_recipe(recipe, clip_range)
        if strategy.num_replicas_in_sync > 1:
            config["sync_batchnorm"] = sync_batchnorm(model)
    config["strategy"] = {"name": type(strategy).__name__, "replicas": int(strategy.num_replicas_in_sync)}
    from_recipe = init_weights is None and recipe.init_weights is not None
    if init_weights is None:
        init_weights = recipe.init_weights
    if init_weights is not None:
        try:
            source, described = _initial_model(init_weights, recipe)
        except (ValueError, FileNotFoundError) as exc:
            if not from_recipe:
                raise
            raise type(exc)(f"recipe {recipe.name!r} starts from init_weights={init_weights!r}, which failed: {exc}. "
                            "Pass init_weights='mlcommons:DIR' (qrobust train --init-weights mlcommons:DIR), set "
                            "QROBUST_MLCOMMONS_DIR, or use init_weights='none' (--init-weights none) to train from "
                            "random weights") from exc
        copied = copy_weights_by_name(source, model)
        config["init_weights"] = {"path": described, "layers": len(copied)}
    monitors = []
    if robust_val_eps is not None:
        if validation is None or not len(validation[0]):
            raise ValueError(f"robust_val_eps={robust_val_eps!r} needs validation samples; got none (validation is "
                             "None or empty)")
        from qrobust_keras.data.datasets import to_float
        from qrobust_keras.evaluation import RobustValidation

        n = check_int("robust_val_samples", robust_val_samples)
        monitors = [RobustValidation(to_float(np.asarray(validation[0][:n])), np.asarray(validation[1][:n]),
                                     eps=robust_val_eps, clip_min=clip_range[0], clip_max=clip_range[1],
                                     seed=recipe.seed)]
        config["robust_validation"] = {"eps": float(robust_val_eps), "samples": int(min(n, len(validation[0]))),
                                       "attack": "PGD-10, step eps/4, random start"}
    atomic_write(os.path.join(write, RUN_CONFIG), json.dumps(config, indent=2))
    # BackupAndRestore gets the same folder on every worker: tf_keras keeps the non-chief copies apart itself
    # the monitors run before the history is written, so that what they log (val_pgd_accuracy) lands in history.csv
    callbacks = [keras.callbacks.BackupAndRestore(os.path.join(out, BACKUP_DIR)), *callbacks, *monitors,
                 HistoryCSV(os.path.join(write, HISTORY_CSV)), SaveLast(os.path.join(write, LAST_MODEL)),
                 *(extra_callbacks or [])]
    val = None if validation is None else _sharded(train_dataset(recipe, *validation, training=False), strategy)
    start = time.time()
    if _fit_finished(out, recipe.epochs):
        # killed after the last epoch but before model.h5: last.h5 holds the finished fit (BackupAndRestore has
        # already deleted its state), so only the steps after fit remain
        model.load_weights(os.path.join(out, LAST_MODEL))
        if verbose:
            print(f"qrobust: {out} finished all {recipe.epochs} epochs before it stopped; continuing from "
                  f"{LAST_MODEL} without training again")
    else:
        if strategy.num_replicas_in_sync == 1:
            with strategy.scope():
                create_fit_variables(model, next(iter(train_dataset(recipe, x[:2], y[:2], training=False))))
        model.fit(_sharded(train_dataset(recipe, x, y), strategy), validation_data=val, epochs=recipe.epochs,
                  callbacks=callbacks, verbose=verbose)
    if recipe.bn_recalibration:
        from qrobust_keras.training.bn_recalibration import recalibrate_batchnorm

        pick = np.sort(np.random.default_rng(recipe.seed).permutation(len(x))[:recipe.bn_recalibration])
        shifts = recalibrate_batchnorm(model, train_dataset(recipe, x[pick], y[pick], training=False))
        config["bn_recalibration"] = {"samples": int(len(pick)), "std_change": shifts}
        if val is not None:
            config["bn_recalibration"]["val_accuracy"] = float(model.evaluate(val, verbose=0, return_dict=True)
                                                               .get("accuracy", float("nan")))
    save_model_atomic(model, os.path.join(write, FINAL_MODEL))
    config.update(status="complete", finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  seconds_last_session=round(time.time() - start, 1))
    atomic_write(os.path.join(write, RUN_CONFIG), json.dumps(config, indent=2))
    remove_worker_dir(out, strategy)
    return model


def _sharded(dataset: Any, strategy: Any) -> Any:
    """``dataset`` as the workers of ``strategy`` split it: each worker runs the whole pipeline (same shuffle and
    augmentation seeds) and keeps its part of every global batch (``AutoShardPolicy.DATA``; the default FILE policy
    cannot shard in-memory arrays). One process: unchanged."""
    if getattr(strategy, "cluster_resolver", None) is None:
        return dataset
    from qrobust_keras._keras import tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)

