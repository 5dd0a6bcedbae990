"""Figures of the per-problem analyses: accuracy histograms (paper Fig. 5) and response perplexity (Fig. 6).

Drawn like :mod:`eval.plot`: a ``Figure`` rendered by Agg, never through pyplot.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

from eval.analysis import HISTOGRAM_BINS
from eval.plot import _figure, _save
from eval.summarize import Summary


def compared_models(summary: Summary) -> list[dict]:
    """The models a figure sets against the base: the last checkpoint and every model without a step."""
    steps = [c for c in summary["checkpoints"] if c["step"] is not None]
    return [*steps[-1:], *(c for c in summary["checkpoints"] if c["step"] is None)]


def plot_accuracy_histograms(summary: Summary, out_png: str | Path) -> Path:
    """Problems per accuracy bin (correct / n), the base beside the compared models (paper Fig. 5)."""
    fig, ax = _figure()
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    models = [summary["base"], *compared_models(summary)]
    width = 0.8 / len(models)
    x = np.arange(len(HISTOGRAM_BINS))
    colours = matplotlib.colormaps["tab10"]
    for i, model in enumerate(models):
        colour = "black" if i == 0 else colours((i - 1) % 10)
        ax.bar(x + (i - (len(models) - 1) / 2) * width, model["accuracy_histogram"], width, color=colour,
               alpha=0.55 if i == 0 else 0.85, label=model["model"])  # fmt: skip
    ax.set_xticks(x, HISTOGRAM_BINS, rotation=45, ha="right", fontsize=8)
    ax.set_xlabel(f"accuracy on the problem (correct samples of n = {summary['n']})")
    ax.set_ylabel("problems")
    ax.set_title(f"Per-problem accuracy  ({summary['num_problems']} problems)")
    ax.legend(fontsize=8)
    return _save(fig, out_png)


def plot_perplexity(table: dict[str, dict], out_png: str | Path) -> Path:
    """Box plots of each model's response perplexity under the base and under itself (paper Fig. 6)."""
    fig, ax = _figure()
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    names = list(table)
    positions, data, colours = [], [], []
    for i, name in enumerate(names):
        for offset, scorer, colour in ((-0.18, "under_base", "tab:blue"), (0.18, "under_self", "tab:orange")):
            values = table[name].get(scorer, {}).get("values", [])
            if values:
                positions.append(i + offset)
                data.append(values)
                colours.append(colour)
    if not data:  # every kept response was empty (a model that only ends at once): nothing to score
        ax.text(0.5, 0.5, "no non-empty response to score", ha="center", va="center", transform=ax.transAxes)
    else:
        parts = ax.boxplot(data, positions=positions, widths=0.3, showfliers=False, patch_artist=True)
        for patch, colour in zip(parts["boxes"], colours):
            patch.set_facecolor(colour)
            patch.set_alpha(0.6)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("perplexity of a response")
    ax.set_title("Responses scored by the base model (blue) and by the model that wrote them (orange)")
    ax.title.set_fontsize(9)
    return _save(fig, out_png)
