"""Secrets out of every text that leaves the process: the store, summaries, logs and error lines.

Provider error messages are quoted back to users and stored with the calls they ended; a server
that echoes the request (its API key, an ``Authorization`` header, a URL with ``user:password@``)
would put the secret in all of them. :func:`redact` removes, in this order: secrets the caller
knows (a password it parsed), the values of secret-named environment variables (``*_KEY``,
``*_TOKEN``, ``*_SECRET``, ``*_PASSWORD``, ...), the whole user part of URLs (``scheme://USERINFO@``,
whatever it holds up to the last ``@`` before a space, and ``user:password@host``), bearer tokens,
``key=value`` pairs whose key names a secret, and the shapes of well-known provider keys
(``sk-...``, ``AIza...``, ``ghp_...``, ``hf_...``, ``AKIA...``, ``xox?-...``).

A URL's own user and password are read by :func:`split_userinfo`, which refuses (without quoting
them) the ones a URL parser would cut short, and says how to percent-encode them.
"""

from __future__ import annotations

import os
import re
from urllib.parse import unquote

MARK = "[REDACTED]"
_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|PASS|CREDENTIALS?|AUTH)$", re.IGNORECASE)
_MIN_ENV_SECRET = 8  # shorter values would redact ordinary words
_MIN_KNOWN_SECRET = 3
ENCODE_HINT = ("the user or password in the URL holds a character that ends a URL's host part (/, ? or #): "
               "percent-encode it (/ as %2F, ? as %3F, # as %23, @ as %40, % as %25; in Python "
               "urllib.parse.quote(password, safe=''))")
_SPACES = re.compile(r"(\s+)")
_SCHEME = re.compile(r"(?i)\b[a-z][a-z0-9+.\-]*://(?!/)")  # scheme://, then a user part (not a path: sqlite:///)
_USER = re.compile(r"(?<![\w/:@.\-])[\w.~%+\-]+:(?!//)")  # user: of user:password@host
_HOST_START = re.compile(r"[\w\[]")
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{6,}"), rf"\1 {MARK}"),
    (re.compile(r"(?i)\b((?:x-)?api[_\-]?key|apikey|access[_\-]?token|auth[_\-]?token|secret|password|passwd|"
                r"authorization|token)(\"?'?\s*[:=]\s*\"?'?)([^\s\"'&,;}]+)"), rf"\1\2{MARK}"),
    (re.compile(r"\b(sk-[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|hf_[A-Za-z0-9]{20,}|"
                r"AKIA[0-9A-Z]{16}|xox[abprs]-[A-Za-z0-9\-]{10,})"), MARK),
)


def _env_secrets() -> list[str]:
    values = {v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= _MIN_ENV_SECRET}
    return sorted(values, key=len, reverse=True)  # longest first: a key containing another is removed whole


def redact(text: str | None, *known: str | None) -> str | None:
    """``text`` without secrets (None stays None); ``known``: secrets of the caller's (a password
    it parsed), removed whatever their shape when at least 3 characters long."""
    if not text:
        return text
    for secret in sorted({k for k in known if k and len(k) >= _MIN_KNOWN_SECRET}, key=len, reverse=True):
        text = text.replace(secret, MARK)
    for secret in _env_secrets():
        text = text.replace(secret, MARK)
    if "@" in text:
        text = "".join(_without_userinfo(word) for word in _SPACES.split(text))
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _without_userinfo(word: str) -> str:
    """``word`` (text between spaces) with the user part of a URL in it redacted: ``scheme://`` to
    the last ``@``, else ``user:`` to the last ``@`` before a host; one scan of the word (linear time)."""
    at = word.rfind("@")
    if at < 0:
        return word
    scheme = _SCHEME.search(word, 0, at)
    if scheme is not None and scheme.end() < at:
        return word[:scheme.end()] + MARK + word[at:]
    while at >= 0 and not _HOST_START.match(word, at + 1):
        at = word.rfind("@", 0, at)
    user = _USER.search(word, 0, at) if at > 0 else None
    if user is not None and user.end() < at:
        return word[:user.end()] + MARK + word[at:]
    return word


def split_userinfo(url: str) -> tuple[str | None, str | None, str]:
    """``url``'s user and password (percent-decoded; None when absent) and the URL without them.
    The user part ends at the last ``@`` (an unencoded ``@`` or ``[`` in a password is read as
    meant); one that holds ``/``, ``?`` or ``#`` would be cut short by any URL parser (the host
    part ends there), so it raises ValueError(:data:`ENCODE_HINT`), quoting no part of it. Only for
    URLs whose path and query hold no ``@`` (store URLs)."""
    scheme, sep, rest = url.partition("://")
    at = rest.rfind("@")
    if not sep or at < 0:
        return None, None, url
    if any(c in rest[:at] for c in "/?#"):
        raise ValueError(ENCODE_HINT)
    user, colon, password = rest[:at].partition(":")
    return unquote(user) or None, unquote(password) if colon else None, f"{scheme}://{rest[at + 1:]}"
