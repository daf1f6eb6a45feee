"""Training on several devices or machines with ``tf.distribute``: which strategy, who writes the run folder, and
BatchNorm statistics over the global batch.

``fit_recipe(..., strategy=...)`` and ``qrobust train --strategy`` take one of :data:`STRATEGIES`:

* ``"default"``: one process, one device (TensorFlow's default strategy).
* ``"mirrored"``: ``MirroredStrategy`` over the GPUs (or devices) of one machine.
* ``"multi-worker"``: ``MultiWorkerMirroredStrategy`` across processes or machines, configured by the
  ``TF_CONFIG`` environment variable (checked by :func:`check_tf_config`). Every worker runs the same command; the
  chief writes the run folder, the others write to :func:`worker_dir` scratch folders that they delete, as the
  TensorFlow multi-worker guide prescribes. ``MultiWorkerMirroredStrategy`` needs the Keras 2 API (tf_keras): it
  does not work under Keras 3 (keras-team/keras#20585).

With more than one replica, :func:`sync_batchnorm` makes every BatchNormalization layer compute its statistics over
the global batch, so a step equals the single-process step on the same global batch (per-replica statistics would
normalise each replica's slice on its own).

Example:

>>> from qrobust_keras.training.distribute import check_tf_config, make_strategy
>>> make_strategy("default").num_replicas_in_sync
1
>>> config = '{"cluster": {"worker": ["127.0.0.1:12345", "127.0.0.1:12346"]}, "task": {"type": "worker", "index": 1}}'
>>> check_tf_config(config)["task"]
{'type': 'worker', 'index': 1}
>>> check_tf_config('{"cluster": {"worker": ["h:1"]}, "task": {"type": "worker", "index": 3}}')
Traceback (most recent call last):
...
ValueError: TF_CONFIG task index 3 is out of range: the cluster has 1 'worker' task(s) (indices 0..0)
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from qrobust_keras._keras import keras, tf
from qrobust_keras._replicas import global_rows, replica_rows_of_draw  # re-exported: the regularizers use them too

__all__ = ["STRATEGIES", "make_strategy", "check_tf_config", "is_chief", "worker_dir", "remove_worker_dir",
           "sync_batchnorm", "global_rows", "replica_rows_of_draw"]

STRATEGIES = ("default", "mirrored", "multi-worker")


def check_tf_config(text: str | None = None) -> dict[str, Any]:
    """Parse and check a ``TF_CONFIG`` (default: the environment variable) for multi-worker training.

    Checked: valid JSON; a ``cluster`` mapping job names (``chief``, ``worker``, ``evaluator``, ``ps``) to non-empty
    lists of ``host:port`` strings, with at least one ``worker`` or ``chief``; a ``task`` with a ``type`` that is a
    job of the cluster and an integer ``index`` inside it; no address twice.

    Raises:
        ValueError: naming what is wrong and what is accepted.
    """
    text = os.environ.get("TF_CONFIG") if text is None else text
    if not text:
        raise ValueError("multi-worker training needs the TF_CONFIG environment variable, e.g. TF_CONFIG='{\"cluster\":"
                         " {\"worker\": [\"host1:12345\", \"host2:12345\"]}, \"task\": {\"type\": \"worker\", "
                         "\"index\": 0}}' (the same cluster on every worker, its own task index on each)")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"TF_CONFIG is not valid JSON ({exc.msg} at character {exc.pos}): {text!r}") from None
    if not isinstance(config, dict):
        raise ValueError(f"TF_CONFIG must be a JSON object with 'cluster' and 'task'; got {text!r}")
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError(f"TF_CONFIG needs a 'cluster' object mapping job names to address lists; got {cluster!r}")
    seen: set = set()
    for job, addresses in cluster.items():
        if job not in ("chief", "worker", "evaluator", "ps"):
            raise ValueError(f"TF_CONFIG cluster job {job!r} is unknown; accepted: chief, worker, evaluator, ps")
        if not isinstance(addresses, list) or not addresses:
            raise ValueError(f"TF_CONFIG cluster[{job!r}] must be a non-empty list of 'host:port'; got {addresses!r}")
        for address in addresses:
            host, _, port = str(address).rpartition(":")
            if not isinstance(address, str) or not host or not port.isdigit():
                raise ValueError(f"TF_CONFIG cluster[{job!r}] address {address!r} is not 'host:port'")
            if address in seen:
                raise ValueError(f"TF_CONFIG lists the address {address!r} twice; every task needs its own port")
            seen.add(address)
    if "worker" not in cluster and "chief" not in cluster:
        raise ValueError("TF_CONFIG cluster has no 'worker' (or 'chief') tasks to train on")
    if "ps" in cluster:
        raise ValueError("TF_CONFIG has 'ps' tasks: parameter-server training is not supported; use workers only "
                         "(MultiWorkerMirroredStrategy)")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError(f"TF_CONFIG needs a 'task' object with 'type' and 'index' (this worker); got {task!r}")
    kind, index = task["type"], task["index"]
    if kind not in cluster:
        raise ValueError(f"TF_CONFIG task type {kind!r} is not a job of the cluster ({', '.join(cluster)})")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise ValueError(f"TF_CONFIG task index {index!r} is out of range: the cluster has {len(cluster[kind])} "
                         f"{kind!r} task(s) (indices 0..{len(cluster[kind]) - 1})")
    return config


def make_strategy(name: str | Any = "default") -> Any:
    """The ``tf.distribute`` strategy called ``name`` (one of :data:`STRATEGIES`); a strategy object is returned
    as is. ``"multi-worker"`` checks ``TF_CONFIG`` first and must run before any other TensorFlow op of the
    process (TensorFlow's rule for collective ops).

    Raises:
        ValueError: an unknown name, or a bad ``TF_CONFIG``.
    """
    if isinstance(name, tf.distribute.Strategy):
        return name
    if name in (None, "default"):
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        check_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"strategy must be one of {STRATEGIES} or a tf.distribute.Strategy; got strategy={name!r}")


def _task(strategy: Any) -> tuple[str | None, int | None]:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return None, None
    return resolver.task_type, resolver.task_id


def is_chief(strategy: Any) -> bool:
    """Whether this process writes the run folder: always in one process; in a multi-worker cluster, the ``chief``
    task, or worker 0 when the cluster has no chief."""
    task_type, task_id = _task(strategy)
    if task_type is None:
        return True
    has_chief = "chief" in strategy.cluster_resolver.cluster_spec().as_dict()
    return task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief)


def worker_dir(out: str, strategy: Any) -> str:
    """Where this process writes: ``out`` for the chief, a scratch folder ``out/.worker-TYPE-ID`` for the others
    (they save like the chief, since saving may run collective ops, but nothing of theirs is kept)."""
    if is_chief(strategy):
        return out
    task_type, task_id = _task(strategy)
    return os.path.join(out, f".worker-{task_type}-{task_id}")


def remove_worker_dir(out: str, strategy: Any) -> None:
    """Delete a non-chief's scratch folder (nothing for the chief)."""
    folder = worker_dir(out, strategy)
    if folder != out:
        shutil.rmtree(folder, ignore_errors=True)


def sync_batchnorm(model: keras.Model) -> list[str]:
    """Make every BatchNormalization layer of ``model`` (QKeras' included) compute its training statistics over
    the global batch of all replicas (``synchronized=True``); returns the names of the layers changed.

    Call it before the first training step; saved models keep the flag in their config and load anywhere (it has
    no effect without several replicas).
    """
    changed = []
    for layer in model.submodules:
        if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized:
            layer.synchronized = True
            layer.fused = False  # the fused kernel cannot all-reduce the statistics
            changed.append(layer.name)
    return changed

