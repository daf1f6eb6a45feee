"""The benchmark goal table: what is recorded, what the summary shows, and refusals of unknown goals."""

import json
import pathlib
import sys

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import _goals  # noqa: E402
import summary  # noqa: E402


@pytest.fixture
def results(tmp_path, monkeypatch):
    path = tmp_path / "results.jsonl"
    monkeypatch.setattr(_goals, "RESULTS", path)
    monkeypatch.delenv("QROBUST_BENCH_NO_RECORD", raising=False)
    return path


def test_record_appends_and_summary_keeps_the_newest(results):
    assert _goals.record("pgd_vs_art", 2.0, "float").endswith("MISSED")
    assert _goals.record("pgd_vs_art", 3.5, "float").endswith("holds")
    _goals.record("jr_fd_vs_plain", 2.3, "int4")
    with open(results, "a") as f:
        f.write('{"goal": "pgd_vs_art", "value": 9\n')  # a torn line
    rows = summary.read_rows(results)
    assert [r["value"] for r in rows] == [2.0, 3.5, 2.3]
    table = summary.summary_table(rows)
    lines = table.splitlines()
    art = [line for line in lines if "ART img/s" in line]
    assert len(art) == 1 and "| 3.5 |" in art[0] and "holds" in art[0]
    fd = [line for line in lines if "finite difference: step time" in line]
    assert len(fd) == 1 and "**missed**" in fd[0]
    assert sum(line.startswith("|") and "not measured" in line for line in lines) == len(_goals.GOALS) - 2
    assert lines[-1] == f"1 of 2 measured goals hold; {len(_goals.GOALS) - 2} goal(s) not measured."
    assert len(summary.summary_table(rows, newest_only=False).splitlines()) == len(lines) + 1


def test_no_record_flag_measures_without_writing(results, monkeypatch):
    monkeypatch.setenv("QROBUST_BENCH_NO_RECORD", "0")  # restored after the test, whatever the flag sets
    assert _goals.no_record_flag(["--n", "4", "--no-record"]) == ["--n", "4"]
    _goals.record("pgd_of_bound", 0.9, "float")
    assert not results.exists()


def test_unknown_goal_is_refused(results):
    with pytest.raises(KeyError, match="goal must be one of"):
        _goals.record("pgd_speed", 1.0)


def test_every_goal_names_an_existing_script():
    for goal_id, goal in _goals.GOALS.items():
        assert (BENCH / goal.script).exists(), goal_id
        assert goal.op in (">=", "<=")
        source = (BENCH / goal.script).read_text()
        assert f"'{goal_id}'" in source or f'"{goal_id}"' in source, f"{goal.script} never records {goal_id}"
