"""Named evaluation suites: AutoAttack's standard and rand versions, and the quick smoke-test suite.

The field's accepted evaluation is AutoAttack (Croce & Hein 2020, arXiv 2003.01690). Its standard version runs, as a
cascade (each attack only on the points all earlier attacks failed to break):

| attack | settings |
|---|---|
| apgd-ce | APGD on cross-entropy, 100 steps, 1 restart |
| apgd-t | APGD on the targeted DLR loss, 9 target classes x 100 steps, 1 restart each |
| fab-t | targeted FAB, 9 target classes x 100 steps, 1 restart each |
| square | Square attack, 5,000 queries, p_init 0.8, 5 restarts (each on the points earlier runs left) |

Square's restarts are where this suite differs from the authors' standard version (1 restart) and follows ART's
``AutoAttack`` (5): on this library's adversarially trained int4 ResNet-8, whose straight-through gradients mislead,
a second Square run broke 5 of the 99 points that APGD-CE and a first Square run left at 1/255 (docs/attacks.md).
A suite weaker than the one readers compare with would overstate robustness.

Its rand version, for models whose output is random at inference (stochastic quantizers sampling at inference,
randomized defenses), runs APGD-CE and APGD-DLR with gradients averaged over 20 draws (EOT), 100 steps, 1 restart.
``suite="standard"`` switches to it when :func:`is_randomized` finds two forward passes on the same inputs differ.
The quick suite is the short default of this library's early reports (FGSM, PGD-20, C&W-inf, APGD-CE-20,
Square-300); it is labelled "quick (not standard)" everywhere it is shown.

Example:

>>> from qrobust_keras.evaluation.suite import suite_plan
>>> plan = suite_plan("standard", n_classes=10)
>>> plan.attacks, plan.attack_kwargs["square"]
(['apgd-ce', 'apgd-t', 'fab-t', 'square'], {'queries': 5000, 'p_init': 0.8, 'restarts': 5})
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["SUITES", "SuitePlan", "suite_plan", "is_randomized", "suite_label", "custom_label", "settings_are_current"]

SUITES = ("standard", "rand", "quick")

_STANDARD = {"apgd-ce": {"steps": 100, "restarts": 1}, "apgd-t": {"steps": 100, "n_target_classes": 9},
             "fab-t": {"steps": 100, "n_target_classes": 9}, "square": {"queries": 5000, "p_init": 0.8, "restarts": 5}}
_RAND = {"apgd-ce": {"steps": 100, "restarts": 1, "eot": 20}, "apgd-dlr": {"steps": 100, "restarts": 1, "eot": 20}}
_QUICK = {"fgsm": {}, "pgd": {"steps": 20}, "pgd-cw": {"steps": 20}, "apgd-ce": {"steps": 20},
          "square": {"queries": 300}}
_LABELS = {"standard": "standard suite (AutoAttack standard: APGD-CE, APGD-T, FAB-T, Square-5000 x5 restarts)",
           "rand": "standard suite, rand version (AutoAttack rand: APGD-CE and APGD-DLR with EOT over 20 draws)",
           "quick": "quick (not standard): FGSM, PGD-20, C&W-inf, APGD-CE-20, Square-300"}


@dataclasses.dataclass(frozen=True)
class SuitePlan:
    """What a suite runs.

    Attributes:
        name: ``"standard"``, ``"rand"`` or ``"quick"``.
        attacks: registry names, in cascade order.
        attack_kwargs: per attack, the settings that define the suite (on top of the registry defaults).
        cascade: attack only the points earlier attacks left robust.
        label: the words reports show.
    """

    name: str
    attacks: list[str]
    attack_kwargs: dict[str, dict[str, Any]]
    cascade: bool
    label: str


def suite_plan(suite: str, n_classes: int = 10) -> SuitePlan:
    """The attacks and settings of ``suite`` for a model with ``n_classes`` classes.

    Targeted attacks use ``min(9, n_classes - 1)`` targets (AutoAttack's 9 on 10 classes); with fewer than 4 classes
    targeted DLR is undefined and APGD-T is replaced by untargeted APGD-DLR (a 3-class model) or left out.

    Raises:
        ValueError: an unknown suite name.
    """
    if suite not in SUITES:
        raise ValueError(f"suite must be one of {SUITES}; got suite={suite!r}")
    table = {"standard": _STANDARD, "rand": _RAND, "quick": _QUICK}[suite]
    kwargs = {name: dict(settings) for name, settings in table.items()}
    label = _LABELS[suite]
    if suite == "standard":
        targets = min(9, n_classes - 1)
        for name in ("apgd-t", "fab-t"):
            kwargs[name]["n_target_classes"] = targets
        if n_classes < 4:
            del kwargs["apgd-t"]
            if n_classes == 3:
                kwargs = {"apgd-ce": kwargs.pop("apgd-ce"), "apgd-dlr": {"steps": 100, "restarts": 1}, **kwargs}
            label += f"; {n_classes} classes: APGD-T replaced by {'APGD-DLR' if n_classes == 3 else 'nothing'}"
        elif targets < 9:
            label += f"; {targets} target classes ({n_classes} classes)"
    return SuitePlan(name=suite, attacks=list(kwargs), attack_kwargs=kwargs, cascade=suite != "quick", label=label)


def suite_label(plan: SuitePlan, overrides: Mapping[str, Mapping[str, Any]] | None) -> str:
    """``plan.label``, or a label saying what ran when ``overrides`` change the suite's settings."""
    changed = {name: dict(v) for name, v in (overrides or {}).items()
               if any(plan.attack_kwargs.get(name, {}).get(k) != val for k, val in v.items())}
    if not changed:
        return plan.label
    shown = "; ".join(f"{name} {', '.join(f'{k}={v}' for k, v in kw.items())}" for name, kw in changed.items())
    return f"{plan.name} suite with changed settings ({shown}): not the {plan.name} suite"


def settings_are_current(suite: str, attack_kwargs: Mapping[str, Mapping[str, Any]] | None,
                         n_classes: int = 10) -> bool:
    """Whether ``attack_kwargs`` recorded with an evaluation (``report.settings["attack_kwargs"]``) are this
    version's settings of ``suite``: an evaluation made with an earlier definition (e.g. the standard suite before
    Square ran 5 restarts) must not be reused or shown as today's suite. ``suite="standard"`` on a model random at
    inference runs the rand version, whose settings are then the current ones."""
    if suite not in SUITES:
        return False
    names = (suite, "rand") if suite == "standard" else (suite,)
    recorded = {name: dict(v) for name, v in (attack_kwargs or {}).items() if v}  # reports omit empty settings
    return any(recorded == {k: v for k, v in suite_plan(name, n_classes).attack_kwargs.items() if v}
               for name in names)


def custom_label(attacks: Sequence[str]) -> str:
    """The label of an evaluation that ran its own attack list instead of a suite (never read as standard)."""
    return "custom attack list (not the standard suite): " + ", ".join(attacks)


def is_randomized(predict: Any, x: np.ndarray, probes: int = 16) -> bool:
    """True when two forward passes of ``predict`` (a scoring function) on the same inputs differ: a stochastic
    model at inference, which a deterministic attack would overrate (Athalye et al. 2018, arXiv 1802.00420)."""
    sample = np.asarray(x[:probes], np.float32)
    first, second = np.asarray(predict(sample)), np.asarray(predict(sample))
    return not np.array_equal(first, second)
