"""Calibration: latency fits on measured calls, and profiles fitted on a run's recorded calls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolkit.cli import main
from toolkit.lm._emulated import load_profile
from toolkit.measure._calibration import calibrate, fit_latency


def test_fit_recovers_known_coefficients_and_reports_error() -> None:
    records = [(p, o, 0.3 + p / 100 + o / 20) for p, o in [(100, 10), (400, 30), (900, 20), (1600, 90), (2500, 40)]]
    fit = fit_latency(records)
    assert fit.overhead_seconds == pytest.approx(0.3) and fit.seconds_per_output_token == pytest.approx(0.05)
    assert fit.r2 == pytest.approx(1.0) and fit.mape < 1e-9
    with pytest.raises(ValueError, match="at least 3"):
        fit_latency(records[:2])


def test_calibrate_recovers_the_emulated_profile(tmp_path: Path) -> None:
    out = tmp_path / "profile.json"
    result = calibrate("emulated:hosted-api", docs=8, batch_sizes=(1, 2, 4), out=out)
    assert result["prompt_tokens_per_second"] == pytest.approx(10_000, rel=0.01)
    assert result["output_tokens_per_second"] == pytest.approx(80, rel=0.01)
    assert result["overhead_seconds"] == pytest.approx(0.5, abs=0.01)
    assert load_profile(str(out)).output_tokens_per_second == pytest.approx(80, rel=0.01)


def test_calibrate_times_the_prompt_it_is_given(capsys: pytest.CaptureFixture[str]) -> None:
    """Fewer types and no relationships: shorter prompts and answers than the default settings."""
    args = ["calibrate", "--lm", "emulated:hosted-api", "--corpus", "sample", "--docs", "4", "--batch-sizes", "1,2",
            "--json"]
    sizes = []
    for extra in ([], ["--types", "DISEASE", "--no-relationships"]):
        assert main(args + extra) == 0
        points = json.loads(capsys.readouterr().out)["profile"]["fit"]["points"]
        sizes.append((sum(p[0] for p in points), sum(p[1] for p in points)))
    assert sizes[1][0] < sizes[0][0] and sizes[1][1] < sizes[0][1]


def test_a_profile_is_fitted_on_the_cold_calls_a_real_run_recorded(tmp_path: Path) -> None:
    from toolkit.plan import resolve_profile

    def call(p: int, o: int, seconds: float, warm: bool = False) -> dict:
        return {"config": "A_warm" if warm else "B", "prompt_cache": warm, "batch_id": "b", "attempt": 1,
                "outcome": "ok", "documents": 1, "documents_ok": 1, "seconds": seconds, "tokens_in": p, "tokens_out": o}

    sizes = [(800, 40), (1200, 90), (2000, 60), (3100, 20), (4000, 150)]
    calls = [call(p, o, 2 + p * p * 2e-6 + o / 14) for p, o in sizes]
    calls.append(call(4000, 150, 1.0, warm=True))  # a warm-cache call would spoil the fit: left out
    path = tmp_path / "results.json"
    from toolkit.lm import Capabilities

    local = Capabilities(tokenizer="local/qwen", concurrency="1", layouts=("parallel", "packed"), prompt_cache=True,
                         long_prompts_cost_more=True).to_dict()
    path.write_text(json.dumps({"kind": "bench", "lm": "local", "model_id": "local/qwen@sha256:x", "calls": calls,
                                "capabilities": local}))
    profile = resolve_profile(str(path))
    assert profile.parallel_slots == 1 and profile.tokenizer == "local"
    assert profile.overhead_seconds == pytest.approx(2, rel=1e-3)
    assert profile.prompt_seconds_per_token_sq == pytest.approx(2e-6, rel=1e-3)
    assert profile.output_tokens_per_second == pytest.approx(14, rel=1e-3) and profile.fit["calls"] == 5


def test_quadratic_fit_recovers_the_cost_of_long_prompts() -> None:
    records = [(p, o, 2 + p / 150 + p * p * 2e-6 + o / 14)
               for p, o in [(800, 40), (1200, 90), (2000, 60), (3100, 20), (4000, 150)]]
    fit = fit_latency(records, quadratic=True)
    assert fit.seconds_per_prompt_token_sq == pytest.approx(2e-6, rel=1e-3) and fit.mape < 1e-6
    assert fit.predict(3100, 20) == pytest.approx(2 + 3100 / 150 + 3100 ** 2 * 2e-6 + 20 / 14)
    assert fit_latency(records).mape > 0.01  # the linear model cannot follow it
