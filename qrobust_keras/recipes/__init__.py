"""Named training recipes: a quantization policy plus a complete training schedule, shared by the CLI and examples.

Four recipes exist for each (model, dataset) pair the library targets - ResNet-8 on CIFAR-10 and SVHN, DS-CNN on
Speech Commands:

* ``"mlcommons"``: the float reference model with the MLCommons Tiny training schedule (Banbury et al. 2021,
  arXiv 2106.07597).
* ``"stq_jr"``: stochastic-ternary kernels, 4-bit activations and per-layer Jacobian regularization, after Ayaz et
  al. 2023 (arXiv 2304.12829). The paper's exact layer list, lambdas and schedule are not published; the choices
  below are ours and are explained in :data:`RECIPE_NOTES`.
* ``"stq_jr_at"``: ``"stq_jr"`` plus PGD adversarial training on half of every batch (Madry et al. 2018,
  arXiv 1706.06083; mixing clean and adversarial samples: Kurakin et al. 2017, arXiv 1611.01236).
* ``"int4_at"``: int4 kernels and activations, no JR, PGD adversarial training with the examples crafted against the
  training-mode network, starting from the official MLCommons float weights (quantization-aware fine-tuning, Jacob
  et al. 2018, arXiv 1712.05877). Measured on CIFAR-10 it keeps more clean accuracy at the same 2/255 robustness
  than the JR recipes (docs/reproduction.md).

A :class:`Recipe` is a frozen dataclass: every number that decides the result is a field, and
``dataclasses.replace`` (or ``get_recipe(..., epochs=5)``) changes one without touching the rest.
:func:`build_recipe` turns it into a compiled model and the callbacks that carry the schedule (learning rate, JR,
adversarial training); :func:`train_dataset` gives the augmented input pipeline; :func:`fit_recipe` trains it into a
resumable run folder.

Modules: :mod:`~qrobust_keras.recipes.catalog` (``Recipe``, the named recipes and their notes),
:mod:`~qrobust_keras.recipes.build` (model, callbacks, input pipeline) and :mod:`~qrobust_keras.recipes.run` (the run
folder: ``fit_recipe``, its callbacks and the file names ``RUN_CONFIG``, ``HISTORY_CSV``, ``LAST_MODEL``,
``FINAL_MODEL``).

Example:

>>> import qrobust_keras as qrk
>>> from qrobust_keras.recipes import get_recipe, build_recipe
>>> recipe = get_recipe("stq_jr", model="resnet8", dataset="cifar10", epochs=2)
>>> model, callbacks = build_recipe(recipe)
>>> [type(c).__name__ for c in callbacks]
['LearningRateScheduler', 'JacobianRegularization']
>>> # model.fit(train_dataset(recipe, x_train, y_train), epochs=recipe.epochs, callbacks=callbacks)
"""

from qrobust_keras.models.io import copy_weights_by_name
from qrobust_keras.recipes.build import (build_model, build_recipe, jr_layer_weights, learning_rate, recipe_callbacks,
                                         train_dataset)
from qrobust_keras.recipes.catalog import (DATASETS, LR_SCHEDULES, MODELS, RECIPE_NOTES, RECIPES, Recipe, get_recipe,
                                           list_recipes)
from qrobust_keras.recipes.run import (BACKUP_DIR, FINAL_MODEL, HISTORY_CSV, LAST_MODEL, RUN_CONFIG, HistoryCSV,
                                       SaveLast, fit_recipe, read_history, save_model_atomic)

__all__ = ["Recipe", "RECIPES", "MODELS", "DATASETS", "LR_SCHEDULES", "RECIPE_NOTES", "get_recipe", "list_recipes",
           "build_recipe", "build_model", "learning_rate", "jr_layer_weights", "train_dataset", "recipe_callbacks",
           "fit_recipe", "read_history", "HistoryCSV", "SaveLast", "save_model_atomic", "copy_weights_by_name",
           "RUN_CONFIG", "HISTORY_CSV", "FINAL_MODEL", "LAST_MODEL", "BACKUP_DIR"]
