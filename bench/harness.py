"""What targets and scenarios share during one benchmark run: the options, the sizes, the
webhook sink, a broker (vhost) per measured run, and the registry of targets and
scenarios (every module of bench/targets/ and bench/scenarios/)."""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import rabbit
from common import SinkProc


@dataclass
class Broker:
    """Where one run's target and sender meet: a vhost, and the queue settings both use."""

    host: str
    port: int
    vhost: str
    rabbit_opts: dict = field(default_factory=dict)
    user: str = "guest"
    password: str = "guest"

    @property
    def url(self) -> str:
        return f"rabbit://{self.user}:{self.password}@{self.host}:{self.port}/{self.vhost}"


class Bench:
    """One benchmark run: options, temporary directory, and resources started on first use
    (stopped by the ExitStack)."""

    def __init__(self, args, workdir: Path, stack: contextlib.ExitStack):
        self.args = args
        self.quick = args.quick
        self.workdir = workdir
        self.stack = stack
        self._sink: SinkProc | None = None
        self.prepared: dict[str, str | None] = {}

    def size(self, scenario, name: str):
        """A size of a scenario: --size SCENARIO.NAME=V, else its full or --quick value."""
        given = (self.args.sizes or {}).get(f"{scenario.name}.{name}")
        full, quick = scenario.sizes[name]
        if given is not None:
            return type(full)(given)
        return quick if self.quick else full

    def sink(self) -> SinkProc:
        if self._sink is None:
            self._sink = SinkProc(self.workdir, ports=3)
            self.stack.callback(self._sink.stop)
        return self._sink

    def run_dir(self, *parts: str) -> Path:
        d = self.workdir.joinpath(*parts)
        d.mkdir(parents=True, exist_ok=True)
        return d

    @contextlib.contextmanager
    def broker(self, label: str, rabbit_opts: dict | None = None):
        """A fresh vhost on the shared broker for one measured run, deleted afterwards."""
        with rabbit.SharedVhost(self.args.rabbit_host, self.args.rabbit_port, label=label) as v:
            yield Broker(v.host, v.port, v.name, dict(rabbit_opts or {}), v.user, v.password)

    def prepare(self, target_cls) -> str | None:
        """Make the target runnable once per run (e.g. its virtualenv); the reason when it
        cannot run here, else None."""
        if target_cls.name not in self.prepared:
            try:
                self.prepared[target_cls.name] = target_cls.prepare(self)
            except Exception as exc:  # noqa: BLE001 - reported, the others still run
                self.prepared[target_cls.name] = f"{type(exc).__name__}: {exc}"
        return self.prepared[target_cls.name]


def new_prefix(tag: str) -> str:
    return f"{tag}{uuid.uuid4().hex[:6]}"


def _load(package: str, base_attr: str) -> dict:
    pkg = importlib.import_module(package)
    base = getattr(pkg, base_attr)
    found = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{package}.{info.name}")
        for obj in vars(module).values():
            if not isinstance(obj, type) or not issubclass(obj, base) or obj is base:
                continue
            if obj.__module__ == module.__name__ and getattr(obj, "name", None):
                found[obj.name] = obj
    return found


def targets() -> dict:
    """name -> Target class, from every module of bench/targets/, in their `order`."""
    found = _load("targets", "Target")
    return dict(sorted(found.items(), key=lambda kv: (kv[1].order, kv[0])))


def scenarios() -> dict:
    """name -> Scenario class, from every module of bench/scenarios/, in their `order`."""
    found = _load("scenarios", "Scenario")
    return dict(sorted(found.items(), key=lambda kv: (kv[1].order, kv[0])))
