"""The recipe catalogue: the :class:`Recipe` dataclass, the named recipes and why they are what they are.

A recipe is a quantization policy plus a complete training schedule for one (model, dataset) pair; every number that
decides the result is a field of the frozen :class:`Recipe`, and ``get_recipe(..., epochs=5)`` (or
``dataclasses.replace``) changes one without touching the rest. :data:`RECIPE_NOTES` says, per recipe, where each
choice comes from. Building a recipe: :mod:`qrobust_keras.recipes.build`; training it into a run folder:
:mod:`qrobust_keras.recipes.run`.

Example:

>>> from qrobust_keras.recipes.catalog import get_recipe, list_recipes
>>> recipe = get_recipe("int4_at", dataset="svhn", epochs=5)
>>> recipe.model, recipe.epochs, recipe.at_eps == 2 / 255, recipe.augment_flip
('resnet8', 5, True, False)
>>> len(list_recipes())
12
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from qrobust_keras._checks import check_int
from qrobust_keras.quantization import QuantPolicy

__all__ = ["Recipe", "RECIPES", "MODELS", "DATASETS", "LR_SCHEDULES", "RECIPE_NOTES", "get_recipe", "list_recipes"]

RECIPES = ("mlcommons", "stq_jr", "stq_jr_at", "int4_at")
AT_METHODS = ("pgd", "nfgsm", "trades")
MODELS = ("resnet8", "ds_cnn")
_MLCOMMONS_WIDTH = {"resnet8": 16, "ds_cnn": 64}  # the `filters` of the published models
DATASETS = {"cifar10": "resnet8", "svhn": "resnet8", "speech_commands": "ds_cnn"}
LR_SCHEDULES = ("exponential", "cosine", "step", "constant")

# Why the recipes look the way they do (also rendered into docs/reproduction.md).
RECIPE_NOTES = {
    "mlcommons": (
        "Float model, MLCommons Tiny training script: ResNet-8 with Adam, lr 1e-3 * 0.99^epoch, batch 32, 500 "
        "epochs, L2 1e-4 and augmentation (the reference uses rotation 15 deg, shifts 0.1 and flips through "
        "ImageDataGenerator; here: random crop after 4 px zero padding (= shifts up to 0.125) and flips, no "
        "rotation). DS-CNN with Adam, lr 1e-3 halved every 12 epochs, 36 epochs, batch 100, precomputed MFCC."),
    "stq_jr": (
        "Ayaz et al. 2023 (arXiv 2304.12829) train QKeras models with stochastic ternary quantization and per-layer "
        "Jacobian regularization; their layer list, lambdas and schedule are unpublished. Choices here: "
        "stochastic_ternary kernels (random rounding during training, deterministic ternary at inference), int4 "
        "quantized ReLUs, int8 for the first convolution and the classifier (the layers most sensitive to "
        "ternarization: 27 and 64 fan-in), int8 depthwise kernels in DS-CNN (9 weights per channel). JR on the "
        "logits and on every quantized ReLU output (post-BatchNorm, so the scale is meaningful; pre-BN convolution "
        "outputs can shrink their Jacobian by shrinking weights that BN rescales away). Per-layer lambdas are "
        "normalised by width, lambda_l = lambda * K / dim(h_l) (K classes): measured at initialisation, the "
        "half-squared Jacobian norms of the 32x32x16 activations are 4e3-1.6e4 against 0.4 for the logits, so a "
        "uniform lambda = 0.01 would make the penalty ~10^3 times the cross-entropy. With the normalisation every "
        "layer's per-unit Jacobian energy is weighted like the logits'. lambda = 0.01 (Hoffman et al. 2019, "
        "arXiv 1908.02729), linear warm-up over 2 epochs, one fused random projection per step (unbiased; cost of "
        "output-only JR). Adam lr 1e-3 with cosine decay, batch 128 (CPU throughput), crop+flip augmentation."),
    "stq_jr_at": (
        "stq_jr plus PGD adversarial training: half of every batch replaced by PGD-3 examples (random start, step "
        "2.5 eps / 3) at eps 8/255 for images (the largest budget the targets name, so robustness at 2/255 and "
        "8/255 both benefit; the clean half keeps clean accuracy up). For DS-CNN the budget is in MFCC units "
        "(eps = 1.0, clip to the training feature range). Costs about (steps + 1) x the stq_jr step."),
    "int4_at": (
        "Adversarial training without JR, measured on CIFAR-10 (docs/reproduction.md, sessions 6-9): int4 kernels "
        "and int4 quantized ReLUs (conv_1, the classifier and DS-CNN's depthwise kernels int8, as in stq_jr; "
        "DS-CNN's ReLUs int8, see below), "
        "started from the official MLCommons float weights (init_weights='mlcommons'; SVHN has none and starts from "
        "scratch), Adam lr 5e-4 with cosine decay, PGD-3 on half of every batch at eps 2/255 (DS-CNN: 0.5 MFCC "
        "units), crafted against the training-mode network (at_craft_mode='training': batch statistics, moving "
        "statistics frozen during the attack). Why int4 and not stochastic ternary: under the same adversarial "
        "training from the same weights, stochastic-ternary kernels kept 18 points less at 2/255 (PGD through a "
        "sampled network crafts weaker training examples: deterministic ternary kernels kept the robustness, "
        "within 3 points of int4, but lost 7 clean points); under JR the kernels were equal. Why no JR: JR "
        "moved along a worse clean/robust trade-off in every measured setting. Images (worst case over five "
        "attacks on the 1,017 exact CIFAR-10 test images): 48 epochs at 2/255 gave 80.6% clean and 48.8% at "
        "2/255 (2.5% at 8/255); 48 epochs at 3/255 gave 78.7% / 53.0% (5.6%); 20 epochs at 4/255 76.9% / 50.0% "
        "(7.1%); 8 epochs at 4/255 73.1% / 43.3%. 2/255 is the budget that keeps 80% clean with the 45% target "
        "at 2/255 met; 8/255 needs a larger budget or stq_jr_at, at the cost of clean accuracy. No BatchNorm "
        "re-estimation: with deterministic kernels there is no sampled/deterministic gap to close, and the "
        "moving statistics average the mixed clean/adversarial batches the network trained on; re-estimating "
        "them on clean images cost 1.3 clean and 4-5 worst-case points at 1-4/255 (20-epoch ResNet-8) and 1.4 "
        "validation points on DS-CNN. DS-CNN's ReLUs are int8: with int4 ReLUs the same training (from the same "
        "weights, seed 0) left a masked model: on the first 256 test clips at 0.1 MFCC units APGD-CE-100 kept 77.7% "
        "and Square-5000 x5 broke it down to 64.8%, below the float MLCommons DS-CNN (74.2%, where Square breaks "
        "nothing more); with int8 ReLUs APGD-CE-100 kept 85.2% and Square-5000 broke no more (92.6% clean)."),
}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A complete, documented training recipe.

    Attributes:
        name: ``"mlcommons"``, ``"stq_jr"``, ``"stq_jr_at"`` or ``"int4_at"``.
        model: ``"resnet8"`` or ``"ds_cnn"``.
        dataset: ``"cifar10"``, ``"svhn"`` or ``"speech_commands"``.
        policy: quantization policy as a :class:`~qrobust_keras.quantization.QuantPolicy` config dict (or a spec
            name such as ``"float"``); JSON-serializable.
        num_classes: classifier width (10 images, 12 keywords).
        input_shape: model input shape without the batch axis.
        optimizer: ``"adam"`` or ``"sgd"`` (SGD with Nesterov momentum 0.9).
        learning_rate: initial learning rate.
        lr_schedule: ``"exponential"`` (``lr * lr_decay^epoch``), ``"cosine"`` (to 0 at ``epochs``), ``"step"``
            (``lr * lr_decay^(epoch // lr_step)``) or ``"constant"``.
        lr_decay: factor of the exponential/step schedules.
        lr_step: epochs per step of the step schedule.
        epochs: training epochs of the full recipe.
        batch_size: samples per step.
        weight_decay: L2 factor on kernels (built into the model).
        filters: network width, passed to the builder: ResNet-8's base filters ``f`` (stacks of ``f, 2f, 4f``;
            :func:`~qrobust_keras.models.resnet8`) or DS-CNN's channels. None: the MLCommons model's width (16 and
            64), the only one the official weights fit, so a wider recipe needs ``init_weights=None``.
        jr_weight: Jacobian-regularization lambda (0 disables JR); per-layer lambdas follow :func:`jr_layer_weights`.
        jr_layers: ``"output"`` (logits only) or ``"activations"`` (logits and every quantized/ReLU activation).
        jr_normalize: divide each hidden layer's lambda by its width relative to the logits
            (``jr_hidden_weight * K / dim(h_l)``).
        jr_hidden_weight: lambda of the hidden activation layers (before the width normalisation) when
            ``jr_layers="activations"``; the logits always get ``jr_weight``.
        jr_n_proj: random projections per sample and step.
        jr_warmup_epochs: linear warm-up of lambda (epoch 0 unregularized).
        at_eps: adversarial-training budget (L-inf, input units); 0 disables adversarial training.
        at_steps: PGD steps of adversarial training.
        at_ratio: share of every batch replaced by adversarial examples.
        at_craft_mode: the network adversarial examples are crafted against: ``"inference"`` or ``"training"``
            (:class:`~qrobust_keras.training.AdversarialTraining`'s ``craft_mode``).
        at_method: ``"pgd"``: :class:`~qrobust_keras.training.AdversarialTraining` (train on ``at_ratio`` of each
            batch replaced by PGD examples); ``"nfgsm"``: the same with single-step N-FGSM examples (de Jorge et al.
            2022; ``at_steps`` unused); ``"trades"``: :class:`~qrobust_keras.training.TRADES` (clean loss plus
            ``trades_beta`` times the KL divergence to the worst point of the eps-ball; ``at_ratio`` unused).
        trades_beta: weight of the TRADES KL term.
        augment_pad: zero padding (px) for random crops (0: no crop); images only.
        augment_flip: random horizontal flips (off for digits).
        bn_momentum: BatchNorm moving-average momentum set on every BatchNorm layer (None: the builder's 0.99).
            The DS-CNN recipes use 0.9: the shared Speech Commands split has ~20 steps per epoch, and with 0.99 the
            moving statistics still lag the (large, unnormalised) MFCC scale after 100 steps, so inference-mode
            predictions collapse to one class (measured: 10.9% validation accuracy in inference mode vs 50.4% in
            training mode after 5 epochs).
        bn_recalibration: after training, re-estimate every BatchNorm's statistics on this many training samples
            with the deterministic inference network (:func:`qrobust_keras.training.recalibrate_batchnorm`; 0: off).
            The stochastic-ternary recipes use 5,000: BatchNorm's moving statistics otherwise describe the sampled
            training networks (measured on a ResNet-8 `stq_jr` snapshot after 8 epochs: 47.1% -> 53.9% clean
            accuracy on the 1,017 exact CIFAR-10 test images). ``int4_at`` uses 0: with deterministic kernels it
            lowered accuracy (docs/reproduction.md).
        init_weights: where training starts when :func:`fit_recipe` is given no ``init_weights``: None (random
            initialisation), ``"mlcommons"`` (the official MLCommons Tiny float weights from
            ``QROBUST_MLCOMMONS_DIR``), ``"mlcommons:DIR"`` or a saved model path.
        seed: seed of initialisation, shuffling, augmentation, JR projections and AT starts.
        notes: why the recipe is what it is (:data:`RECIPE_NOTES`).
    """

    name: str
    model: str
    dataset: str
    policy: Any
    num_classes: int
    input_shape: tuple
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"
    lr_decay: float = 0.99
    lr_step: int = 12
    epochs: int = 60
    batch_size: int = 128
    weight_decay: float = 1e-4
    filters: int | None = None
    jr_weight: float = 0.0
    jr_layers: str = "activations"
    jr_normalize: bool = True
    jr_hidden_weight: float = 1e-4
    jr_n_proj: int = 1
    jr_warmup_epochs: int = 2
    at_eps: float = 0.0
    at_steps: int = 3
    at_ratio: float = 0.5
    at_craft_mode: str = "inference"
    at_method: str = "pgd"
    trades_beta: float = 6.0
    augment_pad: int = 4
    augment_flip: bool = True
    bn_momentum: float | None = None
    bn_recalibration: int = 0
    init_weights: str | None = None
    seed: int = 0
    notes: str = ""

    def __post_init__(self):
        if self.name not in RECIPES:
            raise ValueError(f"name must be one of {RECIPES}; got name={self.name!r}")
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}; got model={self.model!r}")
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {sorted(DATASETS)}; got dataset={self.dataset!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd'; got optimizer={self.optimizer!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}; got lr_schedule={self.lr_schedule!r}")
        if self.jr_layers not in ("output", "activations"):
            raise ValueError(f"jr_layers must be 'output' or 'activations'; got jr_layers={self.jr_layers!r}")
        for field in ("epochs", "batch_size", "num_classes", "lr_step", "jr_n_proj", "at_steps"):
            check_int(field, getattr(self, field), accepted="a positive integer")
        for field in ("learning_rate",):
            if not (isinstance(getattr(self, field), (int, float)) and getattr(self, field) > 0):
                raise ValueError(f"{field} must be a positive number; got {field}={getattr(self, field)!r}")
        for field in ("jr_weight", "jr_hidden_weight", "at_eps", "weight_decay", "jr_warmup_epochs", "augment_pad"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{field} must be a finite number >= 0; got {field}={value!r}")
        if self.filters is not None and (isinstance(self.filters, bool) or not isinstance(self.filters, int)
                                         or self.filters < 1):
            raise ValueError(f"filters must be None (the MLCommons width) or a positive integer; got "
                             f"filters={self.filters!r}")
        if isinstance(self.bn_recalibration, bool) or not isinstance(self.bn_recalibration, int) or \
                self.bn_recalibration < 0:
            raise ValueError(f"bn_recalibration must be a non-negative integer (samples); got "
                             f"bn_recalibration={self.bn_recalibration!r}")
        if self.bn_momentum is not None and not (isinstance(self.bn_momentum, (int, float))
                                                 and 0 < self.bn_momentum < 1):
            raise ValueError(f"bn_momentum must be None or in (0, 1); got bn_momentum={self.bn_momentum!r}")
        if not 0 <= self.at_ratio <= 1:
            raise ValueError(f"at_ratio must be in [0, 1]; got at_ratio={self.at_ratio!r}")
        if self.at_craft_mode not in ("inference", "training"):
            raise ValueError(f"at_craft_mode must be 'inference' or 'training'; "
                             f"got at_craft_mode={self.at_craft_mode!r}")
        if self.at_method not in AT_METHODS:
            raise ValueError(f"at_method must be one of {AT_METHODS}; got at_method={self.at_method!r}")
        if isinstance(self.trades_beta, bool) or not isinstance(self.trades_beta, (int, float)) or \
                not 0 < self.trades_beta < math.inf:
            raise ValueError(f"trades_beta must be a finite number > 0; got trades_beta={self.trades_beta!r}")
        if self.init_weights is not None and not (isinstance(self.init_weights, str) and self.init_weights):
            raise ValueError(f"init_weights must be None, 'mlcommons', 'mlcommons:DIR' or a saved model path; got "
                             f"init_weights={self.init_weights!r}")
        QuantPolicy.from_any(self.policy)  # raises on a bad policy

    @property
    def quant_policy(self) -> QuantPolicy:
        """The :class:`QuantPolicy` object of :attr:`policy`."""
        return QuantPolicy.from_any(self.policy)

    @property
    def is_image(self) -> bool:
        return self.model == "resnet8"

    def to_dict(self) -> dict:
        """JSON-serializable fields (the CLI writes this next to every run)."""
        d = dataclasses.asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        d = dict(d)
        d["input_shape"] = tuple(d["input_shape"])
        return cls(**d)


def _quantized_policy(model: str, kernel: str, activation: str = "int4") -> dict:
    overrides = {"conv_1": "int8", "logits": "int8"}
    if model == "ds_cnn":
        overrides["block*_dw"] = "int8"
    return QuantPolicy(kernel=kernel, activation=activation, overrides=overrides).get_config()


def _base(name: str, model: str, dataset: str) -> dict:
    image = model == "resnet8"
    base = dict(name=name, model=model, dataset=dataset, num_classes=10 if image else 12,
                input_shape=(32, 32, 3) if image else (49, 10, 1), notes=RECIPE_NOTES[name],
                augment_pad=4 if image else 0, augment_flip=image and dataset != "svhn",
                bn_momentum=None if image else 0.9)
    if name == "mlcommons":
        if image:
            base.update(policy="float", lr_schedule="exponential", lr_decay=0.99, epochs=500, batch_size=32)
        else:
            base.update(policy="float", lr_schedule="step", lr_decay=0.5, lr_step=12, epochs=36, batch_size=100)
        return base
    if name == "int4_at":
        # DS-CNN: int8 ReLUs. With int4 ReLUs its adversarial training crafted weak examples through the coarse
        # activation steps and the network learned to mask the gradient (RECIPE_NOTES["int4_at"])
        base.update(policy=_quantized_policy(model, "int4", "int4" if image else "int8"), learning_rate=5e-4,
                    lr_schedule="cosine", epochs=48 if image else 36, batch_size=128 if image else 100,
                    at_eps=2 / 255 if image else 0.5, at_steps=3, at_ratio=0.5, at_craft_mode="training",
                    bn_recalibration=0, init_weights=None if dataset == "svhn" else "mlcommons")
        return base
    base.update(policy=_quantized_policy(model, "stochastic_ternary"), lr_schedule="cosine", epochs=60 if image else 36,
                batch_size=128 if image else 100, jr_weight=0.01, jr_layers="activations", jr_warmup_epochs=2,
                bn_recalibration=5000)
    if name == "stq_jr_at":
        base.update(at_eps=8 / 255 if image else 1.0, at_steps=3, at_ratio=0.5)
    return base


def get_recipe(name: str, model: str | None = None, dataset: str = "cifar10", **overrides: Any) -> Recipe:
    """The named recipe for a dataset, with optional field overrides.

    Args:
        name: ``"mlcommons"``, ``"stq_jr"``, ``"stq_jr_at"`` or ``"int4_at"``.
        model: ``"resnet8"`` or ``"ds_cnn"``; default: the dataset's model (ResNet-8 for images, DS-CNN for speech).
        dataset: ``"cifar10"``, ``"svhn"`` or ``"speech_commands"``.
        **overrides: any :class:`Recipe` field, e.g. ``epochs=5`` (``None`` values are ignored;
            ``init_weights="none"`` sets random initial weights).

    Raises:
        ValueError: unknown name/model/dataset, a model that does not fit the dataset, unknown override fields or
            invalid values.
    """
    if name not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}; got recipe={name!r}")
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}; got dataset={dataset!r}")
    model = DATASETS[dataset] if model is None else model
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}; got model={model!r}")
    if DATASETS[dataset] != model:
        raise ValueError(f"model={model!r} does not fit dataset={dataset!r}; use model={DATASETS[dataset]!r}")
    fields = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown recipe field(s) {unknown}; fields: {sorted(fields)}")
    params = _base(name, model, dataset)
    given = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(given.get("init_weights"), str) and given["init_weights"].lower() == "none":
        given["init_weights"] = None  # random weights: the one override whose value is None
    # the notes describe the named recipe's defaults; a run_config.json must not claim a default the run overrode
    changed = {k: v for k, v in given.items() if k != "notes" and params.get(k) != v}
    if changed and "notes" not in given:
        params["notes"] += " Overridden here: " + ", ".join(f"{k}={v!r}" for k, v in sorted(changed.items())) + "."
    params.update(given)
    return Recipe(**params)


def list_recipes() -> list[tuple[str, str, str]]:
    """Every supported ``(recipe, model, dataset)`` triple."""
    return [(r, m, d) for r in RECIPES for d, m in DATASETS.items()]

