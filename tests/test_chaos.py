"""``chaos --mode batch-api``: the main job in batch-API mode, SIGKILLed at provider calls in a
subprocess and resumed until it ends, against the project's emulated provider over HTTP; the
store and the provider agree that every document is there once and nothing was paid twice."""

from __future__ import annotations

import json

import pytest

from toolkit.batchapi.emulated import LineFaults


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
    from toolkit.batchapi.chaos import run_batch_chaos

    figures = run_batch_chaos(docs=30, kill_after=2, kills=1, seed=0, faults=LineFaults(), workdir=tmp_path)
    assert figures["kills_after"] == {"create": 1}  # the batch accepted, its id never stored
    assert figures["ok"] and figures["provider_batches"] == 1 and figures["extracted"] == 30


def test_the_chaos_command_refuses_a_kill_schedule_it_cannot_run(capsys: pytest.CaptureFixture[str]) -> None:
    from toolkit.cli import main

    assert main(["chaos", "--mode", "batch-api", "--kill-after", "0"]) == 2
    assert "--kill-after" in capsys.readouterr().err
