"""The speed and strength goals the benchmarks are held to, and where their measured values are kept.

Every bench script calls :func:`record` for each ratio it prints that has a goal; the value is appended to
``bench/results.jsonl`` (one JSON object per line: goal, context, value, when, CPU, script) unless the script runs
with ``--no-record``. ``bench/summary.py`` prints the newest value of every (goal, context) against its goal, and
lists the goals never measured, so anyone can see what holds without rerunning hours of benchmarks.

Example:

>>> from _goals import GOALS, holds
>>> GOALS["pgd_vs_art"].what, holds("pgd_vs_art", 3.4)
('PGD-10 warm: our img/s / ART img/s', True)
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import platform
import sys

RESULTS = pathlib.Path(__file__).resolve().parent / "results.jsonl"


@dataclasses.dataclass(frozen=True)
class Goal:
    """One goal: ``value <op> target`` must hold (``op`` is ``">="`` or ``"<="``)."""

    what: str
    op: str
    target: float
    script: str
    issue: int


GOALS: dict[str, Goal] = {g_id: Goal(*spec) for g_id, spec in {
    # attacks (bench/attack_speed.py)
    "pgd_vs_cleverhans": ("PGD-10 warm: our img/s / cleverhans eager img/s", ">=", 1.5, "attack_speed.py", 23),
    "pgd_vs_art": ("PGD-10 warm: our img/s / ART img/s", ">=", 3.0, "attack_speed.py", 23),
    "pgd_of_bound": ("PGD warm: steps/s as a fraction of the forward+input-gradient bound", ">=", 0.8,
                     "attack_speed.py", 23),
    "apgd_of_bound": ("APGD-CE warm: steps/s as a fraction of the forward+input-gradient bound", ">=", 0.8,
                      "attack_speed.py", 23),
    "first_call_extra_s": ("first call of an attack on a new model: seconds over the warm call (tracing)",
                           "<=", 1.0, "attack_speed.py", 23),
    "time_to_strength": ("seconds our white-box cascade needs to reach cleverhans PGD-100x5 / that PGD's seconds",
                         "<=", 0.33, "attack_speed.py", 5),
    "square_bound_over_ours": ("Square: forward-bound queries/s / our queries/s", "<=", 1.1, "square_speed.py", 5),
    # the standard suite (bench/standard_suite.py)
    "suite_points_above_art": ("standard suite robust accuracy minus ART AutoAttack's (points)", "<=", 0.5,
                               "standard_suite.py", 20),
    "suite_vs_art_speed": ("ART AutoAttack seconds / our standard suite seconds", ">=", 3.0, "standard_suite.py", 20),
    # Jacobian regularization (bench/jacobian_overhead.py, bench/jacobian_fd.py)
    "jr_fused_vs_plain": ("JR on every layer, fused estimator: step time / plain step", "<=", 2.5,
                          "jacobian_overhead.py", 4),
    "jr_fused_vs_output": ("JR on every layer, fused / JR on the logits: step time", "<=", 1.1,
                           "jacobian_overhead.py", 4),
    "jr_fd_vs_plain": ("JR on every layer, finite difference: step time / plain step", "<=", 2.2,
                       "jacobian_overhead.py", 23),
    "jr_fd_norm_vs_fused": ("Jacobian norm after training with finite-difference JR / with fused JR (equal lambda)",
                            "<=", 1.1, "jacobian_fd.py", 23),
    # training (bench/training_speed.py)
    "at_pgd3_vs_qat": ("int4_at training step (PGD-3 on half of each batch) / plain QAT step of the same model",
                       "<=", 2.75, "training_speed.py", 21),
    # deployment and data (bench/tflite_runner.py, bench/data_loading.py)
    "tflite_batched_vs_loop": ("TFLiteModel.predict batched / one invoke per sample: img/s", ">=", 2.0,
                               "tflite_runner.py", 6),
    "tflite_bound_vs_batched": ("raw batched invoke / TFLiteModel.predict: img/s", "<=", 1.2, "tflite_runner.py", 6),
    "jpeg_60k_seconds": ("all 60,000 CIFAR-10 JPEGs decoded: wall seconds", "<=", 60.0, "data_loading.py", 7),
}.items()}


def holds(goal: str, value: float) -> bool:
    """Whether ``value`` meets ``GOALS[goal]``."""
    g = GOALS[goal]
    return value >= g.target if g.op == ">=" else value <= g.target


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} x{os.cpu_count()}"


def record(goal: str, value: float, context: str = "") -> str:
    """Append a measured ``value`` of ``goal`` (in ``context``: model, eps, ...) to ``bench/results.jsonl`` and
    return the printable verdict. Set ``QROBUST_BENCH_NO_RECORD=1`` (or pass ``--no-record`` to a script) to
    measure without writing."""
    if goal not in GOALS:
        raise KeyError(f"goal must be one of {sorted(GOALS)}; got goal={goal!r}")
    g = GOALS[goal]
    value = float(value)  # a numpy scalar would make "holds" a numpy bool, which json cannot write
    verdict = f"{value:.3g} (goal {g.op} {g.target:g}): {'holds' if holds(goal, value) else 'MISSED'}"
    if os.environ.get("QROBUST_BENCH_NO_RECORD") != "1":
        row = {"goal": goal, "context": context, "value": value, "holds": bool(holds(goal, value)),
               "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "cpu": _cpu(), "load1": round(os.getloadavg()[0], 2),
               "script": pathlib.Path(sys.argv[0]).name}
        with open(RESULTS, "a") as f:  # one short line per write: appends from concurrent scripts stay whole
            f.write(json.dumps(row) + "\n")
    return verdict


def no_record_flag(argv: list[str] | None) -> list[str] | None:
    """Strip ``--no-record`` from ``argv`` (default ``sys.argv[1:]``) and honour it; returns the rest."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--no-record" in args:
        args.remove("--no-record")
        os.environ["QROBUST_BENCH_NO_RECORD"] = "1"
    return args
