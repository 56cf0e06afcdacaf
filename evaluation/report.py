"""Optional visual report (--report DIR): one PNG per pair and one summary plot of TRE per pair and method.

matplotlib (Agg backend) is imported lazily, only here; the container does not need it.
"""
from __future__ import annotations

import os

import numpy as np

from evaluation import metrics as M
from evaluation.ground_truth import Pair, image_path
from interfaces.conventions import FIXED_INDEX, warp_with_voxel_field


def require_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("--report needs matplotlib, which is not installed here "
                          "(pip install matplotlib; the evaluation container does not ship it)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _read(path: str) -> np.ndarray:
    import SimpleITK as sitk

    from interfaces.conventions import array_from_image
    return array_from_image(sitk.ReadImage(path, sitk.sitkFloat32))


def _normalise(image: np.ndarray) -> np.ndarray:
    positive = image[image > 0]
    if positive.size == 0:
        return image
    lo, hi = np.percentile(positive, [1, 99])
    return np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)


def pair_figure(pair: Pair, gt_dir: str, field: np.ndarray, fixed_points: np.ndarray, moving_points: np.ndarray,
                tre: np.ndarray, tre_initial: np.ndarray, out_dir: str) -> str:
    """iUS slice with the MR before/after overlay, landmarks with their error, and a Jacobian map."""
    plt = require_matplotlib()
    fixed = _read(image_path(gt_dir, pair.case, FIXED_INDEX))
    moving = _read(image_path(gt_dir, pair.case, pair.moving))
    k = int(np.clip(np.round(np.median(fixed_points[:, 2])), M.CROP + 1, field.shape[2] - M.CROP - 2))
    warped = warp_with_voxel_field(moving, field, slice_axis=2, slice_index=k)
    det = M.jacobian_plane(field, k)
    u = M.sample_displacement(field, fixed_points)
    pulled_back = moving_points - u  # moving landmark expressed (approximately) in the fixed grid

    fig, axes = plt.subplots(1, 4, figsize=(18, 4.8))
    us = _normalise(fixed[:, :, k]).T
    for ax, mr, title, targets, errors in (
            (axes[0], moving[:, :, k], f"before: mean TRE {tre_initial.mean():.2f} mm", moving_points, tre_initial),
            (axes[1], warped, f"after: mean TRE {tre.mean():.2f} mm", pulled_back, tre)):
        ax.imshow(us, cmap="gray", origin="lower")
        ax.imshow(np.ma.masked_less_equal(_normalise(mr).T, 0.05), cmap="magma", alpha=0.45, origin="lower")
        for p, q, e in zip(fixed_points, targets, errors):
            ax.plot([p[0], q[0]], [p[1], q[1]], "-", color="yellow", lw=1)
            ax.plot(p[0], p[1], "+", color="cyan", ms=8, mew=1.5)
            ax.plot(q[0], q[1], "x", color="red", ms=6, mew=1.5)
            ax.annotate(f"{e:.1f}", (q[0], q[1]), color="white", fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("i (voxels)")
        ax.set_ylabel("j (voxels)")
    image = axes[2].imshow(det.T, cmap="RdBu_r", vmin=0, vmax=2, origin="lower")
    axes[2].contour((det <= 0).T.astype(float), levels=[0.5], colors="black", linewidths=0.8)
    axes[2].set_title(f"Jacobian determinant, slice k={k} (black: J <= 0)", fontsize=10)
    fig.colorbar(image, ax=axes[2], fraction=0.046)
    order = np.arange(len(tre))
    axes[3].bar(order - 0.2, tre_initial, 0.4, label="before", color="gray")
    axes[3].bar(order + 0.2, tre, 0.4, label="after", color="tab:blue")
    axes[3].set_xlabel("landmark")
    axes[3].set_ylabel("TRE (mm)")
    axes[3].legend()
    axes[3].set_title("TRE per landmark", fontsize=10)
    fig.suptitle(f"{pair.key} ({pair.sequence}); iUS grey, MR magenta; cyan + fixed landmark, red x moving "
                 f"landmark (after: pulled back by u), all landmarks projected onto slice k={k}", fontsize=9)
    return _save(plt, fig, out_dir, f"{pair.key.replace('<--', '_from_')}.png")


def _save(plt, fig, out_dir: str, name: str) -> str:
    fig.tight_layout()
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def summary_figure(results: dict[str, dict], out_dir: str, metric: str = M.TRE) -> str:
    """TRE per pair (x) and method (colour) from metrics.json dicts {method name: metrics}."""
    plt = require_matplotlib()
    keys = sorted({key for data in results.values() for key in data.get("cases", {})})
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(keys) + 3), 4.5))
    width = 0.8 / max(1, len(results))
    for n, (name, data) in enumerate(results.items()):
        values = [data["cases"].get(key, {}).get(metric, {}).get("mean", np.nan) for key in keys]
        ax.bar(np.arange(len(keys)) + (n - (len(results) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(np.arange(len(keys)))
    ax.set_xticklabels(keys, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel(f"{metric} (mm)" if metric.startswith("TRE") else metric)
    ax.set_title(f"{metric} per pair and method")
    ax.legend(fontsize=8)
    return _save(plt, fig, out_dir, f"summary_{metric}.png")
