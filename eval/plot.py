"""Summary -> PNGs: pass@k curves (the reasoning boundary) and pass@1 / pass@k_max over training.

Figures are built with ``matplotlib.figure.Figure`` and rendered by Agg, never through pyplot:
no display is needed, no global backend is switched under the caller, and no figure leaks into
pyplot's registry when a sweep plots many times. Reads the summary only (``eval.summarize``).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

from eval.summarize import Summary, one_problem

MAX_LEGEND_CHECKPOINTS = 10  # beyond this the legend would bury the curves: a colour bar names the steps
# viridis without its palest yellow, which vanishes on a white background
_STEP_COLOURS: Colormap = ListedColormap(matplotlib.colormaps["viridis"](np.linspace(0.0, 0.88, 256)))
_PASS1_COLOUR, _PASSK_COLOUR = "tab:blue", "tab:orange"


def plot_passk_curves(summary: Summary, out_png: str | Path) -> Path:
    """pass@k against k (log2 axis): base as a thick dashed black line, checkpoints by step colour
    (models without a step in colours of their own), each with its interval as a band."""
    fig, ax = _figure()
    ks = sorted(summary["base"]["pass_at_k"])
    checkpoints = [c for c in summary["checkpoints"] if c["step"] is not None]
    others = [c for c in summary["checkpoints"] if c["step"] is None]
    norm = _step_norm([c["step"] for c in checkpoints])

    for ckpt in checkpoints:
        label = f"step {ckpt['step']}" if len(checkpoints) <= MAX_LEGEND_CHECKPOINTS else None
        _curve(ax, ks, ckpt, _STEP_COLOURS(norm(ckpt["step"])), label, band=ckpt is checkpoints[-1])
    for i, model in enumerate(others):
        _curve(ax, ks, model, matplotlib.colormaps["tab10"](i % 10), model["model"], band=True)
    # Drawn last so it stays visible where checkpoint curves cross it.
    _curve(ax, ks, summary["base"], "black", _base_label(summary["base"]["model"]), band=True, base=True)
    if len(checkpoints) > MAX_LEGEND_CHECKPOINTS:
        fig.colorbar(ScalarMappable(norm=norm, cmap=_STEP_COLOURS), ax=ax, label="training step")

    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(ks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(k) for k in ks], rotation=45 if len(ks) > 9 else 0)
    ax.set_xlim(ks[0] / 1.15, ks[-1] * 1.15)
    ax.set_xlabel("k (samples per problem drawn)")
    ax.set_ylabel("pass@k")
    ax.set_title(f"pass@k: base vs RL checkpoints  ({summary['num_problems']} problems, n = {summary['n']})")
    ax.legend(loc="lower right", fontsize=9, title="model", title_fontsize=9)
    _band_note(fig, summary, "bands: the base's, the last checkpoint's and other models'")
    return _save(fig, out_png)


def _curve(ax: Axes, ks: list[int], model: dict, colour, label: str | None, band: bool, base: bool = False) -> None:
    """One pass@k curve, with its interval as a translucent band when asked."""
    style = {"linestyle": "--", "linewidth": 3, "zorder": 3} if base else {"marker": "o", "markersize": 3, "linewidth": 1.6}
    ax.plot(ks, _percent(model["pass_at_k"], ks), color=colour, label=label, **style)
    if band and "pass_at_k_ci" in model:
        lo = [100 * model["pass_at_k_ci"][k][0] for k in ks]
        hi = [100 * model["pass_at_k_ci"][k][1] for k in ks]
        ax.fill_between(ks, lo, hi, color=colour, alpha=0.12, linewidth=0)


def _band_note(fig: Figure, summary: Summary, which: str) -> None:
    """The figure's foot: what the bands are and how much one problem weighs."""
    if "ci_level" in summary:
        fig.supxlabel(_band_words(summary, which), fontsize=7, color="dimgrey")


def _band_words(summary: Summary, which: str) -> str | None:
    if "ci_level" not in summary:
        return None
    return f"{which}: {100 * summary['ci_level']:g}% paired bootstrap over problems; {one_problem(summary)}"


def plot_over_steps(summary: Summary, out_png: str | Path) -> Path:
    """Checkpoints' pass@1 and pass@k_max against step, the base's as horizontal lines, ΔSE marked."""
    fig, ax = _figure()
    k_max, base = summary["k_max"], summary["base"]["pass_at_k"]
    checkpoints = [c for c in summary["checkpoints"] if c["step"] is not None]
    steps = [c["step"] for c in checkpoints]
    pass1 = [100 * c["pass_at_k"][1] for c in checkpoints]
    passk = [100 * c["pass_at_k"][k_max] for c in checkpoints]
    if checkpoints and "pass_at_k_ci" in checkpoints[0]:
        for k, colour in ((1, _PASS1_COLOUR), (k_max, _PASSK_COLOUR)):
            lo = [100 * c["pass_at_k_ci"][k][0] for c in checkpoints]
            hi = [100 * c["pass_at_k_ci"][k][1] for c in checkpoints]
            ax.fill_between(steps, lo, hi, color=colour, alpha=0.15, linewidth=0)

    ax.axhline(100 * base[1], color=_PASS1_COLOUR, linestyle="--", linewidth=1.5, label="base pass@1")
    ax.plot(steps, pass1, color=_PASS1_COLOUR, marker="o", linewidth=2, label="checkpoint pass@1")
    if k_max != 1:
        ax.axhline(100 * base[k_max], color=_PASSK_COLOUR, linestyle="--", linewidth=1.5,
                   label=f"base pass@{k_max}")
        ax.plot(steps, passk, color=_PASSK_COLOUR, marker="s", linewidth=2, label=f"checkpoint pass@{k_max}")
    if checkpoints:
        ax.fill_between(steps, pass1, 100 * base[k_max], color="grey", alpha=0.15,
                        label=f"ΔSE = base pass@{k_max} - pass@1")
        _mark_delta_se(ax, checkpoints[-1]["step"], pass1[-1], 100 * base[k_max])

    if 0 < len(steps) <= 12:
        ax.xaxis.set_major_locator(FixedLocator(steps))  # tick every checkpoint, never a fractional step
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("training step")
    ax.set_ylabel("accuracy")
    ax.set_title(
        f"pass@1 and pass@{k_max} over training  ({summary['num_problems']} problems, n = {summary['n']})"
    )
    # Below the axes: inside, it would sit on the ΔSE band it explains.
    legend = fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=3, fontsize=9,
                        title=_band_words(summary, "coloured bands"), title_fontsize=7)  # fmt: skip
    legend.get_title().set_color("dimgrey")
    return _save(fig, out_png)


def _mark_delta_se(ax: Axes, step: int, pass1: float, base_passk: float) -> None:
    """A double arrow from the last checkpoint's pass@1 up to the base's pass@k_max, labelled."""
    ax.annotate("", xy=(step, base_passk), xytext=(step, pass1),
                arrowprops={"arrowstyle": "<->", "color": "dimgrey", "linewidth": 1.2})
    ax.annotate(f"ΔSE = {base_passk - pass1:+.1f} pts", xy=(step, (pass1 + base_passk) / 2),
                xytext=(-8, 0), textcoords="offset points", ha="right", va="center",
                fontsize=9, color="dimgrey")


def _base_label(model: str) -> str:
    return "base" if model == "base" else f"base ({model})"


def _step_norm(steps: list[int]) -> Normalize:
    """Maps the first step to the dark end of the colour map and the last to the light end."""
    low, high = min(steps, default=0), max(steps, default=1)
    return Normalize(low, high if high > low else low + 1)


def _figure() -> tuple[Figure, Axes]:
    fig = Figure(figsize=(7.5, 4.8), dpi=130, layout="constrained")
    FigureCanvasAgg(fig)  # attaches the Agg canvas that savefig renders through
    ax = fig.add_subplot()
    # ticks on round numbers (1, 2 or 5 times a power of ten), labelled as they are: never 2.5 shown as "2%"
    ax.yaxis.set_major_locator(MaxNLocator(steps=[1, 2, 5, 10]))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}%"))
    ax.grid(True, which="major", alpha=0.3)
    return fig, ax


def _percent(curve: dict[int, float], ks: list[int]) -> list[float]:
    return [100 * curve[k] for k in ks]


def _save(fig: Figure, out_png: str | Path) -> Path:
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    return out_png


MAX_BANDED_GROUPS = 3  # beyond this, overlapping bands hide the curves: the base keeps its band, the table has the rest


def plot_comparison(comparison: dict, out_png: str | Path) -> Path:
    """pass@k curves of each group's last checkpoint against the shared base (log2 k axis), with bands
    while there are few groups."""
    fig, ax = _figure()
    ks = sorted(comparison["base"]["pass_at_k"])
    colours = matplotlib.colormaps["tab10"]
    banded = len(comparison["groups"]) <= MAX_BANDED_GROUPS
    for i, group in enumerate(comparison["groups"]):
        seeds = f", {len(group['seeds'])} seeds" if len(group["seeds"]) > 1 else ""
        _curve(ax, ks, group, colours(i % 10), f"{group['label']} (step {group['step']}{seeds})", band=banded)
    _curve(ax, ks, comparison["base"], "black", "base", band=True, base=True)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(ks))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda k, _: f"{int(k)}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("k (samples per problem drawn)")
    ax.set_ylabel("pass@k")
    ax.set_title(f"pass@k by configuration  ({comparison['num_problems']} problems, n = {comparison['n']})")
    ax.legend(fontsize=8, loc="lower right")
    _band_note(fig, comparison, "bands" if banded else "band (the base's)")
    return _save(fig, out_png)


def plot_comparison_over_steps(comparison: dict, out_png: str | Path) -> Path:
    """pass@1 (solid) and pass@k_max (dashed) of each group at every evaluated step, with bands while
    there are few groups; the base's as grey horizontal lines (paper Fig. 1 right)."""
    fig, ax = _figure()
    k_max, base = comparison["k_max"], comparison["base"]["pass_at_k"]
    colours = matplotlib.colormaps["tab10"]
    banded = len(comparison["groups"]) <= MAX_BANDED_GROUPS
    ax.axhline(100 * base[1], color="grey", linestyle="-", linewidth=1.2)
    ax.axhline(100 * base[k_max], color="grey", linestyle="--", linewidth=1.2)
    handles = [Line2D([], [], color="grey", label="base"), Line2D([], [], color="black", label="pass@1"),
               Line2D([], [], color="black", linestyle="--", label=f"pass@{k_max}")]  # fmt: skip
    for i, group in enumerate(comparison["groups"]):
        rows = group["over_steps"]
        steps = [r["step"] for r in rows]
        for k, style in ((1, "-"), (k_max, "--")):
            ax.plot(steps, [100 * r["pass_at_k"][k] for r in rows], color=colours(i % 10), linestyle=style, marker="o",
                    markersize=3)  # fmt: skip
            if banded:
                ax.fill_between(steps, [100 * r["pass_at_k_ci"][k][0] for r in rows],
                                [100 * r["pass_at_k_ci"][k][1] for r in rows], color=colours(i % 10), alpha=0.1, linewidth=0)  # fmt: skip
        handles.append(Line2D([], [], color=colours(i % 10), marker="o", markersize=3, label=group["label"]))
    steps = sorted({r["step"] for g in comparison["groups"] for r in g["over_steps"]})
    ax.xaxis.set_major_locator(FixedLocator(steps) if len(steps) <= 12 else MaxNLocator(integer=True))
    ax.set_xlabel("training step")
    ax.set_ylabel("accuracy")
    ax.set_title(f"pass@1 and pass@{k_max} over training  ({comparison['num_problems']} problems, n = {comparison['n']})")
    legend = fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), fontsize=8,
                        title=_band_words(comparison, "bands") if banded else None, title_fontsize=7)  # fmt: skip
    legend.get_title().set_color("dimgrey")
    return _save(fig, out_png)
