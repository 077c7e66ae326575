"""Health patterns of the mock IaaS: what each simulated instance reports, per cartridge type.

A pattern is Stratos's mock-IaaS one: `sampleValues` each held `sampleDuration` seconds, then
`loop` (start again), `continue` (stay on the last value) or `stop` (go silent, which the fault
detector then sees). Patterns load from a YAML or JSON file and can be replaced at run time.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, RootModel

Factor = Literal["memory-consumption", "load-average", "requests-in-flight"]
METRIC_OF: dict[str, str] = {
    "memory-consumption": "memory_consumption",
    "load-average": "load_average",
    "requests-in-flight": "requests_in_flight",
}


class SamplePattern(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sampleValues: list[float] = Field(min_length=1)
    sampleDuration: float = Field(gt=0, description="seconds each value is held")
    mode: Literal["loop", "continue", "stop"] = "loop"

    def value_at(self, elapsed: float) -> float | None:
        """The value `elapsed` seconds after the pattern started; None once a `stop` pattern ends."""
        index = int(max(elapsed, 0.0) // self.sampleDuration)
        count = len(self.sampleValues)
        if index < count:
            return self.sampleValues[index]
        if self.mode == "loop":
            return self.sampleValues[index % count]
        if self.mode == "continue":
            return self.sampleValues[-1]
        return None


class CartridgePatterns(RootModel[dict[Factor, SamplePattern]]):
    """The body of `PUT /mock-iaas/api/health-patterns/{cartridgeType}`."""


class PatternFile(RootModel[dict[str, CartridgePatterns]]):
    """A patterns file: cartridge type -> factor -> pattern."""


class HealthPatterns:
    """The patterns in force; each cartridge's timeline restarts when its patterns are replaced."""

    def __init__(self, patterns: dict[str, CartridgePatterns] | None = None, clock=time.time) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.patterns: dict[str, CartridgePatterns] = {}
        self.started: dict[str, float] = {}
        for cartridge_type, cartridge_patterns in (patterns or {}).items():
            self.replace(cartridge_type, cartridge_patterns)

    @staticmethod
    def read(path: Path) -> dict[str, CartridgePatterns]:
        """The patterns of a YAML (or JSON) file, per cartridge type.

        Raises ValidationError naming the field when the file does not fit the schema."""
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        return PatternFile.model_validate(data or {}).root

    def load(self, path: Path) -> list[str]:
        """Replace the patterns of every cartridge in a YAML (or JSON) file; returns their types."""
        loaded = self.read(path)
        for cartridge_type, patterns in loaded.items():
            self.replace(cartridge_type, patterns)
        return list(loaded)

    def replace(self, cartridge_type: str, patterns: CartridgePatterns, started: float | None = None) -> None:
        """Put `patterns` in force; their timeline starts now (or at `started`, when restored)."""
        with self.lock:
            self.patterns[cartridge_type] = patterns
            self.started[cartridge_type] = self.clock() if started is None else started

    def of(self, cartridge_type: str) -> CartridgePatterns | None:
        with self.lock:
            return self.patterns.get(cartridge_type)

    def as_json(self) -> dict:
        with self.lock:
            return {k: v.model_dump() for k, v in self.patterns.items()}

    def values(self, cartridge_type: str) -> dict[str, float]:
        """metric name -> value now, for the factors that are not silent."""
        with self.lock:
            patterns = self.patterns.get(cartridge_type)
            started = self.started.get(cartridge_type, 0.0)
        if patterns is None:
            return {}
        elapsed = self.clock() - started
        found = {METRIC_OF[factor]: pattern.value_at(elapsed) for factor, pattern in patterns.root.items()}
        return {metric: value for metric, value in found.items() if value is not None}
