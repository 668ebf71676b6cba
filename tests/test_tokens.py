from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import tiktoken

from toolkit import count_tokens, estimate_tokens, get_counter, register_tokenizer
from toolkit.corpora import read_pubtator
from toolkit.packing._tokens import TIKTOKEN_FILES, seed_tiktoken_cache, tiktoken_cache_dir

SAMPLE = "Mutations in BRCA1 increase the risk of breast cancer; olaparib extends survival."


def test_empty_text_is_zero_tokens():
    assert estimate_tokens("") == 0
    assert count_tokens(["", "a"]) == [0, 1]


@pytest.mark.parametrize("bad", [None, 3, b"bytes", ["list"]])
def test_non_text_is_a_clear_type_error(bad):
    with pytest.raises(TypeError, match="str"):
        estimate_tokens(bad)


@pytest.mark.parametrize("bad_model", ["", None])
def test_bad_model_name_is_a_value_error(bad_model):
    with pytest.raises(ValueError, match="model"):
        estimate_tokens("text", bad_model)


@pytest.mark.parametrize(
    ("model", "encoding"),
    [("gpt-3.5-turbo", "cl100k_base"), ("gpt-4", "cl100k_base"), ("gpt-4o", "o200k_base"),
     ("openai/gpt-4o-mini", "o200k_base"), ("cl100k_base", "cl100k_base")],
)
def test_openai_models_count_exactly_like_tiktoken(model, encoding):
    seed_tiktoken_cache(encoding)
    expected = len(tiktoken.get_encoding(encoding).encode_ordinary(SAMPLE))
    assert estimate_tokens(SAMPLE, model) == expected
    assert get_counter(model).exact


def test_special_token_text_is_counted_not_rejected():
    assert estimate_tokens("<|endoftext|> is just text here") > 3


def test_bulk_form_matches_single_form():
    texts = [SAMPLE, "short", "", SAMPLE * 3]
    assert count_tokens(texts, "gpt-4o") == [estimate_tokens(t, "gpt-4o") for t in texts]


def test_unknown_model_uses_the_documented_fallback():
    counter = get_counter("qwen2.5-coder-1.5b-instruct")
    assert not counter.exact and "fallback" in counter.name
    assert estimate_tokens(SAMPLE, "qwen2.5-coder-1.5b-instruct") == estimate_tokens(SAMPLE, "cl100k_base")


def test_registered_tokenizer_wins():
    register_tokenizer("toy-model", lambda text: len(text.split()))
    assert estimate_tokens("one two three", "toy-model") == 3
    assert get_counter("toy-model").exact


def test_fallback_is_within_ten_percent_of_real_tokenizers_on_ncbi(ncbi_devel):
    """The fallback (cl100k) against tokenizers of other vendors that ship offline."""
    texts = [d.text for d in read_pubtator(ncbi_devel)]
    fallback = sum(count_tokens(texts, "some-local-model"))
    deepseek = sum(count_tokens(texts, "deepseek-chat"))
    assert get_counter("deepseek-chat").exact
    assert deepseek != fallback  # really a different tokenizer
    assert abs(fallback - deepseek) / deepseek <= 0.10


def test_offline_from_an_empty_cache_without_network(tmp_path):
    """A fresh cache directory is seeded from packaged files; no socket is ever opened."""
    code = textwrap.dedent(
        """
        import socket
        def refuse(*a, **k):
            raise SystemExit("network access attempted")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        import toolkit
        from toolkit.packing._tokens import tiktoken_cache_dir
        assert toolkit.estimate_tokens("hello world", "gpt-4o") == 2
        assert toolkit.estimate_tokens("hello world", "gpt-3.5-turbo") == 2
        print(tiktoken_cache_dir())
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "TIKTOKEN_CACHE_DIR"}
    env["BATCHX_CACHE_DIR"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(tmp_path / "tiktoken")
    assert len(list((tmp_path / "tiktoken").iterdir())) == 2


def test_corrupt_cache_file_is_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    target = seed_tiktoken_cache("cl100k_base")
    target.write_bytes(b"corrupt")
    assert seed_tiktoken_cache("cl100k_base") == target
    import hashlib

    assert hashlib.sha256(target.read_bytes()).hexdigest() == TIKTOKEN_FILES["cl100k_base"]
    assert tiktoken_cache_dir() == tmp_path
