"""The registration model, created on first use so that runs with only bad input never load torch."""
from __future__ import annotations

import time

from interfaces import cpus
from interfaces.logs import log


class LazyRegistration:
    """`get()` returns the injected registration, or builds the project's model from `config` (the ModelConfig
    read and checked at setup, runner.settings.load_model_config) the first time it is asked."""

    def __init__(self, registration, config=None, config_label: str = "resources/config.json (baked)"):
        if registration is None and config is None:
            raise ValueError("LazyRegistration needs a registration or the model config to build one")
        self._registration = registration
        self._config = config
        self._config_label = config_label
        self.load_seconds: float | None = None  # set when this run loaded the project's model

    def get(self):
        if self._registration is None:
            t0 = time.perf_counter()
            from model import Registration  # torch is imported here, not before: `--help` stays instant

            log.info("model config: %s", self._config_label)
            self._registration = Registration(self._config)
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
