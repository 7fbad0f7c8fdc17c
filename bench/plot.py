"""Plots for docs/performance.md from the JSON written by ``bench/queue.py --json``.

    python bench/plot.py RESULTS.json [--out docs]

Needs matplotlib (not a Norc dependency: ``pip install matplotlib``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

BACKENDS = ("sqlite", "postgresql", "mariadb")
COLORS = {"sqlite": "#4c72b0", "postgresql": "#55a868", "mariadb": "#c44e52"}
TARGETS = {"sqlite": (8000, "SQLite target, embedded"), "postgresql": (4000, "PG target, 2 proc")}


def throughput(data: dict[str, Any], out: Path) -> Path:
    """Processed/s per backend and executor mode, and CPU per instance by component."""
    runs = [r for r in data.get("throughput", []) if r["isolation"] == "process"]
    modes = sorted({r["mode"] for r in runs}, key=lambda m: (m != "embedded", m))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(BACKENDS)
    for i, backend in enumerate(BACKENDS):
        values = [
            next((r["rate"] for r in runs if r["backend"] == backend and r["mode"] == m), 0)
            for m in modes
        ]
        xs = [j + (i - 1) * width for j in range(len(modes))]
        ax1.bar(xs, values, width, label=backend, color=COLORS[backend])
    for backend, (target, label) in TARGETS.items():
        ax1.axhline(target, color=COLORS[backend], linestyle="--", linewidth=1)
        ax1.text(len(modes) - 0.5, target, label, ha="right", va="bottom", fontsize=8)
    ax1.set_xticks(range(len(modes)), modes)
    ax1.set_ylabel("no-op instances / s")
    ax1.set_yscale("log")
    ax1.set_title("Throughput (process isolation, concurrency 8)")
    ax1.legend(fontsize=8)

    # CPU per instance, 2 executor processes, process isolation.
    two = [r for r in runs if r["processes"] == 2]
    labels, executor, workers, db = [], [], [], []
    for backend in BACKENDS:
        r = next((x for x in two if x["backend"] == backend), None)
        if r is None:
            continue
        labels.append(backend)
        executor.append(r["norc_cpu_us"] - r["worker_cpu_us"])
        workers.append(r["worker_cpu_us"])
        db.append(r["db_cpu_us"])
    ax2.bar(labels, executor, label="executor processes (claim, record, slots)")
    ax2.bar(labels, workers, bottom=executor, label="worker processes")
    ax2.bar(
        labels,
        db,
        bottom=[a + b for a, b in zip(executor, workers, strict=True)],
        label="database server",
    )
    ax2.axhline(500, color="black", linestyle="--", linewidth=1)
    ax2.text(
        len(labels) - 0.5, 500, "budget for 4,000/s on 2 cores", ha="right", va="bottom", fontsize=8
    )
    ax2.set_ylabel("CPU µs per instance")
    ax2.set_title("Where the CPU goes (2 executor processes)")
    ax2.set_ylim(top=max(a + b + c for a, b, c in zip(executor, workers, db, strict=True)) * 1.35)
    ax2.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path = out / "performance-throughput.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def claims(data: dict[str, Any], out: Path) -> Path:
    """Claim latency against finished history and against a waiting backlog."""
    history = data.get("history", {})
    hist_rows = history.get("history", []) if isinstance(history, dict) else history
    backlog = history.get("backlog", []) if isinstance(history, dict) else []
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for backend in BACKENDS:
        rows = sorted((r for r in hist_rows if r["backend"] == backend), key=lambda r: r["history"])
        if rows:
            ax1.plot(
                [max(r["history"], 1) for r in rows],
                [r["claim_p50"] for r in rows],
                marker="o",
                label=backend,
                color=COLORS[backend],
            )
        rows = [r for r in backlog if r["backend"] == backend]
        if rows:
            xs = [0] + [r["size"] for r in rows]
            ys = [rows[0]["empty"]] + [r["analyzed"] for r in rows]
            ax2.plot(xs, ys, marker="o", label=backend, color=COLORS[backend])
    ax1.set_xscale("log")
    ax1.set_xlabel("finished instances in norc_instances (0 plotted at 1)")
    ax1.set_ylabel("claim p50, ms")
    ax1.set_title("Claim latency vs history: flat")
    ax1.set_ylim(bottom=0)
    ax1.legend(fontsize=8)
    ax2.set_xlabel("instances waiting in the queue")
    ax2.set_ylabel("claim p50, ms")
    ax2.set_title("Claim latency vs backlog (after ANALYZE)")
    ax2.set_ylim(bottom=0)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    path = out / "performance-claims.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("results")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs")
    args = p.parse_args()
    data = json.loads(Path(args.results).read_text())
    for path in (throughput(data, args.out), claims(data, args.out)):
        print(path)


if __name__ == "__main__":
    main()
