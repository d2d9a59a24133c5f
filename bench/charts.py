"""Charts of the newest full benchmark run, for the documentation.

    python bench/charts.py OUTDIR [RESULTS_DIR]

reads the newest full run in RESULTS_DIR (default bench/results: a
``<date>.json`` that is not ``-partial``, not ``--quick``, with the ``burst``
scenario) and writes to OUTDIR one PNG per measure of the burst scenario
(throughput, CPU per alarm, p99 latency, peak RSS) for ceilo-notifier,
aodh-notifier and the bare consumers, and ``summary.rst``: the charts, a
table of the same numbers and the run's machine. The documentation's build
runs this (doc/source/_exts/benchcharts.py), so its charts are never older
than the results. Needs matplotlib, nothing of the benchmark itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SCENARIO = "burst"

# (key in the burst results, file name, title, axis label, format of a value)
MEASURES = [
    ("deliveries_per_s", "throughput", "Throughput (more is better)", "deliveries/s", "{:.0f}"),
    ("cpu_ms_per_alarm", "cpu", "CPU per alarm (less is better)", "ms of CPU per alarm", "{:.2f}"),
    ("latency_p99_s", "p99", "p99 latency in the burst (less is better)", "seconds", "{:.2f}"),
    ("rss_tree_mb_peak", "rss", "Peak memory, whole service (less is better)", "MB RSS", "{:.0f}"),
]
# The targets in the order drawn, and their colours: ceilo-notifier, aodh, the others.
ORDER = ["ceilo-rpc", "ceilo-listener", "aodh", "stub", "bare", "bare-listener"]
COLOURS = {"ceilo-rpc": "#1f77b4", "ceilo-listener": "#1f77b4", "aodh": "#d62728"}
OTHER = "#9e9e9e"


def newest_full_run(results: Path = RESULTS) -> tuple[Path, dict]:
    """The newest full run with the burst scenario: (its file, its data)."""
    for path in sorted(results.glob("*.json"), reverse=True):
        if path.stem.endswith("-partial"):
            continue
        data = json.loads(path.read_text())
        if not data.get("quick") and SCENARIO in data.get("scenarios", {}):
            return path, data
    raise LookupError(f"no full run with the {SCENARIO!r} scenario in {results}")


def _targets(burst: dict) -> list[str]:
    known = [t for t in ORDER if t in burst]
    return known + sorted(t for t in burst if t not in ORDER and isinstance(burst[t], dict))


def draw(data: dict, outdir: Path) -> list[Path]:
    """One PNG per measure in outdir; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    burst = data["scenarios"][SCENARIO]
    titles = data.get("target_titles", {})
    targets = _targets(burst)
    labels = [titles.get(t, t) for t in targets]
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for key, name, title, unit, fmt in MEASURES:
        values = [float(burst[t].get(key) or 0) for t in targets]
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(targets) + 1.2), dpi=100)
        colours = [COLOURS.get(t, OTHER) for t in targets]
        bars = ax.barh(range(len(targets)), values, color=colours)
        ends = list(values)
        if key == "deliveries_per_s":
            # The spread of the rounds: each target is measured several times.
            lo = [v - min(burst[t].get("deliveries_per_s_of_each_run") or [v])
                  for t, v in zip(targets, values, strict=True)]
            hi = [max(burst[t].get("deliveries_per_s_of_each_run") or [v]) - v
                  for t, v in zip(targets, values, strict=True)]
            ax.errorbar(values, range(len(targets)), xerr=[lo, hi], fmt="none",
                        ecolor="black", capsize=3, linewidth=1)
            ends = [v + h for v, h in zip(values, hi, strict=True)]
        for bar, value, end in zip(bars, values, ends, strict=True):
            ax.annotate(fmt.format(value), (end, bar.get_y() + bar.get_height() / 2),
                        xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)
        ax.set_yticks(range(len(targets)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(unit)
        ax.set_title(title, fontsize=10)
        ax.margins(x=0.15)
        fig.tight_layout()
        path = outdir / f"{name}.png"
        fig.savefig(path, metadata={"Software": None})
        plt.close(fig)
        written.append(path)
    return written


def summary(path: Path, data: dict, images: list[Path], image_prefix: str) -> str:
    """reStructuredText: the charts, the numbers and the run's machine."""
    burst = data["scenarios"][SCENARIO]
    titles = data.get("target_titles", {})
    sizes = data.get("sizes", {}).get(SCENARIO, {})
    m = data.get("machine", {})
    lines = [
        f"The newest full run, ``bench/results/{path.name}`` ({data.get('date', '?')}, "
        f"commit {m.get('commit', '?')}): {m.get('cores', '?')} cores ({m.get('cpu', '?')}), "
        f"{m.get('ram', '?')}, Python {m.get('python', '?')}, oslo.messaging "
        f"{m.get('oslo.messaging', '?')}, RabbitMQ {m.get('rabbitmq', '?')}, aodh "
        f"{m.get('aodh', '?')}. Scenario ``{SCENARIO}``: {sizes.get('alarms', '?')} alarms "
        "cast as fast as the sender can, each to the local sink; throughput is the median "
        "of the rounds, the whiskers their spread.",
        "",
    ]
    for image, (_, _, title, _, _) in zip(images, MEASURES, strict=True):
        lines += [f".. image:: {image_prefix}/{image.name}", f"   :alt: {title}", ""]
    header = ["target"] + [m_[3] for m_ in MEASURES]
    rows = []
    for t in _targets(burst):
        rows.append([titles.get(t, t)] + [
            fmt.format(float(burst[t].get(key) or 0)) for key, _, _, _, fmt in MEASURES
        ])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    rule = "  ".join("=" * w for w in widths)
    lines += [".. table:: The burst scenario, as charted", "", "   " + rule,
              "   " + "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
              "   " + rule]
    lines += ["   " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines += ["   " + rule, ""]
    return "\n".join(line.rstrip() for line in lines)


def generate(outdir: Path, results: Path = RESULTS, image_prefix: str | None = None) -> Path:
    """Charts and summary.rst in outdir, from the newest full run in results."""
    path, data = newest_full_run(results)
    images = draw(data, outdir)
    text = summary(path, data, images, image_prefix or str(outdir))
    out = outdir / "summary.rst"
    if not out.exists() or out.read_text() != text:
        out.write_text(text)
    return out


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or len(argv) > 2:
        print(__doc__, file=sys.stderr)
        return 2
    results = Path(argv[1]) if len(argv) > 1 else RESULTS
    print(generate(Path(argv[0]), results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
