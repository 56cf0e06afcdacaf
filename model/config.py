"""Model settings: resources/config.json is the ONE source of defaults (every key lives there).

load_config(path=None, overrides=None) = resources/config.json <- override file `path` <- overrides. Which file
is `path` ($REMIND2REG_CONFIG, a mounted model tarball's config.json) the runner decides, in one place
(runner/settings.py); the model reads no environment. An override file or dict may be partial
(e.g. /opt/ml/model/config.json with only {"refine": {"iterations": 40}}); it is merged over
resources/config.json, never over code defaults. Unknown keys raise ValueError naming the key.
"""
import copy
import json
from pathlib import Path

# storage of the feature volumes on any device: "fp16" halves the cost search's memory traffic but moves the
# field by tenths of a mm (measured in docs/MODEL.md), so the default is "fp32"
PRECISIONS = ("fp32", "fp16")

# keys whose value is a free-form mapping (any key allowed inside)
_FREE_MAPS = {("sequence_weights",)}


def default_config_path():
    return Path(__file__).resolve().parent.parent / "resources" / "config.json"


def _read(path):
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"model config {path}: expected a JSON object, got {type(data).__name__}")
    data.pop("_doc", None)
    return data


def _merge(base, over, where=()):
    """Merge `over` into a copy of `base`; every key of `over` must exist in `base`."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        key = where + (k,)
        if where in _FREE_MAPS:
            out[k] = copy.deepcopy(v)
            continue
        if k not in out:
            known = ", ".join(sorted(out))
            raise ValueError(f"unknown model config key {'.'.join(key)!r} (known here: {known})")
        if isinstance(out[k], dict):
            if not isinstance(v, dict):
                raise ValueError(f"model config key {'.'.join(key)!r} must be an object, got {v!r}")
            out[k] = _merge(out[k], v, key)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _validate(cfg):
    for sec in ("global", "deformable_discrete"):
        if not cfg[sec]["levels_mm"] or any(float(r) <= 0 for r in cfg[sec]["levels_mm"]):
            raise ValueError(f"{sec}.levels_mm must be a non-empty list of positive mm")
    final = cfg["global"]["final_level_mm"]
    if final is not None and float(final) <= 0:
        raise ValueError("global.final_level_mm must be positive, or null for none")
    radius = cfg["global"]["radius"]
    if isinstance(radius, list) and len(radius) != len(cfg["global"]["levels_mm"]):
        raise ValueError(f"global.radius has {len(radius)} entries for {len(cfg['global']['levels_mm'])} "
                         "global.levels_mm: give one per level, or a single number for all")
    if cfg["global"]["model"] not in ("rigid", "affine"):
        raise ValueError(f"global.model must be 'rigid' or 'affine', got {cfg['global']['model']!r}")
    if not 0 < float(cfg["global"]["trim_keep"]) <= 1:
        raise ValueError("global.trim_keep must be in (0, 1]")
    if cfg["precision"] not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {cfg['precision']!r}")
    if min(float(cfg["feature_mm"]), float(cfg["refine"]["level_mm"]), float(cfg["refine_fine"]["level_mm"])) <= 0:
        raise ValueError("feature_mm, refine.level_mm and refine_fine.level_mm must be positive")
    ratio = cfg["refine_fine"]["max_spacing_ratio"]
    if ratio is not None and float(ratio) <= 0:
        raise ValueError("refine_fine.max_spacing_ratio must be positive, or null to run the stage on any box")
    if float(cfg["crop"]["margin_mm"]) < 0:
        raise ValueError("crop.margin_mm must be >= 0")
    gate = cfg["safety"]["small_shift"]
    for name, values in (("safety.small_shift", gate), ("safety.small_shift.one_sequence", gate["one_sequence"])):
        if not 0 <= float(values["floor_mm"]) < float(values["full_mm"]):
            raise ValueError(f"{name} needs 0 <= floor_mm < full_mm")
    return cfg


def load_config(path=None, overrides=None):
    """resources/config.json <- JSON override file `path` <- overrides (dict).
    A missing file raises FileNotFoundError; unknown keys raise ValueError."""
    cfg = _read(default_config_path())
    if path:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"model config not found: {path}")
        if p.resolve() != default_config_path().resolve():
            cfg = _merge(cfg, _read(p))
    return _validate(_merge(cfg, overrides))
