"""Random draws under ``tf.distribute`` that equal one process's: each replica takes its rows of the draw one
process would make for the whole global batch (:func:`replica_rows_of_draw`), so adversarial training, TRADES and the
Jacobian estimators give the same updates on several replicas as on one. Public through
:mod:`qrobust_keras.training.distribute`; here because the regularizers (below training/) need it too.

Example:

>>> from qrobust_keras._keras import tf
>>> from qrobust_keras._replicas import replica_rows_of_draw
>>> draw = lambda shape: tf.random.stateless_uniform(shape, seed=[1, 2])
>>> bool(tf.reduce_all(replica_rows_of_draw(draw, [4, 3]) == draw([4, 3])))   # one replica: the draw itself
True
"""

from __future__ import annotations

from typing import Any

from qrobust_keras._keras import tf

__all__ = ["global_rows", "replica_rows_of_draw"]


def global_rows(local_n: Any) -> tuple[Any, Any]:
    """``(offset, total)``: where this replica's ``local_n`` rows sit in the global batch, and its size.

    The global batch is split across replicas in replica order, evenly: replica ``r`` holds rows
    ``[r * local_n, (r + 1) * local_n)`` of ``total = replicas * local_n``. No collective op is used, so this works
    inside ``tf.cond`` (where a cross-replica op is not allowed); a last partial batch split unevenly is placed as if
    even (its draws are still fresh, only not those of one process). Without several replicas: ``(0, local_n)``.
    """
    local_n = tf.cast(local_n, tf.int32)
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return tf.constant(0, tf.int32), local_n
    replica = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
    return replica * local_n, ctx.num_replicas_in_sync * local_n


def replica_rows_of_draw(draw: Any, local_shape: Any) -> Any:
    """This replica's rows of ``draw(global_shape)``: the random tensor one process would draw for the whole
    global batch, so that training under a strategy draws, sample by sample, what one process draws.

    ``draw`` maps a shape (first axis: rows) to a tensor and must be stateless (same seed, same shape, same values);
    ``local_shape`` is the shape of this replica's part. Costs one draw of the global batch per replica.
    """
    local_shape = tf.convert_to_tensor(local_shape, tf.int32)
    offset, total = global_rows(local_shape[0])
    full = draw(tf.concat([tf.reshape(total, [1]), local_shape[1:]], axis=0))
    return full[offset:offset + local_shape[0]]
