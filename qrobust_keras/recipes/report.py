"""The report of a run folder: its recipe, training curves and every evaluation found below it (``qrobust report``).

Example (a run folder written by :func:`~qrobust_keras.recipes.fit_recipe` or ``qrobust train``):

>>> from qrobust_keras.recipes.report import write_run_report
>>> write_run_report("runs/stq_jr")                      # doctest: +SKIP
'runs/stq_jr/report.md'
"""

from __future__ import annotations

import glob
import json
import os

from qrobust_keras._files import atomic_write, new_figure, save_figure
from qrobust_keras.recipes.run import HISTORY_CSV, RUN_CONFIG, read_history

__all__ = ["plot_history", "write_run_report"]


def plot_history(rows: list[dict], path: str) -> str:
    """Loss and accuracy curves (train and validation) of a history CSV, as PNG (written atomically)."""
    epochs = [r["epoch"] + 1 for r in rows]
    fig = new_figure((9, 3.5))
    axes = fig.subplots(1, 2)
    for ax, key in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "o-"), ("val_", "s--")):
            vals = [r.get(prefix + key) for r in rows]
            if any(v is not None for v in vals):
                ax.plot([e for e, v in zip(epochs, vals) if v is not None], [v for v in vals if v is not None],
                        style, label=(prefix or "train_") + key)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def _recipe_lines(config_path: str) -> list[str]:
    with open(config_path) as f:
        config = json.load(f)
    recipe = config.get("recipe", {})
    info = config.get("run_info", {})
    return ["## Recipe", "", f"- recipe **{recipe.get('name')}**, model {recipe.get('model')}, dataset "
            f"{recipe.get('dataset')}; status: {config.get('status')}",
            f"- data: {info.get('source', '?')} ({info.get('n_train', '?')} train / {info.get('n_test', '?')} "
            f"validation samples){' - SYNTHETIC' if info.get('synthetic') else ''}",
            f"- epochs {recipe.get('epochs')}, batch {recipe.get('batch_size')}, {recipe.get('optimizer')} lr "
            f"{recipe.get('learning_rate')} ({recipe.get('lr_schedule')}), JR weight {recipe.get('jr_weight')} "
            f"({recipe.get('jr_layers')}), AT eps {recipe.get('at_eps')}",
            f"- policy: `{json.dumps(recipe.get('policy'))}`", ""]


def _history_lines(history_path: str, out: str) -> list[str]:
    rows = read_history(history_path)
    png = plot_history(rows, os.path.join(os.path.dirname(out) or ".", "training.png"))
    total = sum(r.get("seconds", 0.0) for r in rows)
    lines = ["## Training", "", f"{len(rows)} finished epochs, {total / 60:.1f} min of training.", "",
             "| epoch | loss | accuracy | val_loss | val_accuracy | jr | lr | seconds |",
             "|---|---|---|---|---|---|---|---|"]

    def f(v, pct=False):
        return "-" if v is None else (f"{100 * v:.1f}%" if pct else f"{v:.4g}")

    for r in rows:
        lines.append(f"| {r['epoch'] + 1} | {f(r.get('loss'))} | {f(r.get('accuracy'), True)} | "
                     f"{f(r.get('val_loss'))} | {f(r.get('val_accuracy'), True)} | {f(r.get('jr'))} | "
                     f"{f(r.get('lr'))} | {f(r.get('seconds'))} |")
    return lines + ["", f"![training curves]({os.path.relpath(png, os.path.dirname(out) or '.')})", ""]


def write_run_report(run_dir: str, out: str | None = None) -> str:
    """Write a markdown report of a run folder: its recipe, the training history (table and ``training.png``) and
    every ``evaluation.json`` found below it (tables and ``accuracy_vs_eps.png``).

    Returns:
        The path of the markdown file.

    Raises:
        FileNotFoundError: ``run_dir`` missing, or holding neither history.csv nor any evaluation.json.
    """
    from qrobust_keras.evaluation.report import evaluation_markdown, plot_accuracy_vs_eps

    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"RUN_DIR={run_dir!r} is not a folder; pass the --out folder of `qrobust train`")
    out = out or os.path.join(run_dir, "report.md")
    history_path = os.path.join(run_dir, HISTORY_CSV)
    evals = sorted(glob.glob(os.path.join(run_dir, "**", "evaluation.json"), recursive=True))
    if not os.path.exists(history_path) and not evals:
        raise FileNotFoundError(f"RUN_DIR={run_dir!r} holds neither {HISTORY_CSV} nor any evaluation.json; run "
                                "`qrobust train --out RUN_DIR` or `qrobust evaluate ... --out RUN_DIR/eval` first")
    lines = [f"# Run report: {os.path.abspath(run_dir)}", ""]
    if os.path.exists(os.path.join(run_dir, RUN_CONFIG)):
        lines += _recipe_lines(os.path.join(run_dir, RUN_CONFIG))
    if os.path.exists(history_path):
        lines += _history_lines(history_path, out)
    loaded = {}
    for path in evals:
        with open(path) as fh:
            ev = json.load(fh)
        label = os.path.relpath(os.path.dirname(path), run_dir)
        label = os.path.basename(ev.get("model", "")) or label if label == "." else label
        loaded[label] = ev
        lines.append(evaluation_markdown(ev, f"Evaluation: {label}"))
    if loaded:
        png = plot_accuracy_vs_eps(loaded, os.path.join(os.path.dirname(out) or ".", "accuracy_vs_eps.png"))
        lines += [f"![accuracy vs eps]({os.path.relpath(png, os.path.dirname(out) or '.')})", ""]
    atomic_write(out, "\n".join(lines) + "\n")
    return out
