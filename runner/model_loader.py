"""The registration model, created on first use so that runs with only bad input never load torch."""
from __future__ import annotations

import time

from interfaces import cpus
from interfaces.logs import log


def load_registration(config_file: str | None, config_source: str, device=None, config: dict | None = None):
    """The project's model with its config (torch is imported here, not before: `--help` stays instant).
    config: the dict already read from config_file at setup (runner.settings.load_model_config), else read here."""
    from model import Registration, load_config

    log.info("model config: resources/config.json%s", f" <- {config_file} ({config_source})" if config_file
             else " (baked)")
    return Registration(config if config is not None else load_config(config_file), device=device)


class LazyRegistration:
    """`get()` returns the injected registration, or loads the project's model the first time it is asked."""

    def __init__(self, registration, config_file: str | None = None, config_source: str = "baked",
                 config: dict | None = None):
        self._registration = registration
        self._config = (config_file, config_source, None, config)
        self.load_seconds: float | None = None  # set when this run loaded the project's model

    def get(self):
        if self._registration is None:
            t0 = time.perf_counter()
            self._registration = load_registration(*self._config)
            self.load_seconds = time.perf_counter() - t0
            log.info("model loaded in %.2fs, device %s, %s torch threads (allowed CPUs %s)", self.load_seconds,
                     getattr(self._registration, "device_name", "?"), getattr(self._registration, "threads", "?"),
                     cpus.describe())
        return self._registration

    @property
    def on_cuda(self) -> bool:
        """Whether the model runs on CUDA (loads it); False when it cannot load (its pairs report why)."""
        try:
            return str(getattr(self.get(), "device_name", "")).startswith("cuda")
        except Exception:  # noqa: BLE001 - the pair's register call reports a model that cannot load
            return False
