"""Study tables as people read them: markdown (mean [95 % CI] (used/excluded) per cell) and CSV files.

Shared by ``selfx replay`` and ``selfx study``: one report shape, ``{"faithfulness": {config: row},
"agreement": {config: row}}`` with the aggregate keys of :func:`experiments.measure.aggregate`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metrics.agreement import AGREEMENT_METRICS
from metrics.faithfulness import FAITHFULNESS_METRICS


def markdown_tables(report: dict[str, Any]) -> str:
    """The report as markdown: mean [95 % CI] (n used / excluded) per cell."""
    # a live study reports its backend; a replay does not
    heading = (f"Live study (Huang et al. 2023 protocol): {report['model']}, {report['n_sentences']} sentences"
               if "backend" in report else f"Replay of Huang et al. (2023): {report['model']}")
    lines = [f"# {heading}, {report['mode']} mode", ""]
    for title, table, metrics in (("Faithfulness", report["faithfulness"], FAITHFULNESS_METRICS),
                                  ("Agreement", report["agreement"], AGREEMENT_METRICS)):
        lines += [f"## {title}", "", "| configuration | " + " | ".join(metrics) + " |",
                  "|---|" + "---|" * len(metrics)]
        for name, row in table.items():
            lines.append(f"| {name} | " + " | ".join(_cell(row, m) for m in metrics) + " |")
        lines.append("")
    lines.append("Cells: mean [95 % bootstrap CI] (sentences used, excluded as not recorded or failed); "
                 "the `random` rows are the random-explanation baseline.")
    return "\n".join(lines) + "\n"


def _cell(row: dict[str, Any], metric: str) -> str:
    if row.get("not_recorded"):
        return "not recorded"
    if metric not in row or row[metric] is None:
        return "n/a" if metric not in row else f"n/a (0/{row.get(f'{metric}_excluded', 0)})"
    return (f"{row[metric]:.3f} [{row[f'{metric}_ci_low']:.3f}, {row[f'{metric}_ci_high']:.3f}] "
            f"({row[f'{metric}_n']}/{row[f'{metric}_excluded']})")


def write_outputs(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """CSV (one row per configuration and metric) and markdown files."""
    import csv

    out_dir.mkdir(parents=True, exist_ok=True)
    # a live study's model name may be a path or "provider/model"
    model = str(report["model"]).replace("/", "_").replace("\\", "_")
    stem = f"{'study' if 'backend' in report else 'replay'}_{model}_{report['mode']}"
    md = out_dir / f"{stem}.md"
    md.write_text(markdown_tables(report), encoding="utf-8")
    path = out_dir / f"{stem}.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["table", "configuration", "metric", "mean", "ci_low", "ci_high", "n", "excluded"])
        for table in ("faithfulness", "agreement"):
            for name, row in report[table].items():
                for metric in [k for k in row if f"{k}_ci_low" in row]:
                    writer.writerow([table, name, metric, row[metric], row[f"{metric}_ci_low"],
                                     row[f"{metric}_ci_high"], row[f"{metric}_n"], row[f"{metric}_excluded"]])
    return [md, path]
