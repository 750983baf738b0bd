"""The --steps curve as an image (matplotlib: the optional extra `svdgrad[plot]`)."""

from __future__ import annotations

import os
import tempfile

import numpy as np


def file_mode() -> int:
    """The mode a new file gets under the current umask (mkstemp's files are 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def plot_steps(report, path: str, title: str = "svdgrad check --steps") -> None:
    """Draw the finite-difference error against the step h of every case of the report into
    path (.png or .svg), with the best step marked and the slopes h^2 (truncation) and 1/h
    (rounding) drawn through it. The file is written whole or not at all."""

    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for case in report.cases:
        if not case.steps:
            continue
        h = np.array([r["h"] for r in case.steps])
        err = np.array([r["error"] for r in case.steps], dtype=float)
        ok = np.isfinite(err) & (err > 0)
        (line,) = ax.loglog(h[ok], err[ok], "o-", ms=3.5, label=case.case)
        best = [r for r in case.steps if r["best"]]
        if best:
            hb, eb = best[0]["h"], best[0]["error"]
            ax.loglog([hb], [eb], "*", ms=14, color=line.get_color())
            ax.annotate(
                f"best h = {hb:.1e}, error {eb:.1e}",
                (hb, eb),
                textcoords="offset points",
                xytext=(14, 0),
                ha="left",
                va="center",
                fontsize=8,
                bbox={"boxstyle": "round", "fc": "white", "ec": "0.8", "alpha": 0.9},
            )
            lo, hi = h.min(), h.max()
            grid = np.geomspace(lo, hi, 50)
            trunc = eb * (grid / hb) ** 2
            round_ = eb * (hb / grid)
            keep_t = (grid >= hb) & (trunc < 10 * err[ok].max())
            keep_r = (grid <= hb) & (round_ < 10 * err[ok].max())
            ax.loglog(grid[keep_t], trunc[keep_t], ":", color="0.5", lw=1)
            ax.loglog(grid[keep_r], round_[keep_r], "--", color="0.5", lw=1)
    ax.plot([], [], ":", color="0.5", label="truncation ~ h^2")
    ax.plot([], [], "--", color="0.5", label="rounding ~ eps / h")
    ax.set_xlabel("relative step h (A + h (||A|| / ||dA||) dA)")
    ax.set_ylabel("relative error of the finite differences")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    directory = os.path.dirname(path) or "."
    suffix = os.path.splitext(path)[1].lower()
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
