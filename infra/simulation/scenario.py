"""Scenario files: YAML read with line numbers, checked by pydantic, turned into the engine's
``SimulationSetup``. A bad scenario is an error naming the file, the line and the field:

    flash-crowd.yaml:14: load.0.spike.peak: Input should be a valid number

PyYAML's composer keeps the position of every node, so the loader builds the plain data and a
map from each field path to its line; pydantic's error locations are looked up in that map.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from actors.base import Timeouts
from schemas.definitions import DEFINITION_KINDS
from schemas.envelope import SUPER_TENANT
from streams import load_shapes as shapes
from streams.simulation import InstanceModel, LoadSpec, PlatformModel, ScenarioError, SimulationSetup

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(value: Any) -> float:
    """Seconds from `90s`, `15m`, `24h`, `1h30m`, `250ms` or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string such as 90s, 15m, 24h")
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip().replace(" ", "")
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{value!r} is not a duration (write 90s, 15m, 24h or 1h30m)")
    return sum(float(n) * _UNITS[u] for n, u in parts)


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
Positive = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RampModel(_Strict):
    low: float = Field(alias="from")
    high: float = Field(alias="to")
    start: Duration = 0.0
    end: Duration


class SineModel(_Strict):
    mean: float
    amplitude: float
    period: Positive
    phase: Duration = 0.0


class SpikeModel(_Strict):
    base: float
    peak: float
    at: Duration
    duration: Positive
    rise: Duration = 0.0
    fall: Duration = 0.0


class WalkModel(_Strict):
    start: float
    sigma: float = Field(ge=0)
    min: float = 0.0
    max: float = math.inf


class NoiseModel(_Strict):
    sigma: float = Field(ge=0)
    mean: float = 0.0


SHAPE_FIELDS = ("steps", "ramp", "sine", "spike", "walk", "noise", "trace")


class LoadModel(_Strict):
    cluster: str = Field(min_length=1, description="cartridge alias or cluster id")
    metric: Literal["load_average", "memory_consumption", "requests_in_flight"]
    model: Literal["per-member", "shared"] = "per-member"
    steps: list[tuple[Duration, float]] | None = Field(None, min_length=1)
    ramp: RampModel | None = None
    sine: SineModel | None = None
    spike: SpikeModel | None = None
    walk: WalkModel | None = None
    noise: NoiseModel | None = None
    trace: str | None = Field(None, description="CSV file time_s,value (relative to the scenario)")

    @model_validator(mode="after")
    def _some_shape(self) -> LoadModel:
        if all(getattr(self, name) is None for name in SHAPE_FIELDS):
            raise ValueError(f"a load needs a shape: one or more of {', '.join(SHAPE_FIELDS)}")
        return self


class InstancesModel(_Strict):
    startup_delay: Duration = 60.0
    startup_jitter: Duration = 0.0
    start_failure_rate: float = Field(0.0, ge=0, lt=1)
    crash_rate_per_hour: float = Field(0.0, ge=0)
    shutdown_delay: Duration = 0.0


class PlatformSettingsModel(_Strict):
    """The platform's own settings (STRATOS_* in the live platform)."""

    health_window: Positive = 60.0
    member_fault: Positive = 60.0
    timer: Positive = 30.0
    reconcile: Positive = 15.0
    start_attempts: int = Field(3, ge=1)
    retry: Positive = 2.0
    pending_timeout: Positive = 900.0
    termination_timeout: Positive = 1800.0
    obsolete_timeout: Positive = 86400.0


class DeployModel(_Strict):
    application: str = Field(min_length=1)
    policy: str = Field(min_length=1, description="application policy id")


DEFINITION_SECTIONS = {
    "networkPartitions": "networkPartition",
    "autoscalingPolicies": "autoscalingPolicy",
    "deploymentPolicies": "deploymentPolicy",
    "applicationPolicies": "applicationPolicy",
    "cartridges": "cartridge",
    "cartridgeGroups": "cartridgeGroup",
    "applications": "application",
}
"""Scenario section (Stratos's REST collection name) -> definition kind, in the order added."""


class DefinitionsModel(_Strict):
    networkPartitions: list[str | dict] = []
    autoscalingPolicies: list[str | dict] = []
    deploymentPolicies: list[str | dict] = []
    applicationPolicies: list[str | dict] = []
    cartridges: list[str | dict] = []
    cartridgeGroups: list[str | dict] = []
    applications: list[str | dict] = []


class ScenarioModel(_Strict):
    name: str | None = None
    description: str | None = None
    seed: int = 0
    duration: Positive
    step: Positive = 15.0
    tenant: str = SUPER_TENANT
    definitions: DefinitionsModel
    deploy: list[DeployModel] = Field(min_length=1)
    instances: InstancesModel = InstancesModel()
    platform: PlatformSettingsModel = PlatformSettingsModel()
    load: list[LoadModel] = []

    @model_validator(mode="after")
    def _step_fits(self) -> ScenarioModel:
        if self.step > self.duration:
            raise ValueError(f"step {self.step:g}s is longer than the duration {self.duration:g}s")
        return self


class ScenarioFileError(ValueError):
    """What is wrong, where: `file:line: field: message`."""


# --- YAML with line numbers ----------------------------------------------------------------


def _lines(node: yaml.Node, path: tuple, lines: dict[tuple, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = path + (str(key_node.value),)
            lines[key] = key_node.start_mark.line + 1
            _lines(value_node, key, lines)
            lines[key] = key_node.start_mark.line + 1  # a field's line is its key's
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, path + (str(i),), lines)


def load_yaml(text: str, source: str) -> tuple[Any, dict[tuple, int]]:
    """The data and {field path: line} (paths of strings, list indices as digits)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ScenarioFileError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    lines: dict[tuple, int] = {}
    if node is None:
        return {}, lines
    _lines(node, (), lines)
    try:
        return yaml.SafeLoader("").construct_document(node), lines
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ScenarioFileError(f"{where}: {getattr(exc, 'problem', exc)}") from None


def line_of(lines: dict[tuple, int], path: tuple) -> int | None:
    """The line of the deepest part of ``path`` the file has (a missing field: its parent's)."""
    parts = tuple(str(p) for p in path)
    while parts:
        if parts in lines:
            return lines[parts]
        parts = parts[:-1]
    return lines.get(())


def _where(source: str, lines: dict[tuple, int], path: tuple) -> str:
    line = line_of(lines, path)
    return f"{source}:{line}" if line else source


def _validation_message(exc: ValidationError, source: str, lines: dict[tuple, int], prefix: tuple = ()) -> str:
    messages = []
    for err in exc.errors(include_url=False)[:5]:
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in ("function-after", "tagged-union")))
        loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p in ("str", "dict"))))
        path = prefix + loc
        field = ".".join(str(p) for p in path) or "scenario"
        messages.append(f"{_where(source, lines, path)}: {field}: {err['msg']}")
    return "\n".join(messages)


# --- from the model to the engine's setup ---------------------------------------------------


def _read_json(path: Path, where: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ScenarioFileError(f"{where}: file {path} not found") from None
    except json.JSONDecodeError as exc:
        raise ScenarioFileError(f"{where}: {path}:{exc.lineno}: not valid JSON: {exc.msg}") from None


def _read_trace(path: Path, where: str) -> shapes.Trace:
    try:
        rows = list(csv.reader(path.read_text().splitlines()))
    except FileNotFoundError:
        raise ScenarioFileError(f"{where}: trace file {path} not found") from None
    points = []
    for n, row in enumerate(rows, start=1):
        if not row or row[0].strip().startswith("#") or (n == 1 and not _is_number(row[0])):
            continue
        try:
            points.append((float(row[0]), float(row[1])))
        except (ValueError, IndexError):
            raise ScenarioFileError(f"{where}: {path}:{n}: expected time_s,value, got {','.join(row)!r}") from None
    if not points:
        raise ScenarioFileError(f"{where}: trace file {path} has no time_s,value rows")
    return shapes.Trace(tuple(sorted(points)))


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _shapes(load: LoadModel, base: Path, where: str) -> tuple[shapes.Shape, ...]:
    found: list[shapes.Shape] = []
    if load.steps is not None:
        found.append(shapes.Steps(tuple(sorted((float(t), float(v)) for t, v in load.steps))))
    if load.ramp is not None:
        found.append(shapes.Ramp(load.ramp.low, load.ramp.high, load.ramp.start, load.ramp.end))
    if load.sine is not None:
        s = load.sine
        found.append(shapes.Sine(s.mean, s.amplitude, s.period, s.phase))
    if load.spike is not None:
        s = load.spike  # type: ignore[assignment]
        found.append(shapes.Spike(s.base, s.peak, s.at, s.duration, s.rise, s.fall))  # type: ignore[attr-defined]
    if load.walk is not None:
        w = load.walk
        found.append(shapes.Walk(w.start, w.sigma, w.min, w.max))
    if load.noise is not None:
        found.append(shapes.Noise(load.noise.sigma, load.noise.mean))
    if load.trace is not None:
        found.append(_read_trace(base / load.trace, where))
    return tuple(found)


class Scenario:
    """A checked scenario file: its model, the engine's setup, and where each field is."""

    def __init__(
        self,
        source: str,
        model: ScenarioModel,
        setup: SimulationSetup,
        lines: dict[tuple, int],
        definition_paths: list[tuple] | None = None,
    ) -> None:
        self.source, self.model, self.setup, self.lines = source, model, setup, lines
        self.definition_paths = definition_paths or []
        """The YAML path of each of ``setup.definitions``."""

    @property
    def name(self) -> str:
        return self.model.name or Path(self.source).stem

    def error(self, exc: ScenarioError) -> ScenarioFileError:
        """The engine's complaint about a field, with the line it is on."""
        path = exc.path
        if (
            len(path) == 2
            and path[0] == "definitions"
            and isinstance(path[1], int)
            and path[1] < len(self.definition_paths)
        ):
            path = self.definition_paths[path[1]]
        field = ".".join(str(p) for p in path)
        return ScenarioFileError(f"{_where(self.source, self.lines, path)}: {field}: {exc.message}")

    def with_policy(self, body: dict) -> SimulationSetup:
        """This scenario with every autoscaling policy replaced by ``body`` (keeping each id):
        the compare mode's way to run several policies on the same load and seed."""
        replaced = tuple(
            (kind, {**body, "id": definition["id"]} if kind == "autoscalingPolicy" else definition)
            for kind, definition in self.setup.definitions
        )
        return SimulationSetup(**{**self.setup.__dict__, "definitions": replaced})


def load_scenario(path: Path, seed: int | None = None) -> Scenario:
    """Read and check a scenario; raises ScenarioFileError naming the line and the field."""
    source = str(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScenarioFileError(f"{source}: cannot read: {exc.strerror or exc}") from None
    data, lines = load_yaml(text, source)
    if not isinstance(data, dict):
        raise ScenarioFileError(f"{source}:1: scenario: expected a mapping of fields (seed, duration, …)")
    try:
        model = ScenarioModel.model_validate(data)
    except ValidationError as exc:
        raise ScenarioFileError(_validation_message(exc, source, lines)) from None
    base = path.parent
    definitions: list[tuple[str, dict]] = []
    paths: list[tuple] = []
    for section, kind in DEFINITION_SECTIONS.items():
        for n, entry in enumerate(getattr(model.definitions, section)):
            at = ("definitions", section, n)
            where = _where(source, lines, at)
            field = ".".join(map(str, at))
            body = _read_json(base / entry, f"{where}: {field}") if isinstance(entry, str) else entry
            try:
                DEFINITION_KINDS[kind].model_validate(body)
            except ValidationError as exc:
                inner = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or kind}: {e['msg']}"
                    for e in exc.errors(include_url=False)[:3]
                )
                if isinstance(entry, dict):
                    raise ScenarioFileError(_validation_message(exc, source, lines, at)) from None
                raise ScenarioFileError(f"{where}: {field} ({entry}): {inner}") from None
            definitions.append((kind, body))
            paths.append(at)
    loads = tuple(
        LoadSpec(
            load.cluster,
            load.metric,
            load.model,
            _shapes(load, base, f"{_where(source, lines, ('load', n, 'trace'))}: load.{n}.trace"),
        )
        for n, load in enumerate(model.load)
    )
    p = model.platform
    setup = SimulationSetup(
        seed=model.seed if seed is None else seed,
        duration=model.duration,
        step=model.step,
        definitions=tuple(definitions),
        deploy=tuple((d.application, d.policy) for d in model.deploy),
        loads=loads,
        tenant=model.tenant,
        instances=InstanceModel(**model.instances.model_dump()),
        platform=PlatformModel(
            health_window_seconds=p.health_window,
            member_fault_seconds=p.member_fault,
            timer_seconds=p.timer,
            reconcile_seconds=p.reconcile,
            start_attempts=p.start_attempts,
            retry_seconds=p.retry,
            timeouts=Timeouts(p.pending_timeout, p.termination_timeout, p.obsolete_timeout, p.start_attempts),
        ),
    )
    return Scenario(source, model, setup, lines, paths)


def load_policy(path: Path) -> dict:
    """An autoscaling policy file (Stratos JSON, or YAML), checked; errors name the field."""
    source = str(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScenarioFileError(f"{source}: cannot read: {exc.strerror or exc}") from None
    if path.suffix == ".json":
        try:
            data, lines = json.loads(text), {}  # type: ignore[var-annotated]
        except json.JSONDecodeError as exc:
            raise ScenarioFileError(f"{source}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    else:
        data, lines = load_yaml(text, source)
    try:
        DEFINITION_KINDS["autoscalingPolicy"].model_validate(data)
    except ValidationError as exc:
        raise ScenarioFileError(_validation_message(exc, source, lines)) from None
    return data
