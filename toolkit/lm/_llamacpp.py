"""Opening llama.cpp models in process (llama-cpp-python): the weights' repacking switch, llama.cpp's
own logging kept off the terminal, and every model closed at exit."""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr
from typing import Any

_OPEN: list[Any] = []  # llama objects, closed at exit (their __del__ fails during interpreter shutdown)


_PARAMS_LOCK = threading.Lock()


def open_llama(repack: bool = False, **kwargs: Any) -> Any:
    """A ``llama_cpp.Llama``; ``repack``: let llama.cpp repack the weights for its CPU GEMM
    kernels (its default, ``use_extra_bufts``). Off by default: on this project's CPUs (AVX-512,
    2 cores) the plain Q4_K kernels evaluate prompts about 35% faster (107-119 against 78-89
    tokens/s, measured side by side on NCBI prompts). ``Llama`` has no argument for it, so its
    model-parameter defaults are swapped while it loads."""
    import llama_cpp
    import llama_cpp.llama_cpp as low

    defaults = low.llama_model_default_params

    def params() -> Any:
        p = defaults()
        p.use_extra_bufts = repack
        return p

    with _PARAMS_LOCK:
        low.llama_model_default_params = params
        try:
            llama = llama_cpp.Llama(**kwargs)
        finally:
            low.llama_model_default_params = defaults
    close_at_exit(llama)
    return llama


@contextmanager
def stderr_silenced() -> Iterator[None]:
    """Mute file descriptor 2 (where llama.cpp's C code logs) and ``sys.stderr`` (where
    llama-cpp-python's log callback prints: in a Jupyter kernel, not file descriptor 2) for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull, redirect_stderr(devnull):
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def close_at_exit(obj: Any) -> None:
    """Close ``obj`` (a llama model or context holder) when the interpreter exits, before its ``__del__`` can fail."""
    if not _OPEN:
        atexit.register(_close_all)
    _OPEN.append(obj)


def _close_all() -> None:
    while _OPEN:
        _OPEN.pop().close()
