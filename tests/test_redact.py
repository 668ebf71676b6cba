"""Secrets never leave the process: keys, bearer tokens and URL credentials are redacted."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given, settings, strategies as st

from toolkit.core._redact import MARK, redact, split_userinfo


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


# ------------------------------------------------------------------- URL user parts (issue 24, item 9)
def parts(secret: str, size: int = 3) -> set[str]:
    """Every piece of ``secret`` of ``size`` characters: none may be left in a text."""
    return {secret[i:i + size] for i in range(len(secret) - size + 1)}


def leaked(secret: str, text: str, background: str) -> set[str]:
    """Pieces of ``secret`` in ``text`` that are not there by chance (in ``background``: the same
    text made with another secret)."""
    return {p for p in parts(secret) if p in text and p not in background}


@pytest.mark.parametrize("text, secret", [
    ("iris://admin:s3cr/et@db.example:1972/USER unreachable", "s3cr/et"),
    ("iris://admin:1234/x9@db.example:1972/USER", "1234/x9"),
    ("iris://admin:a#b?c@d@db.example:1972/USER", "a#b?c@d"),
    ("https://ghp_tokenAsUser@github.com/x.git", "ghp_tokenAsUser"),
    ("connect to bob:hun@ter2@127.0.0.1:8080 failed", "hun@ter2"),
    ("sqlite://user:pw/x@/tmp/x.db", "pw/x"),
])
def test_every_url_user_part_is_redacted_whatever_it_holds(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out and MARK in out


@pytest.mark.parametrize("text", ["sqlite:////data/proj@2/batchx.db", "https://api.example.com/v1 mail a@b.org"])
def test_paths_and_mail_addresses_beside_a_url_are_left_alone(text: str) -> None:
    assert redact(text) == text


_PRINTABLE = st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp"))  # a URL ends at a space


@settings(max_examples=300, deadline=None)
@given(password=st.text(_PRINTABLE, min_size=3, max_size=40), encoded=st.booleans(),
       shape=st.sampled_from(["iris://admin:{}@db.example:1972/USER", "https://bob:{}@api.example.com/v1",
                              "sqlite://me:{}@/tmp/x.db", "bob:{}@127.0.0.1:8080"]),
       around=st.sampled_from(["{}", "cannot connect to {}: refused", "'{}'", "(url={}) and more", "{}\nnext"]))
def test_no_piece_of_a_url_password_survives_redaction(password: str, encoded: bool, shape: str,
                                                        around: str) -> None:
    written = quote(password, safe="") if encoded else password
    text = around.format(shape.format(written))
    background = redact(around.format(shape.format("pw")))
    assert not leaked(written, redact(text), background)
    assert not leaked(password, redact(text), background)


def test_split_userinfo_reads_or_refuses_without_quoting() -> None:
    assert split_userinfo("iris://ad%3Amin:p%2Fw[d@d@db:1972/USER?schema=X") == \
        ("ad:min", "p/w[d@d", "iris://db:1972/USER?schema=X")
    assert split_userinfo("iris://db:1972/USER") == (None, None, "iris://db:1972/USER")
    assert split_userinfo("iris://me@db:1972/USER") == ("me", None, "iris://db:1972/USER")
    for url in ("iris://admin:1234/x9@db.example:1972/USER", "iris://admin:s3c?ret@db:1/U",
                "http://bob:hun#ter2pass@127.0.0.1:1/v1"):
        with pytest.raises(ValueError, match="percent-encode") as caught:
            split_userinfo(url)
        assert "%2F" in str(caught.value) and "@db" not in str(caught.value) and "ter2" not in str(caught.value)


def test_known_secrets_are_redacted_whatever_their_shape() -> None:
    assert redact("login failed for pw x/y#z", "x/y#z", None, "") == f"login failed for pw {MARK}"
    assert redact("a b c", "b") == "a b c"  # under 3 characters: ordinary text, left alone


@pytest.mark.parametrize("unit", ["!a:", "!a:b", "a://", "!a:b@", "x@", "http://a", "a:b@"])
def test_redaction_takes_linear_time_on_hostile_text(unit: str) -> None:
    """A provider echoing a large body is redacted in one pass, not one scan per ``user:`` or ``://``."""
    import time

    text = unit * (200_000 // len(unit))
    start = time.perf_counter()
    redact(text)
    assert time.perf_counter() - start < 1.0  # about 0.05 s; a quadratic scan takes 10 s here
