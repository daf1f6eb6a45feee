"""One table of every benchmark goal: the newest measured value per (goal, context), against its goal.

Reads ``bench/results.jsonl``, which the bench scripts append to (see ``bench/_goals.py``); it measures nothing
itself. A goal no script has measured yet is listed as "not measured" with the script that measures it. The ``load``
column is the 1-minute load average when the value was taken: on this project's 2-core machines a load far above 2
means the ratio was taken on a shared machine and may be off by 10-30%.

Usage:
    .venv/bin/python bench/summary.py [--results bench/results.jsonl] [--all]   (--all: every row, not the newest)
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _goals import GOALS, RESULTS  # noqa: E402


def read_rows(path: pathlib.Path) -> list[dict]:
    """The recorded rows, oldest first; a line that is not a JSON object (a torn write) is skipped and counted."""
    rows, torn = [], 0
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                torn += 1
                continue
            if isinstance(row, dict) and row.get("goal") in GOALS:
                rows.append(row)
    if torn:
        print(f"({torn} unreadable line(s) in {path} skipped)")
    return rows


def summary_table(rows: list[dict], newest_only: bool = True) -> str:
    """The markdown table: goal, context, measured value, goal, verdict, date, CPU load."""
    if newest_only:
        newest: dict[tuple[str, str], dict] = {}
        for row in rows:
            newest[(row["goal"], row.get("context", ""))] = row
        rows = list(newest.values())
    order = list(GOALS)
    rows = sorted(rows, key=lambda r: (order.index(r["goal"]), r.get("context", "")))
    lines = ["| goal | context | measured | target | verdict | when (UTC) | load |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        g = GOALS[r["goal"]]
        verdict = "holds" if r["holds"] else "**missed**"
        lines.append(f"| {g.what} (issue {g.issue}) | {r.get('context', '')} | {r['value']:.3g} | {g.op} {g.target:g} "
                     f"| {verdict} | {r['when'][:16].replace('T', ' ')} | {r.get('load1', '')} |")
    measured = {r["goal"] for r in rows}
    for goal_id, g in GOALS.items():
        if goal_id not in measured:
            lines.append(f"| {g.what} (issue {g.issue}) | | not measured | {g.op} {g.target:g} | run bench/{g.script} "
                         "| | |")
    held = sum(r["holds"] for r in rows)
    lines.append("")
    lines.append(f"{held} of {len(rows)} measured goals hold; {len(GOALS) - len(measured)} goal(s) not measured.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("--all", action="store_true", help="every recorded row, not only the newest per goal and context")
    args = p.parse_args(argv)
    print(summary_table(read_rows(pathlib.Path(args.results)), newest_only=not args.all))
    return 0


if __name__ == "__main__":
    sys.exit(main())
