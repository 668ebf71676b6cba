"""Shared fixtures: the gold corpora in ../shared (read in place, never copied) and a network guard."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPORA = REPO.parent / "shared" / "corpora"
NCBI_DEVEL = CORPORA / "ncbi-disease" / "devel.pubtator"
NCBI_TRAIN = CORPORA / "ncbi-disease" / "train.pubtator"


@pytest.fixture
def ncbi_devel() -> Path:
    if not NCBI_DEVEL.exists():
        pytest.skip(f"NCBI disease corpus not found at {NCBI_DEVEL}")
    return NCBI_DEVEL


@pytest.fixture
def ncbi_train() -> Path:
    if not NCBI_TRAIN.exists():
        pytest.skip(f"NCBI disease corpus not found at {NCBI_TRAIN}")
    return NCBI_TRAIN


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Fail any attempt to open a network connection; returns the list of attempts."""
    attempts: list[tuple] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted in a test that must stay offline")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts
