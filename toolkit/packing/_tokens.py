"""Offline token counting.

Resolution order for a model name (the documented fallback):

1. A tokenizer registered with :func:`register_tokenizer` (the local model's own tokenizer, for
   example) is used as is.
2. OpenAI model and encoding names (``gpt-4o``, ``gpt-3.5-turbo``, ``cl100k_base``...) use tiktoken.
   tiktoken downloads its BPE files on first use; here its cache is seeded from copies that ship
   inside installed packages (litellm), verified by sha256, so no network is ever attempted.
3. Models whose own tokenizer ships in an installed package (DeepSeek's, via ``tokenizers``) use it.
4. Any other name falls back to ``cl100k_base`` (``TokenCounter.exact`` is then False). On the NCBI
   disease abstracts cl100k counts 6% more tokens than DeepSeek's tokenizer and 2% more than
   Anthropic's (``tests/test_tokens.py`` measures it): inside +-10%, and on the safe side for a budget.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from pathlib import Path

from toolkit.core import cache_dir

__all__ = [
    "TokenCounter",
    "count_tokens",
    "estimate_tokens",
    "get_counter",
    "register_tokenizer",
]

_BLOB = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
# sha256 of each BPE file, as tiktoken_ext.openai_public expects them.
TIKTOKEN_FILES: dict[str, str] = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "p50k_base": "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069",
}
FALLBACK_ENCODING = "cl100k_base"
# Tokenizer files (Hugging Face format) that ship in installed packages: name prefix -> (module, file).
_PACKAGED_HF = {"deepseek": ("litellm", "litellm_core_utils/tokenizers/deepseek_tokenizer.json")}

_lock = threading.Lock()
_registered: dict[str, Callable[[str], int]] = {}


class OfflineTokenizerError(RuntimeError):
    """A tokenizer file needed for offline counting is missing or corrupt."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def tiktoken_cache_dir() -> Path:
    """The directory tiktoken reads its BPE files from (``TIKTOKEN_CACHE_DIR`` if set)."""
    return Path(os.environ.get("TIKTOKEN_CACHE_DIR") or cache_dir() / "tiktoken")


def seed_tiktoken_cache(encoding: str) -> Path:
    """Make ``encoding`` loadable offline: copy its verified BPE file into tiktoken's cache."""
    if encoding not in TIKTOKEN_FILES:
        raise OfflineTokenizerError(f"no offline copy known for encoding {encoding!r}")
    directory = tiktoken_cache_dir()
    os.environ["TIKTOKEN_CACHE_DIR"] = str(directory)
    name = hashlib.sha1(_BLOB.format(encoding).encode()).hexdigest()  # tiktoken's cache key
    target = directory / name
    expected = TIKTOKEN_FILES[encoding]
    if target.exists() and _sha256(target) == expected:
        return target
    source_dir = _package_dir("litellm")
    source = source_dir / "litellm_core_utils" / "tokenizers" / name if source_dir else None
    if source is None or not source.exists():
        raise OfflineTokenizerError(
            f"the {encoding} BPE file is not in the tiktoken cache ({directory}) and no installed "
            "package ships it (litellm, a dspy dependency, does): reinstall the toolkit"
        )
    if _sha256(source) != expected:
        raise OfflineTokenizerError(f"{source} does not match the sha256 tiktoken expects")
    directory.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    shutil.copyfile(source, tmp)
    tmp.replace(target)
    return target


class TokenCounter:
    """Counts tokens for one model; ``count`` one text, ``count_many`` a sequence."""

    def __init__(self, name: str, encode_len: Callable[[str], int], exact: bool,
                 encode: Callable[[str], list[int]] | None = None) -> None:
        self.name = name
        self.exact = exact  # False when the count comes from the fallback encoding
        self._len = encode_len
        self.encode = encode  # text -> token ids, where the tokenizer gives them (tiktoken)

    def count(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        return self._len(text) if text else 0

    def count_many(self, texts: Iterable[str]) -> list[int]:
        return [self.count(t) for t in texts]

    def __repr__(self) -> str:
        return f"TokenCounter({self.name!r}, exact={self.exact})"


def _tiktoken_counter(encoding: str, label: str, exact: bool) -> TokenCounter:
    import tiktoken

    seed_tiktoken_cache(encoding)
    enc = tiktoken.get_encoding(encoding)
    encode = enc.encode_ordinary
    return TokenCounter(label, lambda text: len(encode(text)), exact, encode)


def _hf_counter(model: str) -> TokenCounter | None:
    lowered = model.lower()
    for prefix, (module, rel) in _PACKAGED_HF.items():
        if prefix in lowered and (base := _package_dir(module)) and (base / rel).exists():
            return _tokenizer_counter(f"{prefix} (hf)", base / rel)
    return None


def _tokenizer_counter(label: str, path: Path) -> TokenCounter:
    """An exact counter from a Hugging Face ``tokenizer.json`` (no special tokens counted)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    return TokenCounter(label, lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids), True)


def _openai_encoding(model: str) -> str | None:
    from tiktoken.model import encoding_name_for_model

    bare = model.split("/", 1)[1] if model.startswith(("openai/", "azure/")) else model
    if bare in TIKTOKEN_FILES:
        return bare
    try:
        return encoding_name_for_model(bare)
    except KeyError:
        return None


@lru_cache(maxsize=64)
def _resolve(model: str) -> TokenCounter:
    encoding = _openai_encoding(model)
    if encoding in TIKTOKEN_FILES:
        return _tiktoken_counter(encoding, encoding, exact=True)
    return _hf_counter(model) or _tiktoken_counter(FALLBACK_ENCODING, f"{FALLBACK_ENCODING} (fallback)", False)


def register_tokenizer(model: str, count: Callable[[str], int]) -> None:
    """Use ``count(text) -> int`` for ``model`` from now on (e.g. a local model's own tokenizer)."""
    with _lock:
        _registered[model] = count


def get_counter(model: str = "gpt-3.5-turbo") -> TokenCounter:
    """The token counter for ``model`` (see the module docstring for the resolution order)."""
    if not isinstance(model, str) or not model:
        raise ValueError(f"model must be a non-empty string, got {model!r}")
    if model in _registered:
        return TokenCounter(model, _registered[model], exact=True)
    with _lock:
        return _resolve(model)


def estimate_tokens(text: str, model: str = "gpt-3.5-turbo") -> int:
    """Tokens in ``text`` for ``model``; ``""`` is 0, ``None`` raises ``TypeError``. Offline."""
    if text is None:
        raise TypeError("estimate_tokens() needs a str, got None")
    return get_counter(model).count(text)


def count_tokens(texts: Sequence[str] | Iterable[str], model: str = "gpt-3.5-turbo") -> list[int]:
    """Bulk form of :func:`estimate_tokens`, one count per text, in order."""
    return get_counter(model).count_many(texts)
