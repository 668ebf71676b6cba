"""Secrets out of every text that leaves the process: the store, summaries, logs and error lines.

Provider error messages are quoted back to users and stored with the calls they ended; a server
that echoes the request (its API key, an ``Authorization`` header, a URL with ``user:password@``)
would put the secret in all of them. :func:`redact` removes, in this order: the values of
secret-named environment variables (``*_KEY``, ``*_TOKEN``, ``*_SECRET``, ``*_PASSWORD``, ...),
passwords in URLs, bearer tokens, ``key=value`` pairs whose key names a secret, and the shapes of
well-known provider keys (``sk-...``, ``AIza...``, ``ghp_...``, ``hf_...``, ``AKIA...``, ``xox?-...``).
"""

from __future__ import annotations

import os
import re

MARK = "[REDACTED]"
_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|PASS|CREDENTIALS?|AUTH)$", re.IGNORECASE)
_MIN_ENV_SECRET = 8  # shorter values would redact ordinary words
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s/@:]*):([^\s/@]+)@"), rf"\1:{MARK}@"),
    (re.compile(r"(?<![\w/:@.\-])([\w.~%+\-]+):([^\s/@:'\"]+)@(?=[\w\[])"), rf"\1:{MARK}@"),  # user:pass@host
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{6,}"), rf"\1 {MARK}"),
    (re.compile(r"(?i)\b((?:x-)?api[_\-]?key|apikey|access[_\-]?token|auth[_\-]?token|secret|password|passwd|"
                r"authorization|token)(\"?'?\s*[:=]\s*\"?'?)([^\s\"'&,;}]+)"), rf"\1\2{MARK}"),
    (re.compile(r"\b(sk-[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|hf_[A-Za-z0-9]{20,}|"
                r"AKIA[0-9A-Z]{16}|xox[abprs]-[A-Za-z0-9\-]{10,})"), MARK),
)


def _env_secrets() -> list[str]:
    values = {v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= _MIN_ENV_SECRET}
    return sorted(values, key=len, reverse=True)  # longest first: a key containing another is removed whole


def redact(text: str | None) -> str | None:
    """``text`` without secrets (None stays None)."""
    if not text:
        return text
    for secret in _env_secrets():
        text = text.replace(secret, MARK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
