"""RobustnessReport: the result of :func:`~qrobust_keras.evaluation.evaluate_robustness` as a small dataclass.

It renders a markdown table, round-trips through JSON (written atomically), plots accuracy against eps, and joins
reports of other budgets (:meth:`RobustnessReport.concat`) or of sample shards (:meth:`RobustnessReport.merge`).

Example:

>>> from qrobust_keras.evaluation import RobustnessReport
>>> r = RobustnessReport(model="m", n=4, norm="inf", eps=[2 / 255], attacks=["pgd"], clean_accuracy=0.75,
...                      accuracy={"pgd": [0.25]}, robust_accuracy=[0.25])
>>> print(r.to_markdown().splitlines()[2])
| attack | 2/255 |
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

import numpy as np

from qrobust_keras._files import atomic_write, new_figure, save_figure


def format_eps(eps: float, norm: str = "inf", scale: str = "image") -> str:
    """The one label of a budget in every table, plot and JSON key: ``8/255`` for L-inf image budgets on the 1/255
    grid (``0.5/255`` for half steps below 16/255), else a short decimal (``0.9``; L2 budgets, MFCC and waveform
    units)."""
    k = eps * 255
    if norm == "inf" and scale != "audio" and eps > 0:
        if abs(k - round(k)) < 1e-6:
            return f"{round(k)}/255"
        if k < 16 and abs(2 * k - round(2 * k)) < 1e-6:
            return f"{round(k, 1):g}/255"
    return f"{eps:.4g}"


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


@dataclasses.dataclass
class RobustnessReport:
    """Accuracy of a model under attacks at several budgets.

    Attributes:
        model: model name.
        n: number of evaluated samples.
        norm: "inf" or "2".
        eps: budgets, in input units.
        attacks: attack names (registry names), in the order run.
        clean_accuracy: fraction of the n samples classified correctly without attack.
        accuracy: per attack, per eps: fraction of the n samples that are clean-correct and still correct after
            the attack (in ``cascade`` mode: after this attack and all attacks before it).
        robust_accuracy: per eps, the per-sample worst case: a sample counts only if clean-correct and correct
            after every attack at that eps. Never above any entry of ``accuracy`` at that eps.
        mean_norm: per attack, per eps: mean perturbation norm (in ``norm``) over the samples the attack fooled
            (None when it fooled none).
        queries: per attack, per eps: mean model queries per attacked sample (black-box attacks; None otherwise).
        seconds: per attack, per eps: wall-clock seconds.
        total_seconds: wall-clock seconds of the whole evaluation.
        clean_correct: per sample, clean prediction correct.
        robust: per eps, per sample, worst-case robust (as in ``robust_accuracy``).
        broken_by: per eps, per sample, the first attack (in the order run) that broke it, ``"clean"`` when it was
            misclassified without attack, None when it stayed robust.
        settings: seed, scale, batch size, cascade, overrides, the model's ``model_sha256``: what is needed to rerun
            the evaluation; a shard's report also holds its ``shard`` record (see :meth:`merge`).
        notes: remarks collected from the attacks (forward mode, EOT, ...).
        diagnostics: results attached by diagnostic tools (e.g. gradient-masking checks), by name; each value is a
            JSON-serializable dict, optionally with a ``"flags"`` list of warnings shown in :meth:`to_markdown`.
    """

    model: str
    n: int
    norm: str
    eps: list[float]
    attacks: list[str]
    clean_accuracy: float
    accuracy: dict[str, list[float]]
    robust_accuracy: list[float]
    mean_norm: dict[str, list[float | None]] = dataclasses.field(default_factory=dict)
    queries: dict[str, list[float | None]] = dataclasses.field(default_factory=dict)
    seconds: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    total_seconds: float = 0.0
    clean_correct: list[bool] = dataclasses.field(default_factory=list)
    robust: list[list[bool]] = dataclasses.field(default_factory=list)
    broken_by: list[list[str | None]] = dataclasses.field(default_factory=list)
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    diagnostics: dict[str, Any] = dataclasses.field(default_factory=dict)

    def attach_diagnostics(self, name: str, result: Any) -> None:
        """Store a diagnostic result (a JSON-serializable dict, optionally with a ``"flags"`` list) under ``name``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"diagnostic name must be a non-empty string; got {name!r}")
        self.diagnostics[name] = result

    @property
    def flags(self) -> list[str]:
        """All warnings raised by attached diagnostics, as ``"name: flag"`` strings."""
        out = []
        for name, result in self.diagnostics.items():
            if isinstance(result, dict):
                out += [f"{name}: {flag}" for flag in result.get("flags", []) or []]
        return out

    def worst_case(self, eps: float) -> float:
        """Robust accuracy (worst case over attacks) at budget ``eps`` (must be one of ``self.eps``)."""
        for i, e in enumerate(self.eps):
            if math.isclose(e, eps, rel_tol=1e-9, abs_tol=1e-12):
                return self.robust_accuracy[i]
        raise ValueError(f"eps={eps!r} was not evaluated; evaluated: {self.eps}")

    def broken_counts(self) -> dict[str, list[int]]:
        """Per attack, per eps: how many samples that attack broke first (from :attr:`broken_by`)."""
        return {name: [sum(1 for who in row if who == name) for row in self.broken_by] for name in self.attacks}

    @property
    def suite_label(self) -> str:
        """What ran, in words: the suite's label, or the custom attack list (never "standard" unless it was)."""
        from qrobust_keras.evaluation.suite import custom_label

        return self.settings.get("suite_label") or custom_label(self.attacks)

    def budget_labels(self) -> list[str]:
        """The label of each budget, from its eps, the norm and the report's scale (:func:`format_eps`)."""
        return [format_eps(e, self.norm, self.settings.get("scale", "image")) for e in self.eps]

    def to_markdown(self) -> str:
        """A markdown summary: accuracy table (attacks x eps, worst case last) and per-run details."""
        cols = self.budget_labels()
        norm_name = "L-inf" if self.norm == "inf" else "L2"
        lines = [f"Robustness of `{self.model}` on {self.n} samples, {norm_name}; clean accuracy "
                 f"{100 * self.clean_accuracy:.1f}%. Evaluation: {self.suite_label}.", "",
                 "| attack | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for name in self.attacks:
            lines.append(f"| {name} | " + " | ".join(f"{100 * a:.1f}%" for a in self.accuracy[name]) + " |")
        lines.append("| **worst case** | " + " | ".join(f"**{100 * a:.1f}%**" for a in self.robust_accuracy) + " |")
        if self.settings.get("cascade"):
            lines += ["", "Cascade mode: each attack ran only on the samples that survived the previous ones, so "
                      "each row is the cumulative robust accuracy after that attack."]
        lines += ["", "| attack | eps | accuracy | broke first | mean norm of successful perturbations | "
                  "queries/sample | seconds |", "|---|---|---|---|---|---|---|"]
        counts = self.broken_counts() if self.broken_by else {}
        for name in self.attacks:
            for i, e in enumerate(self.eps):
                first = counts[name][i] if counts else "-"
                norm = (self.mean_norm.get(name) or [None] * len(self.eps))[i]
                queries = (self.queries.get(name) or [None] * len(self.eps))[i]
                secs = (self.seconds.get(name) or [float("nan")] * len(self.eps))[i]
                lines.append(f"| {name} | {cols[i]} | {100 * self.accuracy[name][i]:.1f}% | {first} | "
                             f"{'-' if norm is None else f'{norm:.4g}'} | "
                             f"{'-' if queries is None else f'{queries:.0f}'} | {secs:.1f} |")
        lines.append("")
        lines.append(f"Total {self.total_seconds:.1f} s.")
        if self.notes:
            lines += ["", "Notes:"] + [f"- {note}" for note in self.notes]
        if self.diagnostics:
            lines += ["", "Diagnostics:"]
            for name, result in self.diagnostics.items():
                if isinstance(result, dict):
                    shown = ", ".join(f"{k}={v}" for k, v in result.items() if k != "flags")
                    lines.append(f"- {name}: {shown}")
                    lines += [f"  - WARNING: {flag}" for flag in result.get("flags", []) or []]
                else:
                    lines.append(f"- {name}: {result}")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict (NaN becomes None)."""
        return _nan_to_none(dataclasses.asdict(self))

    def to_json(self, path: str | os.PathLike) -> None:
        """Write the report as JSON, atomically (temporary file + ``os.replace``)."""
        data = json.dumps(self.to_dict(), indent=1, allow_nan=False).encode("utf-8")
        atomic_write(path, data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RobustnessReport":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"not a RobustnessReport: unknown fields {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def concat(cls, reports: list["RobustnessReport"]) -> "RobustnessReport":
        """One report over the budgets of ``reports`` (same model, samples, norm and attacks; evaluated one budget
        at a time, e.g. to keep each budget's result when a long evaluation is interrupted).

        Raises:
            ValueError: no reports, or reports of different samples, norms or attacks.
        """
        if not reports:
            raise ValueError("reports must hold at least one RobustnessReport; got an empty list")
        first = reports[0]
        for other in reports[1:]:
            if (other.n, other.norm, other.attacks, other.clean_correct) != (first.n, first.norm, first.attacks,
                                                                            first.clean_correct):
                raise ValueError("reports differ in samples, norm or attacks; only budgets can be concatenated")
        joined = lambda field: {a: sum((getattr(r, field).get(a, []) for r in reports), []) for a in first.attacks}  # noqa: E731
        settings = dict(first.settings, eps_labels=sum((r.settings.get("eps_labels", []) for r in reports), []))
        notes = list(dict.fromkeys(n for r in reports for n in r.notes))
        return cls(model=first.model, n=first.n, norm=first.norm, eps=sum((r.eps for r in reports), []),
                   attacks=list(first.attacks), clean_accuracy=first.clean_accuracy, accuracy=joined("accuracy"),
                   robust_accuracy=sum((r.robust_accuracy for r in reports), []), mean_norm=joined("mean_norm"),
                   queries=joined("queries"), seconds=joined("seconds"),
                   total_seconds=sum(r.total_seconds for r in reports), clean_correct=list(first.clean_correct),
                   robust=sum((r.robust for r in reports), []), broken_by=sum((r.broken_by for r in reports), []),
                   settings=settings, notes=notes)

    def split(self) -> list["RobustnessReport"]:
        """One report per budget, in order: the inverse of :meth:`concat` (``concat(r.split())`` equals ``r`` up to
        ``total_seconds``, which each part shares equally). Per-attack lists keep the entry of their budget, and
        ``settings["eps_labels"]`` its label.
        """
        labels = self.settings.get("eps_labels") or self.budget_labels()
        pick = lambda field, i: {a: [v[i]] for a, v in getattr(self, field).items()}  # noqa: E731
        return [dataclasses.replace(
            self, eps=[e], accuracy=pick("accuracy", i), robust_accuracy=[self.robust_accuracy[i]],
            mean_norm=pick("mean_norm", i), queries=pick("queries", i), seconds=pick("seconds", i),
            total_seconds=self.total_seconds / len(self.eps), clean_correct=list(self.clean_correct),
            robust=[list(self.robust[i])], broken_by=[list(self.broken_by[i])],
            settings=dict(self.settings, eps_labels=[labels[i]]), notes=list(self.notes), diagnostics={})
            for i, e in enumerate(self.eps)]

    @classmethod
    def merge(cls, reports: list["RobustnessReport"]) -> "RobustnessReport":
        """One report over the samples of ``reports``: the shards of one evaluation
        (``evaluate_robustness(..., shard=(i, N))`` for ``i = 0 .. N-1``, in any order), equal per sample to the
        evaluation run unsharded.

        Per-sample fields (``clean_correct``, ``robust``, ``broken_by``) are the shards' lists joined in shard order.
        Accuracies are recounted: with ``n_s`` the samples of shard ``s``, ``accuracy = sum_s round(acc_s n_s) / n``
        (the same float as the unsharded count / n), and ``clean_accuracy``/``robust_accuracy`` are the means of the
        joined masks. ``mean_norm`` is the mean of the shards' means weighted by the samples each attack broke,
        ``queries`` weighted by the samples each attack ran on (both equal to the unsharded value up to float
        rounding); ``seconds`` and ``total_seconds`` are summed over the shards (compute time, not wall time).
        ``settings`` are the shards' common settings without the shard record.

        Raises:
            ValueError: the shards do not fit together, naming what differs (see
                :func:`~qrobust_keras.evaluation.shards.check_shards`: model, seed, eps, attacks, settings, the
                sample list, a missing or duplicated shard).
        """
        from qrobust_keras.evaluation.shards import check_shards

        shards = check_shards(reports)
        first = shards[0]
        n = sum(r.n for r in shards)
        eps_idx = range(len(first.eps))
        joined = lambda field: [sum((list(getattr(r, field)[i]) for r in shards), []) for i in eps_idx]  # noqa: E731
        counts = {r.settings["shard"]["index"]: _attack_counts(r) for r in shards}

        def weighted(field: str, weight: str) -> dict[str, list[float | None]]:
            out: dict[str, list[float | None]] = {}
            for a in first.attacks:
                out[a] = []
                for i in eps_idx:
                    parts = [(getattr(r, field).get(a, [None] * len(first.eps))[i],
                              counts[r.settings["shard"]["index"]][a][i][weight]) for r in shards]
                    parts = [(v, w) for v, w in parts if v is not None and w > 0]
                    total = sum(w for _, w in parts)
                    out[a].append(sum(v * w for v, w in parts) / total if total else None)
            return out

        clean_correct = sum((list(r.clean_correct) for r in shards), [])
        robust = joined("robust")
        accuracy = {a: [float(sum(round(r.accuracy[a][i] * r.n) for r in shards)) / n for i in eps_idx]
                    for a in first.attacks}
        seconds = {a: [sum((r.seconds.get(a) or [0.0] * len(first.eps))[i] for r in shards) for i in eps_idx]
                   for a in first.attacks}
        settings = {k: v for k, v in first.settings.items() if k != "shard"}
        return cls(model=first.model, n=n, norm=first.norm, eps=list(first.eps), attacks=list(first.attacks),
                   clean_accuracy=float(np.asarray(clean_correct, bool).mean()), accuracy=accuracy,
                   robust_accuracy=[float(sum(row)) / n for row in robust], mean_norm=weighted("mean_norm", "broken"),
                   queries=weighted("queries", "attacked"), seconds=seconds,
                   total_seconds=sum(r.total_seconds for r in shards), clean_correct=clean_correct, robust=robust,
                   broken_by=joined("broken_by"), settings=settings,
                   notes=list(dict.fromkeys(note for r in shards for note in r.notes)))

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "RobustnessReport":
        """Read a report written by :meth:`to_json`."""
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def plot(self, path: str | os.PathLike, title: str | None = None) -> None:
        """Save accuracy vs eps as PNG (one line per attack, the worst case in bold black, clean dashed).

        Uses matplotlib's Agg canvas directly (no global backend switch); written atomically.
        """
        fig = new_figure((6, 4), dpi=120)
        ax = fig.add_subplot(1, 1, 1)
        xs = [e * 255 if self.norm == "inf" else e for e in self.eps]
        for name in self.attacks:
            ax.plot(xs, [100 * a for a in self.accuracy[name]], marker="o", linewidth=1.2, label=name)
        ax.plot(xs, [100 * a for a in self.robust_accuracy], marker="s", color="black", linewidth=2.5,
                label="worst case")
        ax.axhline(100 * self.clean_accuracy, color="gray", linestyle="--", linewidth=1, label="clean")
        ax.set_xlabel("eps (x 1/255)" if self.norm == "inf" else "eps (L2)")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.set_title(title or f"{self.model}: accuracy under attack ({'L-inf' if self.norm == 'inf' else 'L2'})\n"
                     f"{self.suite_label}", fontsize=8)
        ax.legend(fontsize=8)
        fig.tight_layout()
        save_figure(fig, path)


def _attack_counts(report: RobustnessReport) -> dict[str, list[dict[str, int]]]:
    """Per attack, per eps: how many samples the attack ran on (``attacked``) and broke (``broken``), recounted from
    the accuracies: it ran on the clean-correct samples (in cascade mode: those every earlier attack left robust,
    ``n`` times the previous row), and ``broken`` is that number minus ``n`` times its own row. These weigh the
    shards' ``queries`` and ``mean_norm`` in :meth:`RobustnessReport.merge`."""
    clean = int(sum(bool(c) for c in report.clean_correct))
    out: dict[str, list[dict[str, int]]] = {}
    for j, a in enumerate(report.attacks):
        out[a] = []
        for i, e in enumerate(report.eps):
            before = clean
            if report.settings.get("cascade") and j > 0:
                before = round(report.accuracy[report.attacks[j - 1]][i] * report.n)
            after = round(report.accuracy[a][i] * report.n)
            ran = before if e > 0 else 0
            out[a].append({"attacked": ran, "broken": before - after if e > 0 else 0})
    return out


def evaluation_markdown(ev: dict[str, Any], title: str) -> str:
    """Markdown table of a :func:`~qrobust_keras.evaluation.run_attacks` result (attacks x eps, worst case last,
    C&W-L2 distortion when it ran)."""
    labels = list(ev["worst"])
    what_ran = ev.get("suite_label", "")
    if ev.get("upper_bound") and "upper bound" not in what_ran:
        what_ran += " (black-box only: an upper bound)"
    lines = [f"## {title}", "", f"{ev['n']} samples; clean accuracy {100 * ev['clean']:.1f}%."
             + (f" Evaluation: {what_ran}." if what_ran else ""), "",
             "| attack | " + " | ".join(f"eps {lab}" for lab in labels) + " |",
             "|---|" + "---|" * len(labels)]
    for name, row in ev["results"].items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * row[lab]:.1f}%" for lab in labels) + " |")
    worst = "upper bound (black-box only)" if ev.get("upper_bound") else "worst case"
    lines.append(f"| **{worst}** | " + " | ".join(f"**{100 * ev['worst'][lab]:.1f}%**" for lab in labels) + " |")
    cw = ev.get("cw_l2_distortion")
    if cw:
        def fmt(v: float | None) -> str:
            return "-" if v is None else f"{v:.4g}"

        lines += ["", f"C&W-L2 (minimum norm): fools {100 * cw['success']:.1f}% of the {cw['attacked']} correctly "
                  f"classified samples; distortion of the examples found: L2 median {fmt(cw['median_l2'])} / mean "
                  f"{fmt(cw['mean_l2'])}, L-inf median {fmt(cw['median_linf'])} / mean {fmt(cw['mean_linf'])} "
                  "(input units)."]
    return "\n".join(lines) + "\n"


def plot_accuracy_vs_eps(evaluations: dict[str, dict[str, Any]], path: str | os.PathLike,
                         title: str = "robust accuracy vs eps") -> str:
    """Several models in one PNG: per model its worst case (solid) and each attack (dashed), from
    :func:`~qrobust_keras.evaluation.run_attacks` results; a result with an ``upper_bound`` note (black-box attacks
    only) is drawn dotted and labelled as an upper bound. Written atomically; returns the path."""
    fig = new_figure((6, 4))
    ax = fig.add_subplot(1, 1, 1)
    for label, ev in evaluations.items():
        keys = list(ev["worst"])
        xs = [0.0] + [e * 255 for e in ev["eps"]]
        bound = bool(ev.get("upper_bound"))  # black-box only: drawn dotted, never labelled a worst case
        line, = ax.plot(xs, [100 * ev["clean"]] + [100 * ev["worst"][k] for k in keys], "o:" if bound else "o-",
                        label=f"{label} ({'black-box only: upper bound' if bound else 'worst case'})")
        for name, row in ev["results"].items():
            ax.plot(xs, [100 * ev["clean"]] + [100 * row[k] for k in keys], "--", alpha=0.5,
                    color=line.get_color(), label=f"{label}: {name}")
    ax.set_xlabel("eps (x 1/255, L-inf)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
