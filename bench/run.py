"""Benchmark of ceilo-notifier against aodh-notifier and a bare oslo.messaging consumer.

    .venv/bin/python bench/run.py [--target NAME ...] [--scenario NAME ...] [--quick]

Targets are the modules of bench/targets/, scenarios those of bench/scenarios/
(`--list` shows both). See bench/README.md for what each one measures.
Results: tables on stdout, bench/results/<date>.json and, after a full run,
bench/RESULTS.md (its hand-written notes section is kept across runs).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import report  # noqa: E402
from common import BENCH, CHILD_ENV, ROOT, log, parse_overrides  # noqa: E402
from scenarios.broker_restart import VARIANTS  # noqa: E402


def export_rev(rev: str, dest: Path) -> None:
    """Put ceilo_notifier as of rev first on the children's PYTHONPATH."""
    dest.mkdir()
    tar = subprocess.run(
        ["git", "archive", "--format=tar", rev, "ceilo_notifier"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout  # fmt: skip
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(dest, filter="data")
    CHILD_ENV["PYTHONPATH"] = os.pathsep.join(
        x for x in (str(dest), os.environ.get("PYTHONPATH")) if x
    )


def parse_args(argv, all_targets: dict, all_scenarios: dict) -> argparse.Namespace:
    names = {}
    for name, cls in all_scenarios.items():
        names[name] = name
        for alias in cls.aliases:
            names[alias] = name
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", action="append", choices=list(all_targets),
                        help="measure only these (repeatable); default: each scenario's own "
                        "targets")  # fmt: skip
    parser.add_argument("--scenario", action="append", choices=list(names),
                        help="run only these (repeatable); default: all")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="smaller counts, for trying things")
    parser.add_argument("--list", action="store_true", help="list targets and scenarios")
    parser.add_argument("--size", action="append", metavar="SCENARIO.NAME=VALUE",
                        help="a scenario's size, e.g. --size hung.hung=2000 (see --list)")
    parser.add_argument("--set", action="append", metavar="SECTION.OPTION=VALUE",
                        help="extra ceilo-notifier option for every run; {dir} in the value is "
                        "the run's directory")  # fmt: skip
    parser.add_argument("--aodh-set", action="append", metavar="SECTION.OPTION=VALUE",
                        help="extra aodh-notifier option for every run")  # fmt: skip
    parser.add_argument("--aodh-version", default=None,
                        help="aodh release installed into bench/.aodh-venv (default 23.0.0)")
    parser.add_argument("--sender-threads", type=int, default=4,
                        help="sending threads of the burst sender")  # fmt: skip
    parser.add_argument("--restart-variants", nargs="+", choices=sorted(VARIANTS),
                        help="queue settings broker-restart tries; default: default quorum")
    parser.add_argument("--rabbit-host",
                        default=os.environ.get("CEILO_BENCH_RABBIT_HOST", "127.0.0.1"))  # fmt: skip
    parser.add_argument("--rabbit-port", type=int,
                        default=int(os.environ.get("CEILO_BENCH_RABBIT_PORT", "5672")))  # fmt: skip
    parser.add_argument("--no-write", action="store_true",
                        help="print only; write neither results/*.json nor RESULTS.md")  # fmt: skip
    parser.add_argument("--repeat", type=int,
                        help="rounds of burst, the median run of each target reported "
                        "(default 3, 1 with --quick)")  # fmt: skip
    parser.add_argument("--json", metavar="PATH",
                        help="also write the results to PATH (with --no-write: only there)")
    parser.add_argument("--results-md", metavar="PATH", default=str(BENCH / "RESULTS.md"),
                        help="the report a full run (or --report) refreshes; default "
                        "bench/RESULTS.md")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--report", metavar="RESULTS_JSON",
                        help="run nothing: rewrite RESULTS.md from this results file")  # fmt: skip
    parser.add_argument("--wait-quiet", type=float, default=10.0, metavar="SECONDS",
                        help="before each measured run, wait up to this long for the machine "
                        "to be >= 85%% idle (default 10)")  # fmt: skip
    parser.add_argument("--rev", help="benchmark ceilo_notifier as of this git revision "
                        "(exported to a temporary directory) instead of the work tree")  # fmt: skip
    args = parser.parse_args(argv)
    args.scenarios = [names[s] for s in args.scenario] if args.scenario else None
    args.sizes = {}
    for item in args.size or []:
        key, sep, value = item.partition("=")
        sname, dot, size = key.partition(".")
        if not sep or not dot or sname not in all_scenarios or size not in \
                all_scenarios[sname].sizes:  # fmt: skip
            raise SystemExit(f"--size wants SCENARIO.NAME=VALUE of --list, got {item!r}")
        args.sizes[key] = value
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    return args


def list_all(all_targets: dict, all_scenarios: dict) -> None:
    print("targets:")
    for name, cls in all_targets.items():
        print(f"  {name:16} {cls.title} (fed by {cls.feed_mode})")
    print("scenarios:")
    for name, cls in all_scenarios.items():
        aliases = f" (also: {', '.join(cls.aliases)})" if cls.aliases else ""
        if cls.default_targets is None:
            targets = "every target" if not cls.needs_delivery else "every delivering target"
        else:
            targets = ", ".join(cls.default_targets) or "none"
        print(f"  {name:16} {cls.title}{aliases}; targets: {targets}")
        sizes = ", ".join(f"{k}={full} (quick {quick})" for k, (full, quick) in cls.sizes.items())
        if sizes:
            print(f"  {'':16} sizes: {sizes}")


def targets_for(cls, args, all_targets: dict) -> list:
    if args.target:
        chosen = [all_targets[n] for n in all_targets if n in args.target]
    elif cls.default_targets is not None:
        chosen = [all_targets[n] for n in cls.default_targets if n in all_targets]
    else:
        chosen = list(all_targets.values())
    return [t for t in chosen if cls.applies_to(t)]


def main(argv=None) -> int:
    all_targets = harness.targets()
    all_scenarios = harness.scenarios()
    args = parse_args(argv, all_targets, all_scenarios)
    if args.list:
        list_all(all_targets, all_scenarios)
        return 0
    if args.report:
        doc = json.loads(Path(args.report).read_text())
        doc["targets"] = report.target_rows(doc, all_scenarios)
        report.write_results_md(Path(args.results_md), doc, Path(args.report).name,
                                all_scenarios)  # fmt: skip
        print(f"refreshed {args.results_md}")
        return 0
    selected = [s for s in all_scenarios if not args.scenarios or s in args.scenarios]

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    began = time.monotonic()
    date = datetime.datetime.now(datetime.timezone.utc)
    workdir = Path(tempfile.mkdtemp(prefix="ceilo-bench-"))
    results: dict[str, dict] = {}
    used: dict = {}
    failed = False
    try:
        with contextlib.ExitStack() as stack:
            bench = harness.Bench(args, workdir, stack)
            if args.rev:
                export_rev(args.rev, workdir / "src")
            for name in selected:
                scenario = all_scenarios[name](bench)
                classes = targets_for(scenario, args, all_targets)
                for cls in classes:
                    used[cls.name] = cls
                log(f"scenario {name}: {', '.join(c.name for c in classes) or 'no target'}")
                t0 = time.monotonic()
                results[name] = scenario.run(classes)
                log(f"scenario {name} done in {time.monotonic() - t0:.0f} s")
            settings = {}
            for tname, cls in used.items():
                if bench.prepare(cls) is None:
                    with contextlib.suppress(Exception):
                        settings[tname] = cls(bench, workdir).settings()
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        return 130
    finally:
        if args.keep:
            log(f"temporary files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    aodh = all_targets.get("aodh")
    given = argv if argv is not None else sys.argv[1:]
    doc = {
        "date": date.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": " ".join([".venv/bin/python bench/run.py", *given]),
        "quick": args.quick,
        "wall_s": round(time.monotonic() - began, 1),
        "machine": report.machine_info(args, getattr(aodh, "version", None)),
        "overrides": parse_overrides(args.set or []),
        "aodh_overrides": parse_overrides(args.aodh_set or []),
        "sizes": {name: {k: bench.size(all_scenarios[name], k)
                         for k in all_scenarios[name].sizes} for name in selected},
        "target_titles": {name: cls.title for name, cls in used.items()},
        "target_settings": settings,
        "scenarios": results,
    }
    doc["targets"] = report.target_rows(doc, all_scenarios)
    for result in results.values():
        values = result.values() if isinstance(result, dict) else []
        if "error" in result or any(isinstance(v, dict) and "error" in v for v in values):
            failed = True
    report.print_tables(doc, all_scenarios)
    print(f"\nwall time {doc['wall_s']} s")
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.json}")
    if not args.no_write:
        full = (not args.quick and selected == list(all_scenarios) and not args.target
                and not args.sizes)  # fmt: skip
        suffix = "" if full else ("-quick" if args.quick else "-partial")
        out_dir = BENCH / "results"
        out_dir.mkdir(exist_ok=True)
        json_name = date.strftime("%Y-%m-%dT%H%M%SZ") + suffix + ".json"
        (out_dir / json_name).write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote bench/results/{json_name}")
        if full:
            report.write_results_md(Path(args.results_md), doc, json_name, all_scenarios)
            print(f"refreshed {args.results_md}")
        else:
            print("bench/RESULTS.md not refreshed (only a full run without --quick does that)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
