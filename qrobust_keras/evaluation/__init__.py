"""Robustness evaluation: run attacks by name at several budgets and report per-attack and worst-case accuracy."""

from qrobust_keras.evaluation.report import RobustnessReport
from qrobust_keras.evaluation.robustness import DEFAULT_WHITE_BOX, evaluate_robustness

__all__ = ["DEFAULT_WHITE_BOX", "RobustnessReport", "evaluate_robustness"]
