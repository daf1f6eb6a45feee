"""Attacks by name, with default parameters per dataset scale (parsed from a table, never ``eval``).

Example:

>>> from qrobust_keras.attacks.registry import attack_kwargs, get_attack
>>> spec = get_attack("pgd")
>>> spec.kind
'white'
>>> attack_kwargs("pgd", eps=8 / 255, scale="image")["steps"]
20

Defaults (``eps``-relative entries are multiplied by the eps of the run):

| attack | kind | image (CIFAR-10, 32x32x3) | audio (MFCC 49x10) | quick (smoke runs, CI) |
|---|---|---|---|---|
| fgsm | white | one step of eps | same | same |
| bim | white | 10 steps of eps/4 | 20 steps of eps/8 | 5 steps of eps/2 |
| pgd | white | 20 steps of eps/4, random start, 1 restart | 40 steps of eps/8 | 10 steps of eps/4 |
| pgd-cw | white | as pgd, on the Carlini-Wagner margin loss ("C&W-inf") | as pgd | as pgd |
| mim | white | 10 steps of eps/10, decay 1.0 | 20 steps of eps/20 | 5 steps of eps/5 |
| cw_l2 | white (L2 only) | 5 binary-search steps x 100 Adam steps, lr 0.01, c0 0.01 | same | 3 x 30 |
| apgd-ce | white | 100 steps (AutoAttack) | 100 steps | 20 steps |
| apgd-dlr | white | 100 steps (needs >= 3 classes) | 100 steps | 20 steps |
| apgd-t | white | targeted DLR, 9 target classes x 100 steps (AutoAttack; needs >= 4 classes) | same | 3 x 20 |
| fab | white | 100 steps, minimum norm, counted within eps (Croce & Hein 2020) | same | 20 steps |
| fab-t | white | targeted FAB, 9 target classes x 100 steps (AutoAttack) | same | 3 x 20 |
| square | black | 1,000 queries | 1,000 queries | 200 queries |
| spsa | black | 100 steps, 128 samples, delta 0.01, lr 0.01 | same | 20 steps, 32 samples |
| hopskipjump | black | 20 iterations, 1,000 evaluations per gradient estimate (label-only) | same | 10 iterations, 1,000 evaluations |
| boundary | black | 1,000 iterations (label-only, untargeted) | same | 200 iterations |
| zoo | black | 10 iterations, 1 binary-search step | same | same |

The image values follow common practice (PGD-20 with eps/4 steps as in Madry et al. 2018 and the baseline table of
``docs/REFERENCES``; APGD's 100 steps as in AutoAttack). Audio models have fewer, more correlated input dimensions
(490 MFCCs); smaller relative steps with more iterations are safer there. Any entry can be overridden per attack
(``evaluate_robustness(..., attack_kwargs={"pgd": {"steps": 50}})``). The decision-based attacks keep ART's
defaults when called directly; the registry caps them (HopSkipJump: 20 x 1,000 instead of 50 x 10,000 model
evaluations; Boundary: 1,000 instead of 5,000 iterations) so that a robustness suite finishes in minutes, not days.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from typing import Any, Callable

SCALES = ("image", "audio", "quick")


@dataclasses.dataclass(frozen=True)
class Rel:
    """A default proportional to eps: ``Rel(0.25)`` means ``0.25 * eps``."""

    fraction: float


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    """One registered attack.

    Attributes:
        name: registry name (``"apgd-dlr"``).
        module, function: where the attack function lives (imported lazily).
        kind: "white" (needs a Keras model and gradients) or "black" (any predict function).
        norms: norms the attack supports ("inf", "2").
        fixed: keyword arguments that define the variant (``{"loss": "dlr"}``), not overridable.
        defaults: per scale, keyword arguments (``Rel`` values are multiplied by eps).
        takes_eps: False for attacks without a budget argument (then the result is projected by the caller).
    """

    name: str
    module: str
    function: str
    kind: str
    norms: tuple[str, ...]
    fixed: dict = dataclasses.field(default_factory=dict)
    defaults: dict = dataclasses.field(default_factory=dict)
    takes_eps: bool = True

    def load(self) -> Callable:
        """Import and return the attack function (ImportError with a clear message if its module is missing)."""
        try:
            module = importlib.import_module(self.module)
        except ImportError as err:
            raise ImportError(f"attack {self.name!r} is not available: importing {self.module} failed ({err}). "
                              "ART-based attacks need the optional extra: pip install 'qrobust-keras[blackbox]'") \
                from err
        return getattr(module, self.function)


def _same(kwargs: dict) -> dict:
    return {scale: dict(kwargs) for scale in SCALES}


_A = "qrobust_keras.attacks."
_REGISTRY: dict[str, AttackSpec] = {}


def _register(spec: AttackSpec) -> None:
    _REGISTRY[spec.name] = spec


_register(AttackSpec("fgsm", _A + "fgsm", "fgsm", "white", ("inf", "2"), defaults=_same({})))
_register(AttackSpec("bim", _A + "pgd", "bim", "white", ("inf", "2"), defaults={
    "image": {"steps": 10, "step_size": Rel(1 / 4)},
    "audio": {"steps": 20, "step_size": Rel(1 / 8)},
    "quick": {"steps": 5, "step_size": Rel(1 / 2)}}))
_register(AttackSpec("pgd", _A + "pgd", "pgd", "white", ("inf", "2"), defaults={
    "image": {"steps": 20, "step_size": Rel(1 / 4), "rand_init": True, "restarts": 1},
    "audio": {"steps": 40, "step_size": Rel(1 / 8), "rand_init": True, "restarts": 1},
    "quick": {"steps": 10, "step_size": Rel(1 / 4), "rand_init": True, "restarts": 1}}))
# "C&W-inf" as reported by Madry et al. 2018 and AutoAttack: PGD on the Carlini-Wagner margin loss, so that a
# C&W column can be given at L-inf budgets (cw_l2 is the minimum-norm L2 attack).
_register(AttackSpec("pgd-cw", _A + "pgd", "pgd", "white", ("inf", "2"), fixed={"loss": "cw"}, defaults={
    "image": {"steps": 20, "step_size": Rel(1 / 4), "rand_init": True, "restarts": 1},
    "audio": {"steps": 40, "step_size": Rel(1 / 8), "rand_init": True, "restarts": 1},
    "quick": {"steps": 10, "step_size": Rel(1 / 4), "rand_init": True, "restarts": 1}}))
_register(AttackSpec("mim", _A + "mim", "mim", "white", ("inf", "2"), defaults={
    "image": {"steps": 10, "step_size": Rel(1 / 10), "decay": 1.0},
    "audio": {"steps": 20, "step_size": Rel(1 / 20), "decay": 1.0},
    "quick": {"steps": 5, "step_size": Rel(1 / 5), "decay": 1.0}}))
_register(AttackSpec("cw_l2", _A + "cw", "cw_l2", "white", ("2",), defaults={
    "image": {"steps": 100, "binary_search_steps": 5, "step_size": 0.01, "initial_const": 0.01},
    "audio": {"steps": 100, "binary_search_steps": 5, "step_size": 0.01, "initial_const": 0.01},
    "quick": {"steps": 30, "binary_search_steps": 3, "step_size": 0.01, "initial_const": 0.01}}))
for _loss in ("ce", "dlr"):
    _register(AttackSpec(f"apgd-{_loss}", _A + "apgd", "apgd", "white", ("inf", "2"), fixed={"loss": _loss},
                         defaults={"image": {"steps": 100}, "audio": {"steps": 100}, "quick": {"steps": 20}}))
# AutoAttack's targeted attacks (9 target classes, 100 steps each in the standard version) and FAB itself.
_register(AttackSpec("apgd-t", _A + "targeted", "apgd_t", "white", ("inf", "2"), defaults={
    "image": {"steps": 100, "n_target_classes": 9}, "audio": {"steps": 100, "n_target_classes": 9},
    "quick": {"steps": 20, "n_target_classes": 3}}))
_register(AttackSpec("fab", _A + "fab", "fab", "white", ("inf", "2"), defaults={
    "image": {"steps": 100}, "audio": {"steps": 100}, "quick": {"steps": 20}}))
_register(AttackSpec("fab-t", _A + "targeted", "fab_t", "white", ("inf", "2"), defaults={
    "image": {"steps": 100, "n_target_classes": 9}, "audio": {"steps": 100, "n_target_classes": 9},
    "quick": {"steps": 20, "n_target_classes": 3}}))
_register(AttackSpec("square", _A + "square", "square", "black", ("inf", "2"), defaults={
    "image": {"queries": 1000}, "audio": {"queries": 1000}, "quick": {"queries": 200}}))
_register(AttackSpec("spsa", _A + "spsa", "spsa", "black", ("inf",), defaults={
    "image": {"steps": 100, "spsa_samples": 128, "delta": 0.01, "step_size": 0.01},
    "audio": {"steps": 100, "spsa_samples": 128, "delta": 0.01, "step_size": 0.01},
    "quick": {"steps": 20, "spsa_samples": 32, "delta": 0.01, "step_size": 0.01}}))
_QUICK_ART = {"hopskipjump": {"max_iter": 10, "max_eval": 1000, "init_eval": 20},
              "boundary": {"max_iter": 200},
              "zoo": {"max_iter": 10}}
_FULL_ART = {"hopskipjump": {"max_iter": 20, "max_eval": 1000, "init_eval": 100},
             "boundary": {"max_iter": 1000},
             "zoo": {}}
for _name in ("hopskipjump", "boundary", "zoo"):
    _register(AttackSpec(_name, _A + "art_blackbox", _name, "black", ("inf", "2"),
                         defaults={"image": _FULL_ART[_name], "audio": _FULL_ART[_name], "quick": _QUICK_ART[_name]}))

_ALIASES = {"cw": "cw_l2", "cwl2": "cw_l2", "carlini_wagner_l2": "cw_l2", "apgd": "apgd-ce", "apgd_ce": "apgd-ce",
            "apgd_dlr": "apgd-dlr", "apgd_t": "apgd-t", "apgd-targeted": "apgd-t", "fab_t": "fab-t",
            "hsj": "hopskipjump", "hop_skip_jump": "hopskipjump", "ifgsm": "bim",
            "mifgsm": "mim", "cw_linf": "pgd-cw", "cw-inf": "pgd-cw", "pgd_cw": "pgd-cw"}


def canonical_name(name: str) -> str:
    """Registry name for ``name`` or one of its aliases (case-insensitive)."""
    if not isinstance(name, str):
        raise TypeError(f"attack names are strings; got {name!r}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise ValueError(f"unknown attack {name!r}; accepted: {', '.join(list_attacks())} "
                         f"(aliases: {', '.join(sorted(_ALIASES))})")
    return key


def get_attack(name: str) -> AttackSpec:
    """The :class:`AttackSpec` registered under ``name`` (or an alias)."""
    return _REGISTRY[canonical_name(name)]


def list_attacks(kind: str | None = None) -> list[str]:
    """Registered attack names, optionally only ``kind`` "white" or "black"."""
    if kind not in (None, "white", "black"):
        raise ValueError(f"kind must be None, 'white' or 'black'; got kind={kind!r}")
    return [n for n, s in _REGISTRY.items() if kind is None or s.kind == kind]


def resolve(attack: str | Callable, argument: str = "attack") -> tuple[str, Callable]:
    """``(name, function)`` for a registered attack name or alias, or for a callable attack.

    A name gives its registry name and its function with the variant's fixed arguments bound (``"apgd-dlr"``:
    ``apgd(..., loss="dlr")``); a callable ``attack(model, x, y, eps=..., ...) -> x_adv`` is returned as is, named by
    its ``__name__``.

    Args:
        attack: a name of :func:`list_attacks` (or an alias), or a callable.
        argument: the caller's argument name, for messages.

    Raises:
        ValueError: unknown name. TypeError: neither a string nor a callable.
    """
    if isinstance(attack, str):
        try:
            spec = get_attack(attack)
        except ValueError:
            raise ValueError(f"{argument} must be one of {list_attacks()} (or an alias: {sorted(_ALIASES)}) or a "
                             f"callable; got {argument}={attack!r}") from None
        fn = spec.load()
        return spec.name, functools.partial(fn, **spec.fixed) if spec.fixed else fn
    if callable(attack):
        return getattr(attack, "__name__", "attack"), attack
    raise TypeError(f"{argument} must be an attack name {list_attacks()} or a callable; got {type(attack).__name__}")


def available_attacks(kind: str | None = None) -> list[str]:
    """Registered attacks whose module imports in this environment."""
    names = []
    for name in list_attacks(kind):
        try:
            _REGISTRY[name].load()
        except ImportError:
            continue
        names.append(name)
    return names


def attack_kwargs(name: str, eps: float, scale: str = "image", overrides: dict | None = None) -> dict[str, Any]:
    """Resolved keyword arguments (defaults for ``scale`` with eps-relative values evaluated, then ``overrides``).

    Raises:
        ValueError: unknown scale, or an override of an argument that defines the variant (e.g. apgd-dlr's loss).
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}; got scale={scale!r}")
    spec = get_attack(name)
    out = {k: (v.fraction * eps if isinstance(v, Rel) else v) for k, v in spec.defaults.get(scale, {}).items()}
    for key, value in (overrides or {}).items():
        if key in spec.fixed and value != spec.fixed[key]:
            raise ValueError(f"{spec.name} fixes {key}={spec.fixed[key]!r}; got override {key}={value!r} "
                             f"(use the other registered variant)")
        out[key] = value.fraction * eps if isinstance(value, Rel) else value
    out.update(spec.fixed)
    return out


def run_attack(name: str, model: Any, x: Any, y: Any, eps: float, norm: str = "inf", scale: str = "image",
               overrides: dict | None = None, **common: Any):
    """Run the attack ``name`` with its defaults; ``common`` are shared arguments (seed, batch_size, verbose...).

    Returns whatever the attack returns (``(x_adv, info)`` when ``return_info=True`` is in ``common``).
    """
    spec = get_attack(name)
    from qrobust_keras.attacks.common import parse_norm

    norm = parse_norm(norm)
    if norm not in spec.norms:
        raise ValueError(f"attack {spec.name!r} supports norm {' or '.join(spec.norms)}; got norm={norm!r}")
    kwargs = attack_kwargs(name, eps, scale, overrides)
    kwargs.update(common)
    return spec.load()(model, x, y, eps=eps, norm=norm, **kwargs)


__all__ = ["AttackSpec", "Rel", "SCALES", "attack_kwargs", "available_attacks", "canonical_name", "get_attack",
           "list_attacks", "resolve", "run_attack"]
