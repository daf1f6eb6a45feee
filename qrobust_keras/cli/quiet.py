"""TensorFlow's start-up, quietly: the ``qrobust`` command hides TensorFlow's C++ log lines unless ``--verbose 2``.

Example:

>>> from qrobust_keras.cli.quiet import wants_tf_logs
>>> wants_tf_logs(["evaluate", "m.h5", "--verbose", "2"]), wants_tf_logs(["--help"])
(True, False)
"""

from __future__ import annotations

import os
import sys

__all__ = ["import_tensorflow_quietly", "wants_tf_logs", "show_tf_logs"]

_SHOW_TF_LOGS = False


def show_tf_logs(show: bool) -> None:
    """Whether the next TensorFlow import may print its start-up lines (``--verbose 2``)."""
    global _SHOW_TF_LOGS
    _SHOW_TF_LOGS = bool(show)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow (through :mod:`qrobust_keras._keras`) without its C++ start-up lines (oneDNN, CUDA, absl)
    unless ``--verbose 2`` asked for them. Those lines are written to file descriptor 2 by native code before any
    Python logging setting applies, so stderr is pointed at /dev/null for the import only."""
    if "qrobust_keras._keras" in sys.modules:
        return
    if _SHOW_TF_LOGS:
        import qrobust_keras._keras  # noqa: F401
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import qrobust_keras._keras as _keras
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    _keras.tf.get_logger().setLevel("ERROR")



def wants_tf_logs(argv: list[str]) -> bool:
    """Whether the command line asks for ``--verbose 2`` (read before parsing: ``--policy`` loads TensorFlow while
    the arguments are parsed)."""
    for i, arg in enumerate(argv):
        if arg == "--verbose" and i + 1 < len(argv) and argv[i + 1].strip() == "2":
            return True
        if arg.replace(" ", "") == "--verbose=2":
            return True
    return False
