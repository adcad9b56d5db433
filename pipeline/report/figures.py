"""The report's figures: pure functions from loaded data to matplotlib Figures.

No file paths here: the caller reads the inputs and turns each Figure into PNG bytes
(:func:`pipeline.report.page.fig_to_png`). Every function copes with missing pieces (a method
absent at a noise level, a history with one phase, no stage rows...) by drawing what there
is and saying what is not, rather than raising.

Figures are built with the object API (``matplotlib.figure.Figure``), never ``pyplot``, so
nothing depends on a display or on global state, and nothing needs closing.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from scipy.ndimage import uniform_filter

from pipeline.metrics import kernel_crop, psnr
from pipeline.report import BOUND_METHODS, HIGHLIGHT, method_colour, ordered_methods

DPI = 110
_SAMPLE_LEVEL = re.compile(r"-n([0-9]+(?:\.[0-9]*)?)$")


def _placeholder(fig: Figure, ax, message: str) -> None:
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize=11, color="#555555")


def level_of(key: str) -> float:
    """A metrics-JSON noise-level key (``"3"``, ``"2.55"``) as a number (NaN if not one)."""
    try:
        return float(key)
    except (TypeError, ValueError):
        return float("nan")


def metric_frame(metrics: Mapping, metric: str = "psnr") -> pd.DataFrame:
    """``metric`` per noise level (rows, float index, sorted) and method (columns, report order).

    Missing entries are NaN. Levels are the union of ``metrics["noise_levels"]`` and every key
    seen under any method, so a level absent from one list still shows.
    """
    methods = metrics.get("methods") or {}
    keys = {f"{float(l):g}" for l in metrics.get("noise_levels") or []}
    for entry in methods.values():
        keys.update((entry.get(metric) or {}).keys())
    levels = sorted(keys, key=level_of)
    data = {
        m: [_number((methods[m].get(metric) or {}).get(k)) for k in levels] for m in ordered_methods(methods)
    }
    frame = pd.DataFrame(data, index=pd.Index([level_of(k) for k in levels], name="noise_level"))
    frame.attrs["keys"] = levels
    return frame


def _number(value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return v if np.isfinite(v) else float("nan")


# --------------------------------------------------------------------------- PSNR vs noise


def psnr_vs_noise(metrics: Mapping) -> Figure:
    """Mean PSNR against noise level, one line per method; the learned model drawn thicker."""
    frame = metric_frame(metrics, "psnr")
    fig = Figure(figsize=(7.0, 4.4), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    if frame.empty or frame.notna().sum().sum() == 0:
        _placeholder(fig, ax, "no PSNR values in metrics.json")
        return fig
    for m in frame.columns:
        series = frame[m].dropna()
        if series.empty:
            continue
        highlight = m == HIGHLIGHT
        ax.plot(series.index, series.values, marker="o", ms=6 if highlight else 4,
                lw=3.0 if highlight else 1.4, ls="--" if m in BOUND_METHODS else "-",
                color=method_colour(m), label=m + (" (bound)" if m in BOUND_METHODS else ""),
                zorder=3 if highlight else 2)
    ax.set_xlabel("noise level (% of dynamic range)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_xticks(frame.index)
    ax.set_xticklabels([f"{v:g}" for v in frame.index])
    ax.grid(alpha=0.3)
    ax.set_title("PSNR vs noise level (mean over test images and kernels)")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return fig


# --------------------------------------------------------------------------- training


def training_curves(history: pd.DataFrame) -> Figure:
    """Losses (log scale) and validation PSNR over training steps.

    ``history``: ``models/history.csv`` as a frame (``phase, step, loss, guidance_loss,
    val_psnr``...; numbers or numeric strings, empty cells allowed). The bilevel phase is drawn
    after the pre-training one on a shared step axis, split by a dotted line.
    """
    fig = Figure(figsize=(11.0, 4.0), dpi=DPI, layout="constrained")
    ax_loss, ax_val = fig.subplots(1, 2)
    h = _numeric(history, ("step", "loss", "guidance_loss", "val_psnr"))
    if h.empty or "phase" not in h or "step" not in h:
        _placeholder(fig, ax_loss, "no training history")
        _placeholder(fig, ax_val, "no training history")
        return fig
    h = h.dropna(subset=["step"])
    offset, boundaries = 0.0, []
    series: dict[str, pd.DataFrame] = {}
    for phase in _phases(h["phase"]):
        part = h[h["phase"] == phase].sort_values("step").copy()
        part["global_step"] = part["step"] + offset
        series[phase] = part
        if len(part):
            offset = float(part["global_step"].max())
            boundaries.append(offset)
    styles = {"pretrain": "#1f77b4", "bilevel": "#d62728"}
    drew_loss = drew_val = False
    for phase, part in series.items():
        colour = styles.get(phase, "#2ca02c")
        for col, ls, label in (("loss", "-", f"{phase} loss"), ("guidance_loss", "--", f"{phase} guidance loss")):
            if col not in part:
                continue
            pts = part[part[col] > 0]  # log scale: zero/negative/NaN cannot be drawn
            if len(pts):
                ax_loss.plot(pts["global_step"], pts[col], ls=ls, color=colour, label=label, lw=1.5)
                drew_loss = True
        if "val_psnr" in part:
            pts = part.dropna(subset=["val_psnr"])
            if len(pts):
                ax_val.plot(pts["global_step"], pts["val_psnr"], marker="o", color=colour, label=f"{phase}", lw=1.5)
                drew_val = True
    for ax, drew, what in ((ax_loss, drew_loss, "losses"), (ax_val, drew_val, "validation PSNR")):
        if not drew:
            _placeholder(fig, ax, f"no {what} in history")
            continue
        for b in boundaries[:-1]:
            ax.axvline(b, color="#999999", ls=":", lw=1)
        ax.set_xlabel("step (bilevel steps follow pre-training)" if len(series) > 1 else "step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if drew_loss:
        ax_loss.set_yscale("log")
        ax_loss.set_ylabel("loss (log scale)")
        ax_loss.set_title("training losses")
    if drew_val:
        ax_val.set_ylabel("PSNR (dB)")
        ax_val.set_title("validation PSNR")
    return fig


def _phases(column: pd.Series) -> list[str]:
    """Phases in training order: ``pretrain``, ``bilevel``, then any other in first-seen order."""
    seen = list(dict.fromkeys(column.astype(str)))
    known = [p for p in ("pretrain", "bilevel") if p in seen]
    return known + [p for p in seen if p not in known]


def _numeric(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """A copy with ``columns`` (those present) as floats; unparsable or empty cells become NaN."""
    out = frame.copy()
    for c in columns:
        if c in out:
            out[c] = pd.to_numeric(out[c].replace("", np.nan), errors="coerce")
    return out


# --------------------------------------------------------------------------- visuals


def sample_level(visual: Mapping) -> float:
    """A visual sample's noise level: its ``noise_level`` entry, else parsed from the id (``...-n3.0``)."""
    if "noise_level" in visual:
        return _number(visual["noise_level"])
    match = _SAMPLE_LEVEL.search(str(visual.get("sample_id", "")))
    return float(match.group(1)) if match else float("nan")


def _hwc(chw: np.ndarray) -> np.ndarray:
    a = np.asarray(chw, dtype=np.float64)
    return np.transpose(a, (1, 2, 0)) if a.ndim == 3 else a[..., None]


def _show(ax, chw: np.ndarray) -> None:
    img = np.clip(_hwc(chw), 0.0, 1.0)
    if img.shape[2] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(img, interpolation="nearest")


def _panel_psnr(x: np.ndarray, gt: np.ndarray, kernel_shape: tuple[int, ...]) -> float:
    """PSNR with the evaluation's border crop; uncropped when the image is too small for it."""
    try:
        return psnr(_hwc(x), _hwc(gt), crop=kernel_crop(tuple(kernel_shape[:2])))
    except ValueError:
        return psnr(_hwc(x), _hwc(gt), crop=0)


def zoom_window(gt: np.ndarray, border: int = 0, fraction: float = 0.33) -> tuple[int, int, int]:
    """``(top, left, size)`` of a square window on the most detailed part of ``gt`` (``(C, H, W)``).

    Detail is the mean gradient magnitude over the window; ``border`` pixels on each side
    (the kernel's half-size, as the metrics crop) are avoided when the image is large enough.
    """
    img = _hwc(gt).mean(axis=2)
    h, w = img.shape
    size = int(max(8, round(min(h, w) * fraction)))
    size = min(size, h, w)
    if h - 2 * border < size or w - 2 * border < size:
        border = 0
    gy, gx = np.gradient(img)
    energy = uniform_filter(np.hypot(gx, gy), size=size, mode="constant")
    half = size // 2
    lo_y, hi_y = border + half, h - border - (size - half)
    lo_x, hi_x = border + half, w - border - (size - half)
    region = energy[lo_y:hi_y + 1, lo_x:hi_x + 1]
    if region.size == 0:
        return 0, 0, size
    cy, cx = np.unravel_index(int(np.argmax(region)), region.shape)
    return int(cy + lo_y - half), int(cx + lo_x - half), size


def visual_grid(visuals: Sequence[Mapping], methods: Sequence[str], zoom: bool = True, map_name: str = "σ",
                map_unit: tuple[float, str] = (255.0, "/255")) -> Figure:
    """One row per visual sample: input, ``methods``, ground truth, predicted and true noise maps.

    ``visuals``: the arrays of ``results/visuals/<id>.npz`` (``ground_truth``, ``kernel``,
    ``sigma_true``, ``noise_estimate``, ``method__<name>``...) plus ``sample_id``. Image panels
    are titled with their PSNR against the ground truth (the evaluation's kernel-border crop);
    the two noise maps share one colour scale (in /255) with a colorbar. With ``zoom``, each
    sample gets a second row showing the same square crop (outlined above) of every panel.

    The figure's axes are exactly the grid's (colorbars are insets), ``rows x columns`` in
    row-major order; a method missing from a sample leaves a blank "n/a" panel. ``map_name``
    names the maps in the titles (rain and haze: the density, the transmission correction);
    ``map_unit`` is ``(scale, label)``: the maps are shown times ``scale`` (dehaze's signed
    log-correction: ``(1, "log")``).
    """
    if not visuals:
        raise ValueError("visual_grid needs at least one visual sample")
    methods = [m for m in dict.fromkeys(methods) if m != "input"]
    image_cols = ["input", *methods, "ground truth"]
    predicted, true = f"predicted {map_name}", f"true {map_name}"
    cols = [*image_cols, predicted, true]
    per_sample = 2 if zoom else 1
    rows = len(visuals) * per_sample
    # Row heights follow the panels' aspect (a zoom crop is square), so landscape images leave no gaps.
    ratios = []
    for vis in visuals:
        h, w = np.shape(vis["ground_truth"])[-2:]
        ratios += [float(np.clip(h / max(w, 1), 0.3, 3.0))] + ([1.0] if zoom else [])
    panel = 2.05
    fig = Figure(figsize=(panel * len(cols) + 0.6, panel * sum(ratios) + 0.4 * len(visuals) + 0.15), dpi=DPI,
                 layout="constrained")
    axes = fig.subplots(rows, len(cols), squeeze=False, gridspec_kw={"height_ratios": ratios})
    for i, vis in enumerate(visuals):
        gt = np.asarray(vis["ground_truth"])
        kernel_shape = tuple(np.shape(vis.get("kernel", np.zeros((1, 1)))))
        crop = kernel_crop(kernel_shape[:2]) if len(kernel_shape) >= 2 else 0
        window = zoom_window(gt, border=crop) if zoom else None
        scale, unit = map_unit
        sigma_true = np.asarray(vis["sigma_true"], dtype=np.float64) * scale if "sigma_true" in vis else None
        estimate = np.asarray(vis["noise_estimate"], dtype=np.float64) * scale if "noise_estimate" in vis else None
        maps = [a for a in (estimate, sigma_true) if a is not None]
        vmax = max(float(np.nanmax(a)) for a in maps) if maps else 1.0
        vmin = min(0.0, *(float(np.nanmin(a)) for a in maps)) if maps else 0.0
        vmax = vmax if vmax > vmin else vmin + 1.0
        label = f"{vis.get('sample_id', f'sample {i + 1}')}"
        row_axes = [axes[i * per_sample + r] for r in range(per_sample)]
        for j, name in enumerate(cols):
            if name == "ground truth":
                arr, title = gt, "ground truth"
            elif j < len(image_cols):
                arr = vis.get(f"method__{name}")
                title = name
                if arr is not None:
                    title = f"{name}\n{_panel_psnr(arr, gt, kernel_shape):.2f} dB"
            else:
                arr = estimate if name == predicted else sigma_true
                title = f"{name} ({unit})"
                if name == predicted and estimate is not None and sigma_true is not None:
                    title += f"\nMAE {float(np.mean(np.abs(estimate - sigma_true))):.2f}"
            for r, ax_row in enumerate(row_axes):
                ax = ax_row[j]
                ax.set_xticks([])
                ax.set_yticks([])
                if arr is None:
                    _placeholder(fig, ax, "n/a")
                    continue
                view = np.asarray(arr)
                if r == 1 and window is not None:
                    top, left, size = window
                    view = view[..., top:top + size, left:left + size]
                if j < len(image_cols):
                    _show(ax, view)
                else:
                    im = ax.imshow(view, cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
                    if name == true:
                        cax = ax.inset_axes([1.04, 0.0, 0.06, 1.0])
                        fig.colorbar(im, cax=cax)
                        cax.tick_params(labelsize=7)
                if r == 0:
                    ax.set_title(title, fontsize=8)
                    if window is not None:
                        top, left, size = window
                        ax.add_patch(Rectangle((left - 0.5, top - 0.5), size, size, fill=False, ec="#ffd700", lw=1))
            row_axes[0][0].set_ylabel(label, fontsize=8)
            if zoom:
                row_axes[1][0].set_ylabel("zoom", fontsize=8)
    return fig


def real_grid(photos: Sequence[Mapping], map_name: str = "guidance", map_unit: tuple[float, str] = (255.0, "/255")) -> Figure:
    """One row per real photo (``input``, ``method__classical``, ``method__learned`` as
    ``(C, H, W)``, ``target_estimate (H, W)``): input, classical, learned, predicted map."""
    columns = [("input", "input"), ("method__classical", "classical"), ("method__learned", "learned")]
    fig = Figure(figsize=(3.2 * (len(columns) + 1), 3.0 * max(len(photos), 1)), layout="constrained")
    axes = fig.subplots(max(len(photos), 1), len(columns) + 1, squeeze=False)
    for row, photo in zip(axes, photos):
        for ax, (key, label) in zip(row, columns):
            if key in photo:
                _show(ax, np.asarray(photo[key]))
            ax.set_title(f"{photo.get('sample_id', '')}: {label}" if key == "input" else label, fontsize=9)
            ax.axis("off")
        if "target_estimate" in photo:
            im = row[-1].imshow(np.asarray(photo["target_estimate"]) * map_unit[0], cmap="magma")
            fig.colorbar(im, ax=row[-1], shrink=0.8)
        row[-1].set_title(f"predicted {map_name} ({map_unit[1]})", fontsize=9)
        row[-1].axis("off")
    return fig


def guidance_maps(visual: Mapping) -> Figure:
    """The learned guidance map of every stage for one visual sample, on one colour scale (/255)."""
    keys = sorted((k for k in visual if k.startswith("guidance__")), key=lambda k: int(k.split("__", 1)[1]))
    fig = Figure(figsize=(2.1 * max(len(keys), 1) + 0.8, 2.6), dpi=DPI, layout="constrained")
    if not keys:
        _placeholder(fig, fig.subplots(), "no guidance maps in this sample")
        return fig
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    maps = [np.asarray(visual[k], dtype=np.float64) * 255 for k in keys]
    vmin, vmax = min(float(m.min()) for m in maps), max(float(m.max()) for m in maps)
    vmax = vmax if vmax > vmin else vmin + 1e-6
    im = None
    for ax, key, m in zip(axes, keys, maps):
        im = ax.imshow(m, cmap="magma", vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(f"stage {key.split('__', 1)[1]}\nmean {m.mean():.2f}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="guidance (/255)")
    fig.suptitle(str(visual.get("sample_id", "")), fontsize=9)
    return fig


# --------------------------------------------------------------------------- stages


def stage_summary(stages: pd.DataFrame) -> pd.DataFrame:
    """Mean ``rho``, ``guidance_mean_255`` and ``guidance_std_255`` per (noise_level, stage)."""
    cols = ("noise_level", "stage", "rho", "guidance_mean_255", "guidance_std_255")
    s = _numeric(stages, cols)
    present = [c for c in cols[2:] if c in s]
    if s.empty or "noise_level" not in s or "stage" not in s or not present:
        return pd.DataFrame(columns=list(cols)).set_index(["noise_level", "stage"])
    s = s.dropna(subset=["noise_level", "stage"])
    s["stage"] = s["stage"].astype(int)
    return s.groupby(["noise_level", "stage"])[present].mean().sort_index()


def stage_stats(stages: pd.DataFrame) -> Figure:
    """Per-stage learned penalty ``rho_k`` (log scale) and mean guidance (/255, ± mean within-map
    std as a band), one line per noise level, over the stage index."""
    summary = stage_summary(stages)
    fig = Figure(figsize=(11.0, 4.0), dpi=DPI, layout="constrained")
    ax_rho, ax_g = fig.subplots(1, 2)
    if summary.empty:
        _placeholder(fig, ax_rho, "no per-stage statistics")
        _placeholder(fig, ax_g, "no per-stage statistics")
        return fig
    levels = sorted(summary.index.get_level_values("noise_level").unique())
    shared_rho = rho_shared(summary)
    if shared_rho is not None:
        ax_rho.plot(shared_rho.index, shared_rho.values, marker="o", color="black", label="all levels")
    for n, level in enumerate(levels):
        part = summary.xs(level, level="noise_level")
        colour = _level_colour(n, len(levels))
        label = f"{level:g}%"
        if "rho" in part and shared_rho is None:
            ax_rho.plot(part.index, part["rho"], marker="o", color=colour, label=label)
        if "guidance_mean_255" in part:
            ax_g.plot(part.index, part["guidance_mean_255"], marker="o", color=colour, label=label)
            if "guidance_std_255" in part:
                lo = part["guidance_mean_255"] - part["guidance_std_255"]
                hi = part["guidance_mean_255"] + part["guidance_std_255"]
                ax_g.fill_between(part.index, lo, hi, color=colour, alpha=0.12, lw=0)
    stages_idx = sorted(summary.index.get_level_values("stage").unique())
    rho = summary["rho"] if "rho" in summary else pd.Series(dtype=float)
    for ax, ok, ylabel, title in (
        (ax_rho, rho.notna().any(), "ρ_k", "learned penalty ρ_k per stage"),
        (ax_g, "guidance_mean_255" in summary, "guidance (/255)", "predicted guidance per stage (mean ± std)"),
    ):
        if not ok:
            _placeholder(fig, ax, f"no {ylabel} values")
            continue
        ax.set_xlabel("stage k")
        ax.set_xticks(stages_idx)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(title="noise level", fontsize=8, title_fontsize=8)
    if rho.notna().any() and (rho.dropna() > 0).all():
        ax_rho.set_yscale("log")
    if "guidance_mean_255" in summary:
        g = summary["guidance_mean_255"].dropna()
        if len(g) and (g > 0).all() and g.max() > 20 * g.min():  # stages far apart: show the small ones too
            ax_g.set_yscale("log")
            ax_g.set_ylabel("guidance (/255, log scale)")
    return fig


def rho_shared(summary: pd.DataFrame) -> pd.Series | None:
    """``rho`` per stage when it is the same at every noise level (the usual case: rho_k is a
    per-stage parameter, not predicted), else None."""
    if "rho" not in summary or summary["rho"].isna().all():
        return None
    rho = summary["rho"].unstack("noise_level")
    spread = (rho.max(axis=1) - rho.min(axis=1)).abs()
    scale = rho.abs().max(axis=1).clip(lower=1e-12)
    if bool((spread <= 1e-6 * scale).all()):
        return rho.mean(axis=1)
    return None


def _level_colour(n: int, total: int) -> tuple[float, float, float, float]:
    return colormaps["viridis"](0.1 + 0.75 * (n / max(total - 1, 1)))


# --------------------------------------------------------------------------- per-image gain


def paired_gain(per_image: pd.DataFrame, a: str, b: str, metric: str = "psnr") -> pd.DataFrame:
    """Per test sample, ``metric`` of method ``a`` minus that of ``b``: columns
    ``sample_id, noise_level, gain`` (samples scored for both methods only)."""
    if per_image.empty or not {"sample_id", "method", metric}.issubset(per_image.columns):
        return pd.DataFrame(columns=["sample_id", "noise_level", "gain"])
    p = _numeric(per_image, (metric, "noise_level"))
    p = p[p["method"].isin([a, b])]
    wide = p.pivot_table(index="sample_id", columns="method", values=metric, aggfunc="mean")
    if a not in wide or b not in wide:
        return pd.DataFrame(columns=["sample_id", "noise_level", "gain"])
    gain = (wide[a] - wide[b]).dropna()
    levels = p.groupby("sample_id")["noise_level"].first() if "noise_level" in p else None
    out = pd.DataFrame({"sample_id": gain.index, "gain": gain.values})
    out["noise_level"] = out["sample_id"].map(levels) if levels is not None else np.nan
    return out[["sample_id", "noise_level", "gain"]].reset_index(drop=True)


def gain_hist(per_image: pd.DataFrame, a: str = "learned", b: str = "ircnn_estimated") -> Figure:
    """Distribution of the per-image PSNR gain ``a - b``: histogram, and a strip plot by noise level."""
    g = paired_gain(per_image, a, b)
    fig = Figure(figsize=(11.0, 3.8), dpi=DPI, layout="constrained")
    ax_h, ax_s = fig.subplots(1, 2)
    if g.empty:
        _placeholder(fig, ax_h, f"no per-image PSNR for both {a} and {b}")
        _placeholder(fig, ax_s, "")
        return fig
    gains = g["gain"].to_numpy(dtype=float)
    wins = int((gains > 0).sum())
    bins = min(30, max(5, int(np.sqrt(len(gains)) * 2)))
    ax_h.hist(gains, bins=bins, color=method_colour(a), alpha=0.8, edgecolor="white")
    ax_h.axvline(0, color="black", lw=1)
    ax_h.axvline(float(np.mean(gains)), color="black", ls="--", lw=1, label=f"mean {np.mean(gains):+.2f} dB")
    ax_h.set_xlabel(f"PSNR({a}) − PSNR({b})  (dB)")
    ax_h.set_ylabel("test samples")
    ax_h.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_h.set_title(f"{a} better on {wins} of {len(gains)} samples")
    ax_h.legend(fontsize=8)
    ax_h.grid(alpha=0.3)
    levels = sorted(g["noise_level"].dropna().unique())
    if levels:
        rng = np.random.default_rng(0)  # deterministic jitter: same figure every run
        pos = {lvl: i for i, lvl in enumerate(levels)}
        x = g["noise_level"].map(pos).to_numpy(dtype=float) + rng.uniform(-0.15, 0.15, len(g))
        ax_s.scatter(x, gains, s=18, color=method_colour(a), alpha=0.75)
        means = g.groupby("noise_level")["gain"].mean()
        ax_s.scatter([pos[l] for l in means.index], means.values, marker="_", s=400, color="black", label="mean")
        ax_s.set_xticks(range(len(levels)))
        ax_s.set_xticklabels([f"{l:g}" for l in levels])
        ax_s.axhline(0, color="black", lw=1)
        ax_s.set_xlabel("noise level (%)")
        ax_s.set_ylabel("PSNR gain (dB)")
        ax_s.set_title("per-image gain by noise level")
        ax_s.legend(fontsize=8)
        ax_s.grid(alpha=0.3)
    else:
        _placeholder(fig, ax_s, "no noise levels in per_image.csv")
    return fig
