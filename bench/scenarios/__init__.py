"""What the benchmark does to the targets: one module per scenario, each a subclass of
Scenario.

A scenario runs once per target it applies to (`run_target`), or once for
the whole run (`run`, e.g. the sink alone), and says what of its result goes
into the reports: rows of the numbers table (`rows`) and verdicts against
the targets of the product (`verdicts`).
"""

from __future__ import annotations

import time
import traceback

from common import log, pct, r, wait_for_quiet


class Scenario:
    name = ""  # on the command line and in the results
    aliases: tuple[str, ...] = ()  # older names that select it
    title = ""
    order = 50
    # targets it runs on when --target is not given; None: every target it applies to
    default_targets: tuple[str, ...] | None = None
    # False: no webhook involved, so no-op consumers are measured too
    needs_delivery = True
    # name: (full run, --quick); --size SCENARIO.NAME=VALUE overrides
    sizes: dict[str, tuple] = {}

    def __init__(self, bench) -> None:
        self.bench = bench

    def size(self, name: str):
        return self.bench.size(self, name)

    @classmethod
    def applies_to(cls, target_cls) -> bool:
        return target_cls.delivers or not cls.needs_delivery

    def run(self, target_classes: list) -> dict:
        """Every target in turn; {target name: result}."""
        out = {}
        for cls in target_classes:
            out[cls.name] = self.guarded(cls, lambda cls=cls: self.run_target(cls))
        return out

    def guarded(self, cls, fn) -> dict:
        """fn() for one target, after waiting for a quiet machine; an error is a result."""
        why = self.bench.prepare(cls)
        if why:
            log(f"{self.name} / {cls.name}: skipped, {why}")
            return {"error": f"not run: {why}"}
        idle = wait_for_quiet(self.bench.args.wait_quiet)
        log(f"{self.name} / {cls.name} (machine {idle:.0f}% idle before it) ...")
        t0 = time.monotonic()
        try:
            res = fn()
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - the other targets still run
            traceback.print_exc()
            res = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        res["wall_s"] = round(time.monotonic() - t0, 1)
        res.setdefault("machine_idle_before_pct", round(idle))
        log(f"{self.name} / {cls.name}: {self.brief(res)}")
        return res

    def run_target(self, target_cls) -> dict:
        raise NotImplementedError

    def brief(self, res: dict) -> str:
        """One line for the log."""
        if "error" in res:
            return "ERROR " + res["error"].splitlines()[0][:200]
        return f"done in {res['wall_s']} s"

    # -- reports -----------------------------------------------------------------------

    def rows(self, result: dict) -> list[list]:
        """[target, measure, value] rows of the numbers table."""
        return []

    def verdicts(self, result: dict, results: dict) -> list[dict]:
        """Rows of the targets table (see verdict())."""
        return []


def verdict(target: str, aodh, measured: str, met: bool | None, by: str, why: str) -> dict:
    v = "n/a" if met is None else ("met" if met else f"missed by {by}")
    return {"target": target, "aodh": aodh, "measured": measured, "verdict": v, "why": why}


def latencies(records: list[list]) -> tuple[dict, list[float], int]:
    """First arrival per alarm, their latencies (arrival - sent), and the duplicates."""
    first: dict[str, list] = {}
    for rec in sorted(records, key=lambda x: x[0]):
        first.setdefault(rec[2], rec)
    lat = [rec[0] - rec[3] for rec in first.values() if rec[3] is not None]
    return first, lat, len(records) - len(first)


def lat_summary(lat: list[float], expected: int | None = None, prefix: str = "latency") -> dict:
    """p50/p99/max; with `expected`, alarms that never arrived count as slower than all, so
    a p99 that falls on one of them is None."""
    values = list(lat)
    if expected is not None and expected > len(values):
        values += [float("inf")] * (expected - len(values))

    def fin(x):
        return None if x is None or x == float("inf") else r(x)

    return {
        f"{prefix}_p50_s": fin(pct(values, 50)),
        f"{prefix}_p99_s": fin(pct(values, 99)),
        f"{prefix}_max_s": fin(max(values) if values else None),
    }


def ok(res) -> bool:
    return isinstance(res, dict) and "error" not in res
