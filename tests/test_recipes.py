"""Named recipes: their settings, the models and callbacks they build, the lr schedules, and resumable training."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pytest

from qrobust_keras._keras import keras
from qrobust_keras.recipes import (
    HistoryCSV, Recipe, build_model, build_recipe, fit_recipe, get_recipe, jr_layer_weights, learning_rate,
    list_recipes, read_history,
)


def test_every_recipe_builds_the_right_model_for_its_dataset():
    assert len(list_recipes()) == 12
    for name, model_name, dataset in list_recipes():
        recipe = get_recipe(name, dataset=dataset)
        assert recipe.model == model_name
        assert recipe.num_classes == (12 if dataset == "speech_commands" else 10)
        assert recipe.augment_flip == (dataset == "cifar10")  # no flips for digits or spectrogram features
        assert (recipe.jr_weight > 0) == name.startswith("stq_jr")
        assert (recipe.at_eps > 0) == name.endswith("_at")


def test_int4_at_is_adversarial_training_of_int4_kernels_from_the_official_weights():
    recipe = get_recipe("int4_at", dataset="cifar10")
    assert (recipe.init_weights, recipe.jr_weight, recipe.at_craft_mode, recipe.learning_rate) == \
        ("mlcommons", 0.0, "training", 5e-4)
    assert (recipe.epochs, recipe.bn_recalibration) == (48, 0)  # deterministic kernels: no re-estimation
    model, callbacks = build_recipe(recipe)
    assert model.count_params() == 78666
    assert [type(c).__name__ for c in callbacks] == ["LearningRateScheduler", "AdversarialTraining"]
    at = callbacks[-1]
    assert (at.eps, at.steps, at.ratio, at.craft_mode) == (pytest.approx(2 / 255), 3, 0.5, "training")
    kernel = model.get_layer("stack2_conv_a").kernel_quantizer_internal
    assert (type(kernel).__name__, kernel.bits) == ("quantized_bits", 4)
    assert model.get_layer("conv_1").kernel_quantizer_internal.bits == 8
    assert model.get_layer("stack1_relu").quantizer.bits == 4
    kws = get_recipe("int4_at", dataset="speech_commands")
    kws_model, kws_callbacks = build_recipe(kws)
    assert (kws.init_weights, kws_callbacks[-1].eps) == ("mlcommons", 0.5)
    assert kws_model.get_layer("block1_dw").depthwise_quantizer_internal.bits == 8
    # int8 ReLUs on the DS-CNN: with int4 ones its adversarial training masked the gradient (RECIPE_NOTES)
    assert {kws_model.get_layer(n).quantizer.bits for n in ("relu_1", "block1_dw_relu", "block4_pw_relu")} == {8}
    assert kws_model.get_layer("block1_pw").kernel_quantizer_internal.bits == 4
    assert get_recipe("int4_at", dataset="svhn").init_weights is None  # no official SVHN weights exist
    _, trades_callbacks = build_recipe(get_recipe("int4_at", at_method="trades", trades_beta=2.0))
    trades = trades_callbacks[-1]
    assert type(trades).__name__ == "TRADES"
    assert (trades.eps, trades.beta, trades.steps, trades.craft_mode) == (pytest.approx(2 / 255), 2.0, 3, "training")
    with pytest.raises(ValueError, match=r"at_method must be one of \('pgd', 'nfgsm', 'trades'\); got at_method='mart'"):
        get_recipe("int4_at", at_method="mart")
    with pytest.raises(ValueError, match="trades_beta must be a finite number > 0; got trades_beta=-1"):
        get_recipe("int4_at", trades_beta=-1)
    with pytest.raises(ValueError, match="init_weights must be None, 'mlcommons'.*got init_weights=''"):
        get_recipe("int4_at", init_weights="")


def test_cli_recipe_choices_are_the_recipes():
    from qrobust_keras.cli import build_parser
    from qrobust_keras.recipes import RECIPES
    from qrobust_keras.recipes.catalog import AT_METHODS

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    recipe_action = next(a for a in train._actions if a.dest == "recipe")
    assert tuple(recipe_action.choices) == RECIPES
    method_action = next(a for a in train._actions if a.dest == "at_method")
    assert tuple(method_action.choices) == AT_METHODS


def test_nfgsm_recipe_builds_a_single_step_nfgsm_callback():
    recipe = get_recipe("int4_at", at_method="nfgsm", at_eps=8 / 255, at_ratio=1.0)
    _, callbacks = build_recipe(recipe)
    at = callbacks[-1]
    assert (type(at).__name__, at.attack, at.steps, at.ratio, at.noise) == ("AdversarialTraining", "nfgsm", 1, 1.0,
                                                                            2.0)
    assert at.step_size == pytest.approx(8 / 255)


def test_stq_jr_resnet8_policy_and_model():
    recipe = get_recipe("stq_jr", dataset="cifar10")
    model, callbacks = build_recipe(recipe)
    assert model.count_params() == 78666
    assert type(model.get_layer("stack2_conv_a").kernel_quantizer_internal).__name__ == "stochastic_ternary"
    assert type(model.get_layer("conv_1").kernel_quantizer_internal).__name__ == "quantized_bits"
    assert model.get_layer("conv_1").kernel_quantizer_internal.bits == 8
    assert model.get_layer("stack1_relu").quantizer.bits == 4
    assert [type(c).__name__ for c in callbacks] == ["LearningRateScheduler", "JacobianRegularization"]
    assert model.optimizer.__class__.__name__ == "Adam" and model.compiled_loss is not None


def test_mlcommons_recipe_is_float_with_the_reference_schedule():
    recipe = get_recipe("mlcommons", dataset="cifar10")
    assert (recipe.batch_size, recipe.epochs, recipe.lr_schedule, recipe.lr_decay) == (32, 500, "exponential", 0.99)
    model, callbacks = build_recipe(recipe)
    assert all(not type(layer).__name__.startswith("Q") for layer in model.layers)
    assert [type(c).__name__ for c in callbacks] == ["LearningRateScheduler"]
    kws = get_recipe("mlcommons", dataset="speech_commands")
    assert (kws.model, kws.epochs, kws.batch_size, kws.input_shape) == ("ds_cnn", 36, 100, (49, 10, 1))


def test_stq_jr_at_adds_adversarial_training_with_its_budget():
    recipe = get_recipe("stq_jr_at", dataset="cifar10")
    _, callbacks = build_recipe(recipe)
    at = callbacks[-1]
    assert type(at).__name__ == "AdversarialTraining"
    assert (at.eps, at.steps, at.ratio, at.attack) == (pytest.approx(8 / 255), 3, 0.5, "pgd")
    assert at.craft_mode == recipe.at_craft_mode
    _, callbacks = build_recipe(get_recipe("stq_jr_at", at_craft_mode="inference" if at.craft_mode == "training"
                                           else "training"))
    assert callbacks[-1].craft_mode != at.craft_mode
    with pytest.raises(ValueError, match="at_craft_mode must be 'inference' or 'training'; got at_craft_mode='eval'"):
        get_recipe("stq_jr_at", at_craft_mode="eval")
    kws = get_recipe("stq_jr_at", dataset="speech_commands")
    model, callbacks = build_recipe(kws, clip_range=(-250.0, 60.0))
    assert (callbacks[-1].clip_min, callbacks[-1].clip_max, callbacks[-1].eps) == (-250.0, 60.0, 1.0)
    assert type(model.get_layer("block1_dw").depthwise_quantizer_internal).__name__ == "quantized_bits"
    assert model.count_params() == 24908
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 9 and all(bn.momentum == 0.9 for bn in bns)  # few steps per epoch on the shared split
    image_model, _ = build_recipe(get_recipe("stq_jr_at", dataset="cifar10"))
    assert all(layer.momentum == 0.99 for layer in image_model.layers
               if isinstance(layer, keras.layers.BatchNormalization))


def test_jr_layer_weights_are_width_normalised():
    recipe = get_recipe("stq_jr", dataset="cifar10")
    model, _ = build_recipe(recipe)
    w = jr_layer_weights(recipe, model)
    relus = [layer.name for layer in model.layers if type(layer).__name__ == "QActivation" and "relu" in layer.name]
    assert list(w) == relus + ["logits"] and len(relus) == 7  # the residual-branch quantizers are not activations
    assert any(name.endswith("_branch_q") for name in (layer.name for layer in model.layers))
    assert w["logits"] == 0.01
    assert w["relu_1"] == pytest.approx(1e-4 * 10 / (32 * 32 * 16))
    assert w["stack3_relu"] == pytest.approx(1e-4 * 10 / (8 * 8 * 64))
    plain = jr_layer_weights(dataclasses.replace(recipe, jr_normalize=False), model)
    assert plain["relu_1"] == 1e-4
    assert jr_layer_weights(dataclasses.replace(recipe, jr_layers="output"), model) == {"logits": 0.01}


def test_learning_rate_schedules():
    cos = learning_rate(get_recipe("stq_jr", epochs=10, learning_rate=0.002))
    assert cos(0) == pytest.approx(0.002) and cos(5) == pytest.approx(0.001) and cos(10) == pytest.approx(0.0)
    assert cos(3) == pytest.approx(0.001 * (1 + math.cos(math.pi * 0.3)))
    exp = learning_rate(get_recipe("mlcommons"))
    assert exp(100) == pytest.approx(1e-3 * 0.99 ** 100)
    step = learning_rate(get_recipe("mlcommons", dataset="speech_commands"))
    assert [step(e) for e in (0, 11, 12, 24)] == pytest.approx([1e-3, 1e-3, 5e-4, 2.5e-4])


def test_bad_recipe_arguments_name_the_argument():
    with pytest.raises(ValueError, match="recipe must be one of"):
        get_recipe("madry")
    with pytest.raises(ValueError, match="model='ds_cnn' does not fit dataset='cifar10'"):
        get_recipe("stq_jr", model="ds_cnn", dataset="cifar10")
    with pytest.raises(ValueError, match=r"unknown recipe field\(s\) \['epoch'\]"):
        get_recipe("stq_jr", epoch=3)
    with pytest.raises(ValueError, match="epochs must be a positive integer; got epochs=0"):
        get_recipe("stq_jr", epochs=0)
    with pytest.raises(ValueError, match="at_ratio must be in"):
        get_recipe("stq_jr_at", at_ratio=1.5)
    with pytest.raises(ValueError, match="not a quantizer spec"):
        get_recipe("stq_jr", policy="int3")
    with pytest.raises(ValueError, match="bn_momentum must be None or in"):
        get_recipe("stq_jr", bn_momentum=1.0)
    with pytest.raises(ValueError, match="bn_recalibration must be a non-negative integer"):
        get_recipe("stq_jr", bn_recalibration=-1)
    assert get_recipe("stq_jr").bn_recalibration == 5000 and get_recipe("mlcommons").bn_recalibration == 0
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match=f"filters must be None .* or a positive integer; got filters={bad!r}"):
            get_recipe("int4_at", filters=bad)


def test_recipe_round_trips_through_json():
    recipe = get_recipe("stq_jr_at", dataset="svhn", epochs=3)
    again = Recipe.from_dict(json.loads(json.dumps(recipe.to_dict())))
    assert again == recipe and again.quant_policy == recipe.quant_policy


def test_overridden_fields_are_named_in_the_notes():
    """The notes describe the named recipe's defaults; a run that overrides one says so in its run_config.json."""
    default = get_recipe("stq_jr_at")
    assert "Overridden" not in default.notes and get_recipe("stq_jr_at", epochs=60).notes == default.notes
    recipe = get_recipe("stq_jr_at", at_eps=4 / 255, jr_weight=0.0, epochs=60)
    assert recipe.notes.startswith(default.notes)
    assert recipe.notes.endswith(f" Overridden here: at_eps={4 / 255!r}, jr_weight=0.0.")
    assert get_recipe("stq_jr", jr_weight=0.003, notes="my sweep").notes == "my sweep"


def test_history_csv_replaces_rows_of_repeated_epochs(tmp_path):
    path = str(tmp_path / "h.csv")
    cb = HistoryCSV(path)
    cb.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    cb.model.compile(keras.optimizers.SGD(0.1), "mse")
    for epoch, loss in ((0, 3.0), (1, 2.0), (2, 1.5), (1, 1.9), (2, 1.4)):
        cb.on_epoch_begin(epoch)
        cb.on_epoch_end(epoch, {"loss": loss})
    rows = read_history(path)
    assert [(r["epoch"], r["loss"]) for r in rows] == [(0, 3.0), (1, 1.9), (2, 1.4)]
    assert all(r["lr"] == pytest.approx(0.1) for r in rows)


class _Killer(keras.callbacks.Callback):
    """Simulates a kill right after the end of epoch ``after`` (0-based) has been checkpointed."""

    def __init__(self, after):
        super().__init__()
        self.after = after

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.after:
            raise KeyboardInterrupt(f"killed after epoch {epoch}")


class _Seen(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


def test_a_killed_run_resumes_without_losing_finished_epochs(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(64, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, size=64)
    recipe = get_recipe("mlcommons", dataset="cifar10", epochs=4, batch_size=32)
    out = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        fit_recipe(recipe, (x, y), (x[:16], y[:16]), out, extra_callbacks=[_Killer(after=1)], verbose=0)
    first = read_history(f"{out}/history.csv")
    assert [r["epoch"] for r in first] == [0, 1]
    assert json.loads(open(f"{out}/run_config.json").read())["status"] == "training"
    from qrobust_keras.models import load_model

    after_two = load_model(f"{out}/last.h5").get_weights()

    seen = _Seen()
    model = fit_recipe(recipe, (x, y), (x[:16], y[:16]), out, extra_callbacks=[seen], verbose=0)
    assert seen.epochs == [2, 3]  # resumed at the first unfinished epoch
    rows = read_history(f"{out}/history.csv")
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert rows[:2] == first  # the finished epochs are kept as they were
    assert [r["lr"] for r in rows] == pytest.approx([1e-3 * 0.99 ** e for e in range(4)])
    assert json.loads(open(f"{out}/run_config.json").read())["status"] == "complete"
    # training continued from the checkpointed weights of epoch 2, not from a fresh initialisation
    fresh = build_recipe(recipe)[0].get_weights()
    moved_from_ckpt = sum(np.abs(a - b).sum() for a, b in zip(model.get_weights(), after_two))
    moved_from_fresh = sum(np.abs(a - b).sum() for a, b in zip(model.get_weights(), fresh))
    assert moved_from_ckpt < moved_from_fresh

    seen_again = _Seen()
    fit_recipe(recipe, (x, y), None, out, extra_callbacks=[seen_again], verbose=0)
    assert seen_again.epochs == []  # a complete run is not trained again


class _KillAtTrainEnd(keras.callbacks.Callback):
    """Simulates a kill after ``fit`` finished (Keras' backup already deleted) but before ``model.h5`` is saved."""

    def on_train_end(self, logs=None):
        raise KeyboardInterrupt("killed after fit")


def test_a_run_killed_after_its_last_epoch_is_not_trained_again(tmp_path):
    # issue 26: the rerun used to start again at epoch 1 from random weights
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(32, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, size=32)
    recipe = get_recipe("mlcommons", dataset="cifar10", epochs=2, batch_size=16)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        fit_recipe(recipe, (x, y), None, str(out), extra_callbacks=[_KillAtTrainEnd()], verbose=0)
    assert not [f for f in (out / "backup").rglob("*") if f.is_file()] and not (out / "model.h5").exists()
    from qrobust_keras.models import load_model

    fitted = load_model(str(out / "last.h5")).get_weights()
    seen = _Seen()
    model = fit_recipe(recipe, (x, y), None, str(out), extra_callbacks=[seen], verbose=0)
    assert seen.epochs == []
    assert [r["epoch"] for r in read_history(str(out / "history.csv"))] == [0, 1]
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), fitted))
    assert (out / "model.h5").exists()
    assert json.loads((out / "run_config.json").read_text())["status"] == "complete"


def test_resuming_with_a_different_recipe_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, size=(32, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, size=32)
    out = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        fit_recipe(get_recipe("mlcommons", epochs=2), (x, y), None, out, extra_callbacks=[_Killer(0)], verbose=0)
    with pytest.raises(ValueError, match=r"different recipe \(fields \['batch_size'\] differ\)"):
        fit_recipe(get_recipe("mlcommons", epochs=2, batch_size=16), (x, y), None, out, verbose=0)
    # a config written before a field existed resumes when the new field has its default value
    config = json.loads(open(f"{out}/run_config.json").read())
    del config["recipe"]["bn_momentum"]
    config["recipe"]["notes"] = "notes of an older library version"  # reworded notes do not block the resume
    open(f"{out}/run_config.json", "w").write(json.dumps(config))
    seen = _Seen()
    fit_recipe(get_recipe("mlcommons", epochs=2), (x, y), None, out, extra_callbacks=[seen], verbose=0)
    assert seen.epochs == [1]


class _FirstBatchWeights(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.weights = [w.copy() for w in self.model.get_weights()]


def test_init_weights_start_training_from_a_saved_model(tmp_path):
    """Fine-tuning: training starts from a saved model's weights (by layer name), recorded in the run config; a
    missing file or another architecture is a clear error. (The float recipe keeps the test fast; the copy is the
    same for stq_jr -> stq_jr_at, which docs/reproduction.md ran.)"""
    from qrobust_keras.models import copy_weights_by_name
    from qrobust_keras.recipes import save_model_atomic

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, size=(32, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, size=32)
    source = build_model(get_recipe("mlcommons"))
    for layer in source.layers:  # weights no fresh initialisation gives
        if layer.weights:
            layer.set_weights([w + 0.5 for w in layer.get_weights()])
    save_model_atomic(source, str(tmp_path / "start.h5"))
    start = _FirstBatchWeights()
    recipe = get_recipe("mlcommons", epochs=1, batch_size=16)
    fit_recipe(recipe, (x, y), None, str(tmp_path / "run"), extra_callbacks=[start], verbose=0,
               init_weights=str(tmp_path / "start.h5"))
    for got, want in zip(start.weights, source.get_weights()):
        np.testing.assert_array_equal(got, want)
    config = json.loads((tmp_path / "run" / "run_config.json").read_text())
    weighted = [layer for layer in source.layers if layer.weights]
    assert config["init_weights"]["layers"] == len(weighted) == 17
    assert config["init_weights"]["path"].endswith("start.h5")
    with pytest.raises(FileNotFoundError, match="init_weights='nope.h5' does not exist"):
        fit_recipe(recipe, (x, y), None, str(tmp_path / "run2"), verbose=0, init_weights="nope.h5")
    with pytest.raises(ValueError, match="layer 'conv_1'.* shapes"):
        copy_weights_by_name(source, build_model(get_recipe("mlcommons", input_shape=(32, 32, 1))))


def test_the_recipes_own_init_weights_start_training_and_a_missing_source_says_what_to_do(tmp_path, monkeypatch):
    """``fit_recipe`` without ``init_weights`` starts from the recipe's own ``init_weights``; when that source is
    missing the error names the recipe and the ways out, and nothing is trained."""
    from qrobust_keras.recipes import save_model_atomic

    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, size=16)
    source = build_model(get_recipe("mlcommons"))
    for layer in source.layers:
        if layer.weights:
            layer.set_weights([w - 0.25 for w in layer.get_weights()])
    save_model_atomic(source, str(tmp_path / "start.h5"))
    recipe = get_recipe("mlcommons", epochs=1, batch_size=16, init_weights=str(tmp_path / "start.h5"))
    start = _FirstBatchWeights()
    fit_recipe(recipe, (x, y), None, str(tmp_path / "run"), extra_callbacks=[start], verbose=0)
    for got, want in zip(start.weights, source.get_weights()):
        np.testing.assert_array_equal(got, want)
    assert json.loads((tmp_path / "run" / "run_config.json").read_text())["init_weights"]["layers"] == 17

    monkeypatch.delenv("QROBUST_MLCOMMONS_DIR", raising=False)
    int4_at = get_recipe("int4_at", epochs=1, batch_size=16)
    with pytest.raises(ValueError, match="recipe 'int4_at' starts from init_weights='mlcommons'.*"
                                         "QROBUST_MLCOMMONS_DIR.*init_weights='none'"):
        fit_recipe(int4_at, (x, y), None, str(tmp_path / "run2"), verbose=0)
    assert not (tmp_path / "run2" / "run_config.json").exists()
    seen = _Seen()
    fit_recipe(dataclasses.replace(int4_at, bn_recalibration=0), (x, y), None, str(tmp_path / "run3"),
               extra_callbacks=[seen], verbose=0, init_weights="none")
    config = json.loads((tmp_path / "run3" / "run_config.json").read_text())
    assert seen.epochs == [0] and "init_weights" not in config
    assert config["recipe"]["init_weights"] is None and "random weights" in config["recipe"]["notes"]


def test_a_wider_recipe_trains_from_random_weights_and_refuses_the_official_ones(tmp_path, shared_data):
    """``filters`` widens the recipe's model; the official weights fit only the published width, so a wider
    int4_at says so before anything is written, and trains from random weights when asked."""
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, size=16)
    recipe = get_recipe("int4_at", filters=8, epochs=1, batch_size=16)
    assert build_model(recipe).get_layer("stack3_conv_b").kernel.shape[-1] == 32
    assert build_model(get_recipe("int4_at", dataset="speech_commands", filters=32)).get_layer(
        "block2_pw").kernel.shape[-1] == 32
    mlcommons = f"mlcommons:{shared_data / 'models' / 'mlcommons'}"
    with pytest.raises(ValueError, match="the official MLCommons weights fit filters=16 only; this recipe has "
                                         "filters=8.*init_weights='none'"):
        fit_recipe(dataclasses.replace(recipe, init_weights=mlcommons), (x, y), None, str(tmp_path / "run"),
                   verbose=0)
    assert not (tmp_path / "run" / "run_config.json").exists()
    model = fit_recipe(recipe, (x, y), None, str(tmp_path / "run"), verbose=0, init_weights="none")
    config = json.loads((tmp_path / "run" / "run_config.json").read_text())
    assert config["recipe"]["filters"] == 8 and "init_weights" not in config
    assert model.get_layer("conv_1").kernel.shape[-1] == 8


def test_init_weights_mlcommons_starts_stq_jr_from_the_official_float_weights(tmp_path, shared_data, monkeypatch):
    """Quantization-aware training from the official float ResNet-8: its weights (input scale folded into bn_1)
    start the stochastic-ternary model; the path comes from 'mlcommons:DIR' or QROBUST_MLCOMMONS_DIR."""
    from qrobust_keras.models import load_mlcommons
    from qrobust_keras.models import copy_weights_by_name
    from qrobust_keras.recipes.run import _initial_model

    mlcommons_dir = shared_data / "models" / "mlcommons"
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, size=16)
    recipe = get_recipe("stq_jr", epochs=1, batch_size=16, bn_recalibration=0)
    start = _FirstBatchWeights()
    fit_recipe(recipe, (x, y), None, str(tmp_path / "run"), extra_callbacks=[start], verbose=0,
               init_weights=f"mlcommons:{mlcommons_dir}")
    folded = load_mlcommons("resnet8", mlcommons_dir, fold_input_scale=True)
    for got, want in zip(start.weights, folded.get_weights()):
        np.testing.assert_array_equal(got, want)
    config = json.loads((tmp_path / "run" / "run_config.json").read_text())
    assert config["init_weights"] == {"path": f"mlcommons:{os.path.abspath(mlcommons_dir)}", "layers": 17}
    monkeypatch.setenv("QROBUST_MLCOMMONS_DIR", str(mlcommons_dir))
    from_env, described = _initial_model("mlcommons", recipe)
    assert described == config["init_weights"]["path"]
    for got, want in zip(from_env.get_weights(), folded.get_weights()):
        np.testing.assert_array_equal(got, want)
    # int4_at starts there by itself (its init_weights='mlcommons' reads QROBUST_MLCOMMONS_DIR)
    start = _FirstBatchWeights()
    fit_recipe(get_recipe("int4_at", epochs=1, batch_size=16, bn_recalibration=0), (x, y), None,
               str(tmp_path / "int4_at"), extra_callbacks=[start], verbose=0)
    for got, want in zip(start.weights, folded.get_weights()):
        np.testing.assert_array_equal(got, want)
    assert _initial_model(folded, recipe) == (folded, f"model object {folded.name!r}")
    kws_recipe = get_recipe("stq_jr", dataset="speech_commands")
    kws, _ = _initial_model("mlcommons", kws_recipe)  # the reference DS-CNN starts the stochastic-ternary DS-CNN
    assert len(copy_weights_by_name(kws, build_model(kws_recipe))) == len([lay for lay in kws.layers if lay.weights])
    with pytest.raises(ValueError, match="init_weights must be a saved model path.*got int 3"):
        _initial_model(3, recipe)


def test_init_weights_zoo_starts_from_a_shipped_model():
    """'zoo:NAME' starts training from a zoo entry's weights (sha256 checked, recorded in run_config.json); an
    unknown name is refused with the available ones."""
    from qrobust_keras import zoo
    from qrobust_keras.recipes.run import _initial_model

    recipe = get_recipe("int4_at", at_eps=8 / 255)
    model, described = _initial_model("zoo:resnet8_int4_at2", recipe)
    shipped = zoo.card("resnet8_int4_at2")["files"]["model.h5"]
    assert described == f"zoo:resnet8_int4_at2 (sha256 {shipped})"
    for got, want in zip(model.get_weights(), zoo.load("resnet8_int4_at2").get_weights()):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(zoo.ZooError, match="name='nope' is not a zoo model; available: .*resnet8_int4_at2"):
        _initial_model("zoo:nope", recipe)
