from __future__ import annotations

import json
import subprocess
import sys

import pytest

from toolkit.cli import main


def run_json(capsys, *args: str) -> dict:
    assert main(["pack", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_pack_sample_reports_required_keys(capsys):
    report = run_json(capsys, "--corpus", "sample")
    for key in ("documents", "batches", "oversize", "mean_docs_per_batch", "fill_ratio", "count_seconds",
                "pack_seconds"):
        assert key in report
    assert report["documents"] == 12
    assert report["batches"] == 2  # 10 + 2 under max_docs=10


def test_pack_synthetic(capsys):
    report = run_json(capsys, "--synthetic", "500", "--strategy", "ffd", "--budget", "2048")
    assert report["documents"] == 500
    assert report["tokens_per_second"] > 0


def test_ffd_fills_at_least_as_well_as_fifo_on_ncbi(capsys, ncbi_train):
    fifo = run_json(capsys, "--corpus", str(ncbi_train), "--strategy", "fifo", "--budget", "2048")
    ffd = run_json(capsys, "--corpus", str(ncbi_train), "--strategy", "ffd", "--budget", "2048")
    assert fifo["documents"] == ffd["documents"] == 592 and fifo["duplicates_skipped"] == 1
    assert ffd["fill_ratio"] >= fifo["fill_ratio"]
    assert ffd["batches"] < fifo["batches"]


@pytest.mark.parametrize("args", [["--corpus", "no-such-corpus"], ["--synthetic", "5", "--budget", "100"]])
def test_bad_input_exits_2_with_message(capsys, args):
    assert main(["pack", *args]) == 2
    assert "error:" in capsys.readouterr().err


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "toolkit", "pack", "--corpus", "sample"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "fill_ratio" in out.stdout
