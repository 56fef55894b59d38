"""Figures: the loss curves of a run, from its history."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmdstyle._io import atomic_path


def plot_history(
    history: Sequence[dict[str, Any]], path: str | os.PathLike, *, title: str = "", show_tv: bool = False
) -> Path:
    """Save a figure of the total loss and of each unweighted term per step (log scale), atomically.

    Left: the total objective. Right: each style layer's term and each content layer's term as
    the engine recorded them (before the layer and alpha/beta weights), so the layers' progress
    can be compared; the TV sum too with ``show_tv`` (when it is part of the objective).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not history:
        raise ValueError("the history is empty: there is nothing to plot.")
    steps = [record["step"] for record in history]
    figure, (total_axis, terms_axis) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    total_axis.plot(steps, [record["loss"] for record in history], color="black")
    total_axis.set(title="objective", xlabel="step", yscale="log")
    for kind, style in (("style", "-"), ("content", "--")):
        for layer in history[0][kind]:
            values = [record[kind][layer] for record in history]
            terms_axis.plot(steps, values, style, label=f"{kind} {layer}")
    if show_tv:
        terms_axis.plot(steps, [record["tv"] for record in history], ":", label="TV")
    terms_axis.set(title="terms (unweighted)", xlabel="step", yscale="log")
    terms_axis.legend(fontsize="small", ncols=2)
    stages = sorted({record.get("stage", 0) for record in history})
    for stage in stages[1:]:
        first = next(record["step"] for record in history if record.get("stage", 0) == stage)
        for axis in (total_axis, terms_axis):
            axis.axvline(first, color="grey", linewidth=0.5)
    if title:
        figure.suptitle(title)
    path = Path(path)
    with atomic_path(path, suffix=path.suffix or ".png") as temporary:
        figure.savefig(temporary, format=(path.suffix.lstrip(".") or "png"), dpi=110)
    plt.close(figure)
    return path
