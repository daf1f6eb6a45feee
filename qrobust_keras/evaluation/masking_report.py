"""The result types of :func:`~qrobust_keras.evaluation.masking.diagnose_gradient_masking`: one
:class:`MaskingCheck` per sanity check and the :class:`GradientMaskingReport` that holds them, with its markdown,
JSON and the compact form :class:`~qrobust_keras.evaluation.RobustnessReport` attaches as a diagnostic.

Example:

>>> from qrobust_keras.evaluation.masking_report import GradientMaskingReport, MaskingCheck
>>> check = MaskingCheck("gradient_health", False, {"zero_gradient_samples": 0.0}, "gradients are finite")
>>> report = GradientMaskingReport([check], "net", 8 / 255, 10, 9, 0.9, settings={})
>>> report.flagged, report["gradient_health"].status
(False, 'passed')
"""

from __future__ import annotations

import dataclasses
from typing import Any

from qrobust_keras.evaluation.common import dump_json, fmt, markdown_table

__all__ = ["MaskingCheck", "GradientMaskingReport", "CHECK_NAMES"]

CHECK_NAMES = ("iterative_vs_single_step", "white_box_vs_black_box", "white_box_vs_transfer", "unbounded_eps",
               "more_steps_restarts", "gradient_health", "eot")


@dataclasses.dataclass
class MaskingCheck:
    """One sanity check.

    Attributes:
        name: one of :data:`CHECK_NAMES`.
        flagged: True when the check found a sign of gradient masking.
        numbers: the measured values the verdict rests on (success rates in [0, 1], fractions, settings).
        explanation: one line saying what was compared and what the result means.
        applicable: False when the check could not apply (no float twin given, deterministic model for EOT);
            such a check is neither passed nor flagged.
    """

    name: str
    flagged: bool
    numbers: dict
    explanation: str
    applicable: bool = True

    @property
    def passed(self) -> bool:
        return self.applicable and not self.flagged

    @property
    def status(self) -> str:
        return "n/a" if not self.applicable else ("FLAGGED" if self.flagged else "passed")

    def to_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "flagged": self.flagged, "passed": self.passed,
                "applicable": self.applicable, "numbers": dict(self.numbers), "explanation": self.explanation}


@dataclasses.dataclass
class GradientMaskingReport:
    """Result of :func:`diagnose_gradient_masking`.

    Attributes:
        checks: the :class:`MaskingCheck` list, in the order of :data:`CHECK_NAMES`.
        model_name: name of the diagnosed model.
        eps: L-inf budget of the checks, in input units.
        n_samples: samples given; n_correct: those the model classified correctly (the checks attack only these).
        clean_accuracy: n_correct / n_samples.
        settings: the attack settings used (steps, queries, tolerance, ...).
        seconds: wall time of the whole diagnosis.
    """

    checks: list
    model_name: str
    eps: float
    n_samples: int
    n_correct: int
    clean_accuracy: float
    settings: dict
    seconds: float = 0.0

    @property
    def flagged(self) -> bool:
        """True when any check flags gradient masking."""
        return any(c.flagged for c in self.checks)

    @property
    def flagged_checks(self) -> list:
        return [c.name for c in self.checks if c.flagged]

    def __getitem__(self, name: str) -> MaskingCheck:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(f"no check named {name!r}; checks: {[c.name for c in self.checks]}")

    def to_dict(self) -> dict:
        return {"model": self.model_name, "eps": self.eps, "n_samples": self.n_samples, "n_correct": self.n_correct,
                "clean_accuracy": self.clean_accuracy, "flagged": self.flagged,
                "flagged_checks": self.flagged_checks, "settings": dict(self.settings), "seconds": self.seconds,
                "checks": [c.to_dict() for c in self.checks]}

    def to_json(self, path: Any = None) -> str:
        """JSON text of :meth:`to_dict` (NaN -> null); written atomically to ``path`` when given."""
        return dump_json(self.to_dict(), path)

    def to_diagnostic(self) -> dict:
        """Compact dict for ``RobustnessReport.attach_diagnostics``: verdict, per-check status and ``"flags"``."""
        return {"flagged": self.flagged, "eps": self.eps, "n_correct": self.n_correct,
                "checks": {c.name: c.status for c in self.checks},
                "flags": [f"{c.name}: {c.explanation}" for c in self.checks if c.flagged]}

    def to_markdown(self) -> str:
        """A markdown section: verdict line and one table row per check."""
        verdict = ("**gradient masking suspected** (flagged: " + ", ".join(self.flagged_checks) + ")"
                   if self.flagged else "no sign of gradient masking in these checks")
        head = (f"### Gradient-masking diagnostics: {self.model_name}\n\n"
                f"eps = {self.eps:.4g} (L-inf), {self.n_correct}/{self.n_samples} correctly classified samples "
                f"attacked (clean accuracy {self.clean_accuracy:.3f}); {verdict}.\n\n")
        rows = []
        for c in self.checks:
            nums = ", ".join(f"{k}={fmt(v)}" for k, v in c.numbers.items() if not isinstance(v, (list, dict)))
            rows.append([c.name, c.status, nums, c.explanation])
        return head + markdown_table(["check", "status", "numbers", "meaning"], rows) + "\n"


