"""Model settings: resources/config.json, read into a frozen, typed `ModelConfig` and checked once at load.

resources/config.json is the ONE source of defaults (every key lives there; no default is written in code).
`load_config(path=None, overrides=None)` = resources/config.json <- override file `path` <- `overrides` (dict).
Which file is `path` (an explicit one, a mounted model tarball's config.json) the runner decides, in one place
(runner/settings.py); the model reads no environment. An override may be partial (e.g. only
{"refine": {"iterations": 40}}); it is merged over resources/config.json. Every problem is a `ConfigError`
naming the key: an unknown or missing key, a wrong type (`"lr": "fast"`), a value out of range
(`"iterations": -5`). The JSON keys are the user's interface; the attribute names follow them, except the
section "global", which is `ModelConfig.global_stage` (a Python keyword). docs/MODEL.md explains each setting.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(ValueError):
    """A model setting that cannot be used: the message names the key."""


def _range(lo=None, hi=None, *, above=None, below=None, key=None):
    """A field's bounds: lo <= v <= hi, above < v < below (None: no bound); key: its JSON name if not the
    attribute's. For a tuple field the bounds apply to each element."""
    return field(metadata={"lo": lo, "hi": hi, "above": above, "below": below, "key": key})


@dataclass(frozen=True)
class FeatureSettings:
    mind_dilations: tuple[int, ...] = _range(1)   # MIND-SSC neighbourhood distances, base-grid voxels
    mind_patch_radius: int = _range(0)            # voxels of the patch distance's box filter
    pca_channels: int = _range(1)                 # feature channels kept (joint PCA of iUS and MR features)
    fixed_mask_threshold: float = _range()        # iUS intensity above which a voxel is in the fan
    moving_mask_rel_threshold: float = _range(0.0, 1.0)  # head mask: MR > this x its 99th percentile
    mask_erode_mm: float = _range(0.0)
    inpaint: bool = _range()                      # fill outside the masks (no false MIND edge at the fan border)
    anechoic_downweight: bool = _range()
    anechoic_rel_threshold: float = _range(0.0)   # dark (fluid/cavity) below this x the fan's median
    anechoic_smooth_mm: float = _range(0.0)
    anechoic_dilate_mm: float = _range(0.0)
    anechoic_weight: float = _range(0.0, 1.0)     # similarity weight kept in dark regions


@dataclass(frozen=True)
class CropSettings:
    enabled: bool = _range()
    margin_mm: float = _range(0.0)                # around the fan's bounding box


@dataclass(frozen=True)
class GlobalSettings:
    enabled: bool = _range()
    levels_mm: tuple[float, ...] = _range(above=0.0)
    radius: int | tuple[int, ...] = _range(1)     # search radius in level voxels: one for all levels, or one each
    final_level_mm: float | None = _range(above=0.0)  # one finer fit after the passes (None: none)
    final_radius: int = _range(1)
    iterations: int = _range(1)                   # passes always run
    max_iterations: int | None = _range(0)        # passes at most, while a pass moves the fan by converge_mm
    converge_mm: float = _range(0.0)
    max_mean_shift_mm: float = _range(above=0.0)  # a pose moving the fan further on average is a false match
    trim_keep: float = _range(above=0.0, hi=1.0)  # fraction of matches kept by the trimmed fit
    trim_iterations: int = _range(0)
    min_weight: float = _range(0.0, 1.0)          # fan weight a voxel needs to vote for the pose

    def radii(self) -> tuple[int, ...]:
        """The search radius of each level."""
        if isinstance(self.radius, tuple):
            return self.radius
        return (self.radius,) * len(self.levels_mm)

    def _check(self, where: str) -> None:
        if not self.levels_mm:
            raise ConfigError(f"model config key '{where}.levels_mm': give at least one level")
        if isinstance(self.radius, tuple) and len(self.radius) != len(self.levels_mm):
            raise ConfigError(f"model config key '{where}.radius': {len(self.radius)} entries for "
                              f"{len(self.levels_mm)} levels_mm: give one per level, or a single number for all")


@dataclass(frozen=True)
class DiscreteSettings:
    coupled_lambdas: tuple[float, ...] = _range(0.0)  # coupling weights, one soft-argmin pass each
    smooth_sigma_vox: float = _range(0.0)
    softmin_temperature: float = _range(above=0.0)
    cost_box_radius: int = _range(0)
    inverse_consistency: bool = _range()
    ic_iterations: int = _range(0)

    def _check(self, where: str) -> None:
        if not self.coupled_lambdas:
            raise ConfigError(f"model config key '{where}.coupled_lambdas': give at least one")


@dataclass(frozen=True)
class DeformableSettings:
    enabled: bool = _range()
    levels_mm: tuple[float, ...] = _range(above=0.0)
    radius: int = _range(1)

    def _check(self, where: str) -> None:
        if not self.levels_mm:
            raise ConfigError(f"model config key '{where}.levels_mm': give at least one level")


@dataclass(frozen=True)
class RefineSettings:
    """One Adam refinement stage, complete."""
    enabled: bool = _range()
    level_mm: float = _range(above=0.0)
    iterations: int = _range(0)
    lr: float = _range(above=0.0)                 # Adam step, mm
    adam_eps_rel: float = _range(0.0)             # Adam's eps relative to the first in-fan gradient rms
    diffusion_weight: float = _range(0.0)
    smooth_passes: int = _range(0)


@dataclass(frozen=True)
class FineRefineSettings:
    """The second refinement: its own level, length, regulariser and smoothing; Adam's lr and eps come from
    `refine` (`stage`)."""
    enabled: bool = _range()
    level_mm: float = _range(above=0.0)
    iterations: int = _range(0)
    diffusion_weight: float = _range(0.0)
    smooth_passes: int = _range(0)
    max_spacing_ratio: float | None = _range(above=0.0)  # skip unless its voxels are this much finer (None: run)

    def stage(self, coarse: RefineSettings) -> RefineSettings:
        """This stage as a complete refinement: the coarse stage's lr and adam_eps_rel, its own rest."""
        return dataclasses.replace(coarse, enabled=self.enabled, level_mm=self.level_mm,
                                   iterations=self.iterations, diffusion_weight=self.diffusion_weight,
                                   smooth_passes=self.smooth_passes)


@dataclass(frozen=True)
class PlausibilitySettings:
    max_scale_halvings: int = _range(0)
    min_jacobian: float = _range(0.0, below=1.0)
    fallback_to_identity: bool = _range()


@dataclass(frozen=True)
class GateRamp:
    """The small-shift gate's ramp: gain 0 at or below floor_mm of rms shift over the fan, 1 from full_mm."""
    floor_mm: float = _range(0.0)
    full_mm: float = _range(above=0.0)

    def _check(self, where: str) -> None:
        if not self.floor_mm < self.full_mm:
            raise ConfigError(f"model config key '{where}': needs 0 <= floor_mm < full_mm, got "
                              f"{self.floor_mm} and {self.full_mm}")


@dataclass(frozen=True)
class SmallShiftGate(GateRamp):
    """The ramp for the fused field of two sequences, and `one_sequence`'s for a field from one MR alone."""
    enabled: bool = _range()
    one_sequence: GateRamp = _range()


@dataclass(frozen=True)
class EvidenceSettings:
    """Evidence before output (model/evidence.py): the identity is written when the chosen field's matching cost
    is above max_chance_ratio x the median cost of the MR mirrored out of register."""
    enabled: bool = _range()
    max_chance_ratio: float = _range(above=0.0)


@dataclass(frozen=True)
class SafetySettings:
    cross_sequence: bool = _range()
    tolerance: float = _range(0.0)
    fuse_sequences: bool = _range()
    evidence: EvidenceSettings = _range()
    small_shift: SmallShiftGate = _range()


_DEVICE = re.compile(r"^(auto|cpu|cuda(:[0-9]+)?)$")


@dataclass(frozen=True)
class ModelConfig:
    seed: int = _range(0)
    device: str | None = _range()                 # None or "auto": CUDA when available; "cpu", "cuda", "cuda:N"
    threads: int | None = _range(1)               # None: the CPUs this process may use
    features: FeatureSettings = _range()
    feature_mm: float = _range(above=0.0)         # the base grid the features are made on
    max_feature_voxels: int = _range(1)
    max_working_voxels: int = _range(1)
    crop: CropSettings = _range()
    global_stage: GlobalSettings = _range(key="global")
    discrete: DiscreteSettings = _range()
    deformable_discrete: DeformableSettings = _range()
    refine: RefineSettings = _range()
    refine_fine: FineRefineSettings = _range()
    plausibility: PlausibilitySettings = _range()
    safety: SafetySettings = _range()

    def _check(self, where: str) -> None:
        if self.device is not None and not _DEVICE.match(self.device):
            raise ConfigError(f"model config key 'device': expected null, auto, cpu, cuda or cuda:N, "
                              f"got {self.device!r}")

    def to_dict(self) -> dict:
        """The JSON-shaped dict (JSON keys, lists), as resources/config.json writes it."""
        return _to_dict(self)


def default_config_path() -> Path:
    return Path(__file__).resolve().parent.parent / "resources" / "config.json"


def load_config(path=None, overrides: dict | None = None) -> ModelConfig:
    """resources/config.json <- JSON override file `path` <- overrides (dict), checked, as a ModelConfig.
    A missing file raises FileNotFoundError, broken JSON json.JSONDecodeError, anything else ConfigError."""
    data = _read(default_config_path())
    if path:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"model config not found: {path}")
        if p.resolve() != default_config_path().resolve():
            data = _merge(data, _read(p))
    return _build(ModelConfig, _merge(data, overrides), ())


def _read(path) -> dict:
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ConfigError(f"model config {path}: expected a JSON object, got {type(data).__name__}")
    data.pop("_doc", None)
    return data


def _merge(base: dict, over: dict | None, where=()) -> dict:
    """`over` merged into a copy of `base`; every key of `over` must exist in `base`."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        key = ".".join(where + (k,))
        if k not in out:
            raise ConfigError(f"unknown model config key {key!r} (known here: {', '.join(sorted(out))})")
        if isinstance(out[k], dict):
            if not isinstance(v, dict):
                raise ConfigError(f"model config key {key!r} must be an object, got {v!r}")
            out[k] = _merge(out[k], v, where + (k,))
        else:
            out[k] = copy.deepcopy(v)
    return out


def _json_key(f: dataclasses.Field) -> str:
    return f.metadata.get("key") or f.name


def _build(cls, data, where: tuple):
    """An instance of dataclass `cls` from its JSON object, every value type- and range-checked."""
    name = ".".join(where) or "(top level)"
    if not isinstance(data, dict):
        raise ConfigError(f"model config key {name!r} must be an object, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {_json_key(f): f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown model config key {'.'.join(where + (unknown[0],))!r} "
                          f"(known here: {', '.join(sorted(known))})")
    values = {}
    for key, f in known.items():
        path = where + (key,)
        if key not in data:
            raise ConfigError(f"model config key {'.'.join(path)!r} is missing")
        values[f.name] = _value(hints[f.name], data[key], f.metadata, path)
    instance = cls(**values)
    if hasattr(instance, "_check"):
        instance._check(".".join(where))
    return instance


def _value(hint, raw, bounds: dict, path: tuple):
    """`raw` as type `hint` (bool, int, float, str, None, tuple[T, ...], a settings dataclass, or a union)."""
    key = ".".join(path)
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    errors = []
    for option in options:
        try:
            return _one(option, raw, bounds, path)
        except _Mismatch as exc:
            errors.append(str(exc))
    raise ConfigError(f"model config key {key!r}: expected {' or '.join(errors)}, got {raw!r}")


class _Mismatch(Exception):
    """Not this type (the message names the type expected)."""


def _one(hint, raw, bounds: dict, path: tuple):
    if hint is type(None):
        if raw is None:
            return None
        raise _Mismatch("null")
    if dataclasses.is_dataclass(hint):
        if not isinstance(raw, dict):
            raise _Mismatch("an object")
        return _build(hint, raw, path)
    if typing.get_origin(hint) is tuple:
        if not isinstance(raw, list):
            raise _Mismatch("a list")
        element = typing.get_args(hint)[0]
        return tuple(_one(element, item, bounds, path) for item in raw)
    if hint is bool:
        if isinstance(raw, bool):
            return raw
        raise _Mismatch("true or false")
    if hint is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise _Mismatch("an integer")
        return _bounded(raw, bounds, path)
    if hint is float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise _Mismatch("a number")
        return _bounded(float(raw), bounds, path)
    if hint is str:
        if isinstance(raw, str):
            return raw
        raise _Mismatch("a string")
    raise TypeError(f"model config: no reader for type {hint!r} ({'.'.join(path)})")


def _bounded(value, bounds: dict, path: tuple):
    lo, hi, above, below = (bounds.get(k) for k in ("lo", "hi", "above", "below"))
    if ((lo is not None and value < lo) or (hi is not None and value > hi)
            or (above is not None and value <= above) or (below is not None and value >= below)):
        limits = [f">= {lo}" if lo is not None else None, f"> {above}" if above is not None else None,
                  f"<= {hi}" if hi is not None else None, f"< {below}" if below is not None else None]
        raise ConfigError(f"model config key {'.'.join(path)!r}: {value!r} is out of range "
                          f"(must be {' and '.join(x for x in limits if x)})")
    return value


def _to_dict(instance) -> dict:
    out = {}
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value):
            value = _to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[_json_key(f)] = value
    return out
