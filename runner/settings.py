"""Every setting of a run, read from the environment once, before any work.

A bad value is a setup error (exit status 2) whose message names the variable. Model config sources, first
found wins: $REMIND2REG_CONFIG (explicit), then a mounted model tarball's config.json
($REMIND2REG_MODEL_DIR, default /opt/ml/model, where Grand Challenge extracts it), then the baked
resources/config.json alone. Any override is merged over resources/config.json (model/config.py).
`load_model_config` reads it once at setup (broken JSON, an unknown key or a bad value: exit 2 naming the file
and the key) and the run hands the dict to the model.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from interfaces.images import DEFAULT_GZIP_LEVEL
from interfaces.logs import one_line
from interfaces.organisers import SEQUENCES_ENV, wanted_modalities
from runner import shards

OVERLAP_ENV = "REMIND2REG_OVERLAP_IO"
GZIP_LEVEL_ENV = "REMIND2REG_GZIP_LEVEL"
TIMINGS_ENV = "REMIND2REG_TIMINGS"
CONFIG_ENV = "REMIND2REG_CONFIG"  # model.config names it too: torch is imported only with the model
MODEL_DIR_ENV = "REMIND2REG_MODEL_DIR"
DEFAULT_MODEL_DIR = "/opt/ml/model"

OVERLAP_CHOICES = {"auto": "auto", "1": "on", "on": "on", "0": "off", "off": "off"}


class SetupError(ValueError):
    """A run that cannot start: one line naming the setting."""


@dataclass(frozen=True)
class Settings:
    sequences: tuple[int, ...]   # moving modality indices this container writes fields for
    overlap: str                 # auto | on | off: I/O on background threads (auto: when the model is on CUDA)
    gzip_level: int              # 0-9, of the organisers' .nii.gz fields
    write_timings: bool          # OUT/timings.json
    config_file: str | None      # the model config override in use, None: resources/config.json alone
    config_source: str           # how config_file was chosen, for the log
    shard: tuple[int, int] | None = None  # (K, N): this run takes shard K (from 0) of N (runner/shards.py)
    shard_source: str = "none"            # where the shard came from, for the log


def overlap_mode(value: str | None) -> str:
    """$REMIND2REG_OVERLAP_IO -> auto | on | off (unset: auto)."""
    key = (value or "auto").strip().lower()
    if key not in OVERLAP_CHOICES:
        raise SetupError(f"{OVERLAP_ENV}={value!r}: expected auto, 1 (on) or 0 (off)")
    return OVERLAP_CHOICES[key]


def gzip_level(value: str | None) -> int:
    """$REMIND2REG_GZIP_LEVEL -> 0-9 (unset: 0)."""
    value = (value if value is not None else str(DEFAULT_GZIP_LEVEL)).strip()
    if not (value.isdigit() and 0 <= int(value) <= 9):
        raise SetupError(f"{GZIP_LEVEL_ENV}={value!r}: expected a gzip level from 0 (fastest) to 9")
    return int(value)


def model_config(environ) -> tuple[str | None, str]:
    """(config override file or None, its source) by the precedence in this module's docstring."""
    explicit = environ.get(CONFIG_ENV)
    if explicit:
        if not os.path.isfile(explicit):
            raise SetupError(f"{CONFIG_ENV}={explicit!r}: no such model config file")
        return explicit, f"${CONFIG_ENV}"
    mounted = os.path.join(environ.get(MODEL_DIR_ENV, DEFAULT_MODEL_DIR), "config.json")
    if os.path.isfile(mounted):
        return mounted, "model tarball"
    return None, "baked"


def read_settings(environ=None, sequences: str | None = None, write_timings: bool | None = None,
                  shard: str | None = None) -> Settings:
    """The run's settings; `sequences`, `write_timings` and `shard` (K/N; command line, tests) override the
    environment."""
    environ = os.environ if environ is None else environ
    try:
        shard_kn, shard_source = shards.from_environment(environ, shard)
    except shards.ShardError as exc:
        raise SetupError(str(exc)) from None
    config_file, config_source = model_config(environ)
    try:
        wanted = wanted_modalities(sequences if sequences is not None else environ.get(SEQUENCES_ENV))
    except ValueError as exc:
        raise SetupError(str(exc)) from None
    return Settings(
        sequences=wanted,
        overlap=overlap_mode(environ.get(OVERLAP_ENV)),
        gzip_level=gzip_level(environ.get(GZIP_LEVEL_ENV)),
        write_timings=(environ.get(TIMINGS_ENV, "1") != "0") if write_timings is None else write_timings,
        config_file=config_file,
        config_source=config_source,
        shard=shard_kn,
        shard_source=shard_source,
    )


def config_label(config_file: str | None, config_source: str) -> str:
    """How the log and setup errors name the model config in use."""
    if config_file is None:
        return "resources/config.json (baked)"
    if config_source == f"${CONFIG_ENV}":
        return f"{CONFIG_ENV}={config_file!r}"
    return f"model config {config_file} ({config_source})"


def load_model_config(config_file: str | None, config_source: str):
    """The model's ModelConfig (resources/config.json <- the override file), read and checked for keys, types
    and ranges once, before any work; any problem is a SetupError (exit 2) naming the file and the key. Imports the
    model package, hence torch: call it only when the run will load the project's model."""
    from model.config import load_config

    where = config_label(config_file, config_source)
    try:
        return load_config(config_file)
    except json.JSONDecodeError as exc:
        raise SetupError(f"{where}: broken JSON: {exc}") from None
    except OSError as exc:
        raise SetupError(f"{where}: cannot read it: {one_line(exc)}") from None
    except ValueError as exc:  # model.config.ConfigError: names the key
        raise SetupError(f"{where}: {one_line(exc)}") from None
