"""Robustness evaluation: attacks by name at several budgets, worst-case reports, the honesty tools
(gradient-masking diagnostics, transferability, value shift, gradient misalignment) and the robust-validation
monitor for training."""

from qrobust_keras.evaluation.masking import (GradientMaskingReport, MaskingCheck, diagnose_gradient_masking,
                                              input_gradients, masking_diagnostic)
from qrobust_keras.evaluation.misalignment import GradientMisalignment, gradient_misalignment
from qrobust_keras.evaluation.report import RobustnessReport, evaluation_markdown, format_eps, plot_accuracy_vs_eps
from qrobust_keras.evaluation.robust_validation import RobustValidation
from qrobust_keras.evaluation.robustness import DEFAULT_WHITE_BOX, evaluate_robustness
from qrobust_keras.evaluation.summary import merge_summaries, run_attacks, write_evaluation
from qrobust_keras.evaluation.transferability import TransferabilityMatrix, transferability
from qrobust_keras.evaluation.value_shift import LayerShift, ValueShiftReport, value_shift

__all__ = ["DEFAULT_WHITE_BOX", "RobustnessReport", "evaluate_robustness", "run_attacks", "evaluation_markdown",
           "format_eps", "plot_accuracy_vs_eps", "merge_summaries", "write_evaluation",
           "diagnose_gradient_masking", "GradientMaskingReport", "MaskingCheck", "masking_diagnostic",
           "input_gradients", "transferability", "TransferabilityMatrix", "value_shift", "ValueShiftReport",
           "LayerShift", "gradient_misalignment", "GradientMisalignment", "RobustValidation"]
