"""The benchmark's reports: the tables on stdout, bench/results/<date>.json, bench/RESULTS.md
(whose hand-written notes section is kept) and the history of full runs."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path

import rabbit
from common import BENCH, ROOT

NOTES_BEGIN = "<!-- notes: hand-written, kept when run.py refreshes this file -->"
NOTES_END = "<!-- /notes -->"


def machine_info(args, aodh_version: str | None = None) -> dict:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    try:
        rmq = rabbit.server_version(args.rabbit_host, args.rabbit_port)
    except Exception as exc:  # noqa: BLE001
        rmq = f"? ({exc})"
    commit = "?"
    with contextlib.suppress(Exception):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", args.rev or "HEAD"],
            cwd=ROOT, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        if args.rev:
            commit += f" (--rev {args.rev})"
        else:
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--", "ceilo_notifier", "setup.cfg"],
                cwd=ROOT, capture_output=True, text=True,
            ).stdout.strip()  # fmt: skip
            if dirty:
                commit += " + work tree changes"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "oslo.messaging": version("oslo.messaging"),
        "kombu": version("kombu"),
        "oslo.service": version("oslo.service"),
        "requests": version("requests"),
        "aodh": aodh_version or "-",
        "rabbitmq": rmq,
        "commit": commit,
    }


def fmt_table(rows: list[list], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]

    def line(cells):
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=False))

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def number_rows(doc: dict, scenario_classes: dict) -> list[list]:
    """[scenario, target, measure, value]"""
    rows = []
    for name, result in doc["scenarios"].items():
        cls = scenario_classes.get(name)
        if cls is None or not isinstance(result, dict):
            continue
        if "error" in result and len(result) <= 3:
            rows.append([name, "-", "ERROR", str(result["error"])[:100]])
            continue
        for row in cls(None).rows(result):
            rows.append([name, *row])
    return rows


def target_rows(doc: dict, scenario_classes: dict) -> list[dict]:
    out = []
    for name, result in doc["scenarios"].items():
        cls = scenario_classes.get(name)
        if cls is None or not isinstance(result, dict):
            continue
        try:
            out += cls(None).verdicts(result, doc["scenarios"])
        except (KeyError, TypeError, ValueError) as exc:
            out.append({"target": f"{name}: (could not evaluate)", "aodh": "-",
                        "measured": f"{type(exc).__name__}: {exc}", "verdict": "n/a",
                        "why": ""})  # fmt: skip
    return out


def print_tables(doc: dict, scenario_classes: dict) -> None:
    print()
    print(fmt_table(number_rows(doc, scenario_classes), ["scenario", "target", "measure",
                                                          "value"]))  # fmt: skip
    if doc.get("targets"):
        print()
        print(fmt_table([[t["target"], t["aodh"], t["measured"], t["verdict"]]
                         for t in doc["targets"]],
                        ["target", "aodh-notifier", "measured", "verdict"]))  # fmt: skip


def _cell(x) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def write_results_md(path: Path, doc: dict, json_name: str, scenario_classes: dict) -> None:
    old_notes = ""
    if path.exists():
        text = path.read_text()
        if NOTES_BEGIN in text and NOTES_END in text:
            old_notes = text.split(NOTES_BEGIN, 1)[1].split(NOTES_END, 1)[0].strip("\n")
    m = doc["machine"]
    res = doc["scenarios"]
    out = [
        "# ceilo-notifier benchmark results",
        "",
        f"Run {doc['date']} with `{doc['command']}`"
        + (" (**--quick**: smaller counts, not comparable)" if doc["quick"] else "")
        + f"; raw numbers in `bench/results/{json_name}`. Regenerate with "
        "`.venv/bin/python bench/run.py`.",
        "",
        "Targets measured in the same run: "
        + ", ".join(f"`{k}` ({v})" for k, v in doc.get("target_titles", {}).items()) + ".",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    for k, v in m.items():
        out.append(f"| {k} | {_cell(v)} |")
    busy = {}
    for sname, result in res.items():
        for tname, v in (result.items() if isinstance(result, dict) else ()):
            if isinstance(v, dict) and v.get("machine_idle_before_pct", 100) < 85:
                busy[f"{sname}/{tname}"] = v["machine_idle_before_pct"]
    if busy:
        out += ["", "**Warning:** other work was running on the machine before these runs "
                f"(idle % before each): {busy}; their numbers are worse than on a quiet "
                "machine."]  # fmt: skip
    out += ["", "Settings of each target: "
            + "; ".join(f"`{k}`: {_cell(v)}" for k, v in doc.get("target_settings", {}).items())]
    out += ["", "## Targets", "",
            "| target | aodh-notifier (same run) | measured | verdict | first explanation |",
            "|---|---|---|---|---|"]  # fmt: skip
    for t in doc["targets"]:
        out.append(f"| {_cell(t['target'])} | {_cell(t['aodh'])} | {_cell(t['measured'])} | "
                   f"**{_cell(t['verdict'])}** | {_cell(t['why'])} |")  # fmt: skip
    out += ["", "## Numbers", "", "| scenario | target | measure | value |", "|---|---|---|---|"]
    for row in number_rows(doc, scenario_classes):
        out.append("| " + " | ".join(_cell(c) for c in row) + " |")
    out += ["", "## Scenario details", ""]
    for name, v in res.items():
        out += [f"### {name}", "", "```json", json.dumps(v, indent=1), "```", ""]
    out += history(BENCH / "results")
    out += ["## Notes", "", NOTES_BEGIN, old_notes or "(none yet)", NOTES_END, ""]
    path.write_text("\n".join(out))


def _get(doc: dict, *keys, default="-"):
    cur = doc
    for k in keys:
        if not isinstance(cur, dict) or k not in cur:
            return default
        cur = cur[k]
    return cur


def history(results_dir: Path) -> list[str]:
    """Key numbers of every full run kept in results/, oldest first (runs of the layout
    before targets, with scenarios ceiling/throughput, are read too)."""
    rows = []
    for f in sorted(results_dir.glob("*.json")):
        if f.stem.endswith(("-quick", "-partial")):
            continue
        try:
            doc = json.loads(f.read_text())
        except ValueError:
            continue
        sc = doc.get("scenarios", {})
        if "burst" in sc:
            b = sc["burst"]
            cells = [
                _get(b, "bare", "deliveries_per_s"),
                _get(b, "ceilo-rpc", "deliveries_per_s"),
                _get(b, "ceilo-listener", "deliveries_per_s"),
                _get(b, "aodh", "deliveries_per_s"),
                _get(b, "ceilo-rpc", "latency_p99_s"),
                _get(b, "ceilo-rpc", "cpu_ms_per_alarm"),
                _get(b, "aodh", "cpu_ms_per_alarm"),
                _get(sc, "slow", "ceilo-rpc", "total_s"),
                _get(sc, "dead-hosts", "ceilo-rpc", "healthy_p99_s"),
                _get(sc, "hung", "ceilo-rpc", "healthy_p99_s"),
            ]
        else:
            c, t = sc.get("ceiling", {}), sc.get("throughput", {})
            cells = [c.get("casts_per_s", "-"), t.get("deliveries_per_s", "-"), "-", "-",
                     t.get("latency_p99_s", "-"), t.get("cpu_ms_per_alarm", "-"), "-",
                     _get(sc, "slow", "total_s"), "-", _get(sc, "hung", "healthy_max_s")]
        rows.append("| " + " | ".join(str(x) for x in [
            doc.get("date", f.stem)[:16], doc.get("machine", {}).get("commit", "?"), *cells,
        ]) + " |")  # fmt: skip
    if not rows:
        return []
    return [
        "## History (full runs in bench/results/)",
        "",
        "Runs before the targets layout had one target (ceilo-notifier's RPC path); their "
        "\"hung\" column is the max, not the p99, of 20 healthy alarms behind 80 hung ones.",
        "",
        "| date | commit | bare /s | ceilo-rpc /s | ceilo-listener /s | aodh /s | ceilo-rpc p99 s "
        "| ceilo-rpc CPU ms | aodh CPU ms | slow s | dead-hosts p99 s | hung p99 s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
