"""``chaos --mode batch-api``: the main job in batch-API mode, SIGKILLed at provider calls in a
subprocess and resumed until it ends, against the project's emulated provider over HTTP; the
store and the provider agree that every document is there once and nothing was paid twice.
``chaos --runner ray``: the main job on Ray, a worker SIGKILLed every few seconds; every document
once, none lost, none answered twice, and the JSON on stdout clean of Ray's reports of the deaths
(as for ``extract --runner ray --json``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from toolkit.jobs.batchapi._emulated import LineFaults


@pytest.mark.slow
def test_the_main_job_killed_at_provider_calls_ends_with_every_document_once(
        capsys: pytest.CaptureFixture[str]) -> None:
    from toolkit.cli import main

    code = main(["chaos", "--mode", "batch-api", "--docs", "80", "--kill-after", "3", "--kills", "2", "--seed", "1",
                 "--max-docs", "4", "--json"])
    figures = json.loads(capsys.readouterr().out)
    assert code == 0 and figures["ok"] and figures["kills"] == 2 and figures["sessions"] == 3
    assert (figures["in_store"], figures["extracted"], figures["lost"]) == (80, 80, 0)
    assert figures["batch_lines_recorded_twice"] == 0 and figures["batch_line_docs_per_document"] <= 1.0
    assert 0 < figures["batch_answers_per_document"] <= figures["batch_line_docs_per_document"]
    assert figures["provider_batches_per_file_max"] == 1 and figures["provider_docs_sent_twice"] == 0
    assert figures["sync_calls"] > 0  # failed, cut and unreadable lines went through the fallback


@pytest.mark.slow
def test_a_kill_right_after_a_create_adopts_the_batch(tmp_path) -> None:  # noqa: ANN001
    from toolkit.jobs.batchapi import run_batch_chaos

    figures = run_batch_chaos(docs=30, kill_after=2, kills=1, seed=0, faults=LineFaults(), workdir=tmp_path)
    assert figures["kills_after"] == {"create": 1}  # the batch accepted, its id never stored
    assert figures["ok"] and figures["provider_batches"] == 1 and figures["extracted"] == 30


def test_the_chaos_command_refuses_a_kill_schedule_it_cannot_run(capsys: pytest.CaptureFixture[str]) -> None:
    from toolkit.cli import main

    assert main(["chaos", "--mode", "batch-api", "--kill-after", "0"]) == 2
    assert "--kill-after" in capsys.readouterr().err
    assert main(["chaos", "--kill-worker-every", "3"]) == 2  # without --runner ray
    assert "--runner ray" in capsys.readouterr().err
    for bad in (["--kill-worker-every", "0"], ["--mode", "batch-api"], ["--docs", "0"]):
        assert main(["chaos", "--runner", "ray", *bad]) == 2
        assert capsys.readouterr().err.count("\n") == 1  # one line


# ------------------------------------------------------------------------------------------ Ray
def test_what_is_written_to_stdout_during_a_ray_run_goes_to_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    from toolkit.jobs.scaleout import ray_output_to_stderr

    print("before", flush=True)
    with ray_output_to_stderr():
        print("printed")  # where Ray's driver prints a dead worker's report
        os.write(1, b"written\n")
        subprocess.run([sys.executable, "-c", "print('a child')"], check=True)  # as Ray's processes inherit fd 1
    print("after", flush=True)
    out, err = capfd.readouterr()
    assert out == "before\nafter\n" and all(text in err for text in ("printed", "written", "a child"))


@pytest.mark.slow
def test_ray_workers_killed_every_few_seconds_leave_every_document_once_and_clean_json(
        capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (extra 'ray')")
    from toolkit.cli import main

    code = main(["chaos", "--runner", "ray", "--kill-worker-every", "2", "--docs", "500", "--json"])
    figures = json.loads(capsys.readouterr().out)  # one JSON object, nothing of Ray's in it
    assert code == 0 and figures["ok"] and figures["kills"] >= 1 and figures["workers_replaced"] >= 1, figures
    assert (figures["rows"], figures["distinct_rows"], figures["extracted"], figures["lost"]) == (500, 500, 500, 0)
    assert figures["answers_per_document"] == 1.0 and figures["failed"] == 0


@pytest.mark.slow
def test_extract_on_ray_with_a_worker_killed_prints_clean_json(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (extra 'ray')")
    from toolkit.cli import main
    from toolkit.corpora import synthetic_documents
    from toolkit.jobs.scaleout import kill_workers_every

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": d.id, "text": d.text}) + "\n" for d in synthetic_documents(200)))
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=lambda: killed.extend(kill_workers_every(1.5, stop, run_id="x")))
    killer.start()
    try:
        code = main(["extract", "--corpus", str(corpus), "--lm", "emulated:hosted-api@100", "--runner", "ray",
                     "--max-docs", "5", "--db", f"sqlite:///{tmp_path / 'x.db'}", "--run", "x", "--show", "0",
                     "--json"])
    finally:
        stop.set()
        killer.join()
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert code == 0 and killed and (summary["extracted"], summary["lost"]) == (200, 0)
