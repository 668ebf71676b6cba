"""Secrets never leave the process: keys, bearer tokens and URL credentials are redacted."""

from __future__ import annotations

import pytest

from toolkit.redact import MARK, redact


@pytest.mark.parametrize("text, secret", [
    ("Incorrect API key provided: sk-proj-AbCdEf0123456789xyz", "sk-proj-AbCdEf0123456789xyz"),
    ("headers: {'Authorization': 'Bearer abc.def-ghi_123456'}", "abc.def-ghi_123456"),
    ("GET https://bob:hunter2pass@api.example.com/v1 failed", "hunter2pass"),
    ("failed to connect to bob:hunter2pass@127.0.0.1:8080", "hunter2pass"),
    ("iris://me:s3cr3t!@db.example:1972/USER unreachable", "s3cr3t!"),
    ('{"api_key": "0123456789abcdef", "model": "x"}', "0123456789abcdef"),
    ("?key=AIzaSyA1234567890abcdefghijklmno&x=1", "AIzaSyA1234567890abcdefghijklmno"),
    ("x-api-key: anthropic-secret-value", "anthropic-secret-value"),
    ("token ghp_0123456789abcdefghijABCDEFGHIJ leaked", "ghp_0123456789abcdefghijABCDEFGHIJ"),
])
def test_secret_shapes_are_redacted(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out and MARK in out


def test_values_of_secret_environment_variables_are_redacted_whatever_their_shape(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_PROVIDER_TOKEN", "plain-looking-value-42")
    monkeypatch.setenv("IRIS_PASSWORD", "SYS")  # too short to redact safely: words would vanish
    assert redact("echo: plain-looking-value-42!") == f"echo: {MARK}!"
    assert redact("SYSTEM ready") == "SYSTEM ready"


@pytest.mark.parametrize("text", ["time 12:30 at the clinic", "mail bob@example.org", "error: foo@bar.com",
                                  "429 Too Many Requests", "a:b", None, ""])
def test_ordinary_text_is_left_alone(text: str | None) -> None:
    assert redact(text) == text
