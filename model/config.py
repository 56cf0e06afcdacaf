"""One place for every model setting: resources/config.json merged over these defaults."""
import copy
import json
import os
from pathlib import Path

# Defaults mirror resources/config.json so a missing/partial file still gives a complete config.
DEFAULTS = {
    "seed": 0,
    "device": None,                 # null: CUDA when available, else CPU
    "half_on_cuda": True,           # fp16 features/costs on CUDA (accumulation stays fp32)
    "threads": None,                # null: torch default
    "features": {
        "mind_dilations": [1, 2],   # MIND-SSC at more than one scale (level voxels)
        "mind_patch_radius": 1,
        "pca_channels": 8,          # joint PCA of the MIND channels (0: keep all)
        "fixed_mask_threshold": 0.0,    # iUS fan = iUS > this
        "moving_mask_rel_threshold": 0.05,  # MR head = MR > this * 99th percentile
        "mask_erode_mm": 1.0,       # keep clear of the fan border
        "inpaint": True,            # fill outside the masks so the border makes no edge
        "anechoic_downweight": True,    # resection cavity = missing tissue
        "anechoic_rel_threshold": 0.25,  # smoothed iUS < this * fan median -> anechoic
        "anechoic_smooth_mm": 2.0,
        "anechoic_dilate_mm": 2.0,
        "anechoic_weight": 0.05,
    },
    "multi_sequence": True,         # fuse costs of every moving sequence given
    "sequence_weights": {"ceT1": 1.0, "T2": 1.0},
    "feature_mm": 1.0,              # MIND-SSC base grid; coarser levels resample these features
    "max_feature_voxels": 2200000,
    "max_working_voxels": 350000,   # coarsen the finest level to fit the time budget
    "global": {
        "enabled": True,
        "levels_mm": [6.0, 3.0],  # coarse-to-fine discrete search, each followed by a trimmed fit
        "radius": 3,                # displacement search radius in level voxels
        "iterations": 2,            # repeat the pyramid from the new pose (large offsets)
        "model": "rigid",           # "rigid" or "affine"
        "trim_keep": 0.6,           # fraction of points kept by the trimmed fit
        "trim_iterations": 5,
        "min_weight": 0.5,
    },
    "discrete": {
        "coupled_lambdas": [0.0, 0.1, 0.5, 1.5],  # coupled convex schedule (per mm^2)
        "smooth_sigma_vox": 1.5,    # smoothing of the coupled field
        "softmin_temperature": 0.02,
        "cost_box_radius": 1,       # aggregate the per-voxel cost over a small patch
        "inverse_consistency": True,
        "ic_iterations": 3,
    },
    "deformable_discrete": {
        "enabled": True,
        "levels_mm": [4.0, 2.0],
        "radius": 2,
    },
    "refine": {
        "enabled": True,
        "level_mm": 2.0,
        "iterations": 60,
        "lr": 0.3,                  # mm per step scale
        "diffusion_weight": 1.0,
        "smooth_passes": 2,         # avg-pool passes applied to the parameter each step
    },
    "plausibility": {
        "max_scale_halvings": 4,    # scale the deformable part down until J > 0 everywhere
        "min_jacobian": 0.01,
    },
}


def _merge(base, over):
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def default_config_path():
    return Path(__file__).resolve().parent.parent / "resources" / "config.json"


def load_config(path=None, overrides=None):
    """Config = defaults <- JSON file (path, else $REG_MODEL_CONFIG, else resources/config.json) <- overrides."""
    path = path or os.environ.get("REG_MODEL_CONFIG") or default_config_path()
    cfg = DEFAULTS
    p = Path(path)
    if p.is_file():
        with open(p) as f:
            data = json.load(f)
        data.pop("_doc", None)
        cfg = _merge(cfg, data)
    elif os.environ.get("REG_MODEL_CONFIG") or str(path) != str(default_config_path()):
        raise FileNotFoundError(f"model config not found: {path}")
    return _merge(cfg, overrides)
