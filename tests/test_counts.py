"""Counts: one value type that adds up, and a new counter is a change to one file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.core import FIELDS, Counts

REPO = Path(__file__).resolve().parents[1]


def test_counts_add_up_and_derive_their_rates() -> None:
    a, b = Counts(calls=1, entities=3, leaks=1), Counts(calls=2, entities=1, ungrounded=1)
    total = a + b
    assert (total.calls, total.entities, total.leaks, total.ungrounded) == (3, 4, 1, 1)
    assert total.grounded_rate == pytest.approx(4 / 6) and Counts().grounded_rate is None
    assert Counts.total([a, b, a]) == total + a and Counts.total([]) == Counts()
    assert list(total.to_dict()) == list(FIELDS)


PROBE = '''
import json, sqlite3, sys
import toolkit
from toolkit.measure import evaluate
corpus, gold, db = sys.argv[1:4]
result = toolkit.run(corpus, lm="emulated:hosted-api", store=f"sqlite:///{db}", run_name="probe", progress=False)
columns = [d[0] for d in sqlite3.connect(db).execute("SELECT * FROM batchx_attempts").description]
frame = result.attempts.columns
configs = evaluate(gold, lm="emulated:hosted-api", limit=2, max_docs=(2,)).to_json()["configs"]
print(json.dumps({"summary": result.summary.to_json(), "columns": columns, "frame": frame, "configs": configs}))
'''


@pytest.mark.slow
def test_a_new_counter_is_a_one_file_change(tmp_path: Path) -> None:
    """A field added to Counts, in toolkit/core/_counts.py alone, becomes a column of the attempts table
    and frame, a key of the run summary and of every evaluation configuration."""
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "toolkit", copy / "toolkit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "data", copy / "data")
    counts = copy / "toolkit" / "core" / "_counts.py"
    source = counts.read_text()
    anchor = "    loops_ended: int = 0"
    assert anchor in source
    counts.write_text(source.replace(anchor, anchor + "\n    probe_counter: int = 0  # added by the test", 1))
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": f"Asthma and malaria, case {i}."}) + "\n"
                              for i in range(6)))
    gold = tmp_path / "g.pubtator"
    gold.write_text("1|t|Asthma in children.\n1|a|Wheeze.\n1\t0\t6\tAsthma\tDisease\tD1\n\n"
                    "2|t|Malaria in travellers.\n2|a|Fever.\n2\t0\t7\tMalaria\tDisease\tD2\n\n")
    out = subprocess.run([sys.executable, "-c", PROBE, str(corpus), str(gold), str(tmp_path / "p.db")],
                         cwd=copy, env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin",
                                        "HOME": str(Path.home())},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["summary"]["probe_counter"] == 0 and seen["summary"]["extracted"] == 6
    assert "probe_counter" in seen["columns"] and "probe_counter" in seen["frame"]
    assert all(c["probe_counter"] == 0 for c in seen["configs"]) and len(seen["configs"]) == 2
