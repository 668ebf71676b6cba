"""The user's own model without running one: GGUF headers, naming a file by its sha256, the Hugging
Face cache in offline mode, the exactness decision, ``models list`` and the one-line errors.

Files here are small GGUF headers written by the test (:func:`write_gguf`); the real models run in
``tests/test_own_model.py`` (``-m local_model``)."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from toolkit.cli import main
from toolkit.lm import _hub as hub, _weights as weights
from toolkit.lm._exactness import MEASURED_ON, exact_layout
from toolkit.lm._gguf import GGUFError, read_header
from toolkit.lm._local import parse_model

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
TYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 8, "Q4_K": 12, "Q6_K": 14, "MXFP4": 39, "NEW": 99}


def write_gguf(path: Path, metadata: dict[str, Any], tensors: dict[str, tuple[tuple[int, ...], str]]) -> Path:
    """A GGUF (version 3) header: ``metadata`` (str, int, float, bool, list of str) and tensor
    infos (name -> shape, type); no tensor data (the reader never reads it)."""
    def string(text: str) -> bytes:
        data = text.encode()
        return struct.pack("<Q", len(data)) + data

    def value(v: Any) -> bytes:
        if isinstance(v, bool):
            return struct.pack("<I?", 7, v)
        if isinstance(v, int):
            return struct.pack("<Iq", 11, v)
        if isinstance(v, float):
            return struct.pack("<If", 6, v)
        if isinstance(v, list):
            return struct.pack("<IIQ", 9, 8, len(v)) + b"".join(string(s) for s in v)
        return struct.pack("<I", 8) + string(v)

    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata))
    out += b"".join(string(k) + value(v) for k, v in metadata.items())
    for name, (shape, kind) in tensors.items():
        out += string(name) + struct.pack(f"<I{len(shape)}Q", len(shape), *shape) + struct.pack("<IQ", TYPES[kind], 0)
    path.write_bytes(out + b"\0" * 64)
    return path


def llama_like(arch: str = "llama", types: tuple[str, str] = ("Q4_K", "Q6_K"), **extra: Any) -> dict[str, Any]:
    """Metadata and tensors of a small dense model of ``arch``: matrices of ``types``."""
    metadata = {"general.architecture": arch, "general.file_type": 15, f"{arch}.context_length": 32768,
                f"{arch}.block_count": 2, f"{arch}.embedding_length": 512, f"{arch}.attention.head_count": 8,
                f"{arch}.attention.head_count_kv": 2, "tokenizer.ggml.tokens": ["a", "b", "c"],
                "tokenizer.chat_template": TEMPLATE, **extra}
    tensors = {"token_embd.weight": ((512, 1000), types[0]), "blk.0.attn_norm.weight": ((512,), "F32"),
               "blk.0.ffn_down.weight": ((1024, 512), types[1]), "output.weight": ((512, 1000), types[1])}
    return {"metadata": metadata, "tensors": tensors}


@pytest.fixture(autouse=True)
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every cache (the toolkit's, the model cache, the hub's) in the test's own folder."""
    monkeypatch.setenv("BATCHX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BATCHX_MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def fill_hub_cache(home: Path, repo: str, filename: str, source: Path, blob: str | None = None,
                   revision: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """huggingface_hub's cache layout, filled as a download leaves it: the file as
    ``blobs/<sha256>`` (``blob``: another name), a snapshot symlink to it, ``refs/main``."""
    root = home / "hub" / f"models--{repo.replace('/', '--')}"
    blob = blob or weights.sha256_file(source)
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    shutil.copyfile(source, root / "blobs" / blob)
    (root / "refs" / "main").write_text(revision)
    link = root / "snapshots" / revision / filename
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(root / "blobs" / blob, link.parent))
    return link


# ---------------------------------------------------------------------------------------- GGUF
def test_the_header_reader_gives_metadata_tensor_types_and_the_quantisation(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", **llama_like(types=("Q8_0", "Q4_K")))
    header = read_header(path)
    assert header.architecture == "llama" and header.context_length == 32768 and header.chat_template == TEMPLATE
    assert header.file_type == "Q4_K_M" and header.metadata["tokenizer.ggml.tokens"] == "[3 items]"
    assert header.matrix_types() == {"Q8_0": 1, "Q4_K": 2}  # the 1-D norm is not a matrix
    (tmp_path / "not.gguf").write_bytes(b"PK\x03\x04 a zip")
    with pytest.raises(GGUFError, match="not a GGUF file"):
        read_header(tmp_path / "not.gguf")
    (tmp_path / "cut.gguf").write_bytes(path.read_bytes()[:40])
    with pytest.raises(GGUFError, match="truncated"):
        read_header(tmp_path / "cut.gguf")


def test_the_context_is_the_files_capped_by_memory(tmp_path: Path) -> None:
    header = read_header(write_gguf(tmp_path / "m.gguf", **llama_like()))
    per_token = 2 * 2 * 2 * (64 + 64)  # K and V, 2 layers, 2 KV heads of 512 / 8 = 64, f16
    assert weights.context_size(header, 10**9, None) == 32768
    assert weights.context_size(header, 10**9, 10**9 + 3 * per_token * 5000) == 4864  # 5000, to a multiple of 256
    assert weights.context_size(header, 10**9, 10**12) == 32768
    assert weights.context_size(header, 10**9, 10**9) == weights.MIN_CONTEXT


# ---------------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("model, reason", [
    (llama_like(), None),
    (llama_like(types=("Q8_0", "Q4_1")), None),
    (llama_like("qwen3moe", **{"qwen3moe.expert_count": 8}), "mixture of experts"),
    (llama_like("mamba"), "recurrent state"),
    (llama_like("newhybrid", **{"newhybrid.ssm.state_size": 16}), "recurrent state"),
    (llama_like("gemma3", **{"gemma3.attention.sliding_window": 1024}), "sliding-window"),
    (llama_like(types=("Q8_0", "NEW")), "type 99"),
], ids=["k-quants", "q4_1", "moe", "mamba", "ssm-keys", "swa", "unknown-type"])
def test_exactness_is_decided_from_the_header(tmp_path: Path, model: dict, reason: str | None) -> None:
    verdict = exact_layout(read_header(write_gguf(tmp_path / "m.gguf", **model)), MEASURED_ON, "x86_64")
    assert verdict.exact is (reason is None)
    if reason:
        assert reason in verdict.reason and "\n" not in verdict.note("m")
        assert verdict.note("m").startswith(f"note: m: no exact parallel layout ({verdict.reason}); running local:fast")


def test_exactness_needs_the_measured_build_and_cpu_family(tmp_path: Path) -> None:
    header = read_header(write_gguf(tmp_path / "m.gguf", **llama_like()))
    assert "llama-cpp-python 0.3.36's, this is 0.3.40" in exact_layout(header, "0.3.40", "x86_64").reason
    assert "x86-64 CPUs, this is aarch64" in exact_layout(header, MEASURED_ON, "aarch64").reason


# ------------------------------------------------------------------------------- naming a file
def test_a_file_is_named_by_its_sha256_computed_once_per_size_and_mtime(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "My-Model-Q4_K_M.gguf", **llama_like())
    found = weights.locate(str(path))
    digest = weights.sha256_file(path)
    assert (found.name, found.sha256, found.spec) == ("My-Model-Q4_K_M", digest, None)
    assert found.model_id == f"My-Model-Q4_K_M@sha256:{digest[:16]}"
    memo = json.loads((tmp_path / "cache" / "sha256.json").read_text())
    assert memo[str(path.resolve())]["sha256"] == digest
    stat = path.stat()  # same size and mtime, other bytes: the remembered hash is used, not recomputed
    path.write_bytes(path.read_bytes()[:-1] + b"x")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights.file_sha256(path) == digest
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: hashed again
    assert weights.file_sha256(path) == weights.sha256_file(path) != digest


def test_unusable_files_are_refused_in_one_line(tmp_path: Path) -> None:
    base = llama_like()
    base["metadata"].pop("tokenizer.chat_template")
    cases = {str(tmp_path / "missing.gguf"): "no GGUF file at",
             str(write_gguf(tmp_path / "base.gguf", **base)): "no chat template",
             "gpt-17": "unknown local model 'gpt-17'", "hf:just-a-name": "expected hf:ORG/REPO/FILE.gguf"}
    (tmp_path / "zip.gguf").write_bytes(b"PK\x03\x04")
    cases[str(tmp_path / "zip.gguf")] = "not a GGUF file"
    for source, message in cases.items():
        with pytest.raises(weights.WeightsError, match=message) as caught:
            weights.locate(source)
        assert "\n" not in str(caught.value)


def test_local_specs_parse() -> None:
    assert parse_model("") == (None, False) and parse_model("fast") == (None, True)
    assert parse_model("qwen2.5-0.5b:fast") == ("qwen2.5-0.5b", True)
    assert parse_model("/m/x.gguf") == ("/m/x.gguf", False) and parse_model("./x.gguf:fast") == ("./x.gguf", True)
    assert parse_model("hf:org/repo/sub/x.gguf@v1.0:fast") == ("hf:org/repo/sub/x.gguf@v1.0", True)
    assert hub.parse("org/repo/sub/x.gguf@v1.0") == hub.HubFile("org/repo", "sub/x.gguf", "v1.0")
    assert str(hub.parse("//org/repo/x.gguf")) == "hf:org/repo/x.gguf"
    from toolkit.lm import resolve_lm

    with pytest.raises(ValueError, match="a GGUF file runs on the local model: --lm local:/m/x.gguf"):
        resolve_lm("/m/x.gguf")


# -------------------------------------------------------------------------- the Hugging Face cache
def test_a_hub_file_loads_from_a_prefilled_cache_offline_and_is_verified(caches: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        no_network: list) -> None:
    """The real ``hf_hub_download`` on a cache laid out as a download leaves it, with
    HF_HUB_OFFLINE=1; a blob whose content is not the sha256 it is named by is refused."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = write_gguf(tmp_path / "src.gguf", **llama_like())
    link = fill_hub_cache(caches / "hf", "acme/tiny-GGUF", "tiny-Q4_K_M.gguf", source)
    found = weights.locate("hf:acme/tiny-GGUF/tiny-Q4_K_M.gguf")
    assert found.path == link and found.sha256 == weights.sha256_file(source) == hub.hub_sha256(link)
    pinned = weights.locate("hf:acme/tiny-GGUF/tiny-Q4_K_M.gguf@0123456789abcdef0123456789abcdef01234567")
    assert pinned.sha256 == found.sha256
    assert hub.cached_files() == [("hf:acme/tiny-GGUF/tiny-Q4_K_M.gguf", link)]
    fill_hub_cache(caches / "hf", "acme/bad-GGUF", "bad.gguf", source, blob="0" * 64)
    with pytest.raises(weights.WeightsError, match="sha256 mismatch: the hub says 0000"):
        weights.locate("hf:acme/bad-GGUF/bad.gguf")
    with pytest.raises(weights.WeightsError, match="is not in the Hugging Face cache .* and HF_HUB_OFFLINE is set"):
        weights.locate("hf:acme/tiny-GGUF/other.gguf")
    assert not no_network


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "toolkit", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def test_without_the_file_offline_the_error_is_one_line(caches: Path) -> None:
    env = {"HF_HUB_OFFLINE": "1"}
    out = _cli(["extract", "--lm", "local:hf:acme/none-GGUF/none.gguf", "--corpus", "sample", "--limit", "1",
                "--db", f"sqlite:///{caches / 'x.db'}"], env)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("error: hf:acme/none-GGUF/none.gguf is not in the Hugging Face cache")


@pytest.mark.slow
def test_without_the_file_and_the_hub_unreachable_the_error_is_one_line(caches: Path) -> None:
    """Not offline, but nothing answers where the hub should be: huggingface_hub retries (about
    25 s), quietly, and the run stops with one line."""
    out = _cli(["models", "fetch", "hf:acme/none-GGUF/none.gguf"], {"HF_ENDPOINT": "http://127.0.0.1:9"})
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "is not in the Hugging Face cache" in out.stderr and "the hub cannot be reached" in out.stderr


# --------------------------------------------------------------------------------- models list
def test_models_list_shows_cache_files_hub_downloads_and_named_files(caches: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    (caches / "models").mkdir()
    write_gguf(caches / "models" / "mine-Q4_K_M.gguf", **llama_like())
    link = fill_hub_cache(caches / "hf", "acme/moe-GGUF", "moe.gguf",
                          write_gguf(tmp_path / "moe.gguf", **llama_like("qwen3moe", **{"qwen3moe.expert_count": 8})))
    named = write_gguf(tmp_path / "named.gguf", **llama_like(types=("Q8_0", "MXFP4")))
    profile = {"prompt_tokens_per_second": 321.0, "output_tokens_per_second": 45.6, "overhead_seconds": 0.5,
               "fit": {"model_id": f"named@sha256:{weights.sha256_file(named)[:16]}"}}
    from toolkit.lm import remember_calibration

    remember_calibration(profile)
    assert main(["models", "list", str(named), "--json"]) == 0
    rows = {r["lm"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    mine, moe, other = (rows[f"local:{caches / 'models' / 'mine-Q4_K_M.gguf'}"],
                        rows["local:hf:acme/moe-GGUF/moe.gguf"], rows[f"local:{named}"])
    assert (mine["kind"], mine["quantisation"], mine["exact_layout"]) == ("file", "Q4_K_M", True)
    assert (moe["kind"], moe["exact_layout"], moe["sha256"]) == ("hf", False, hub.hub_sha256(link))
    assert "mixture of experts" in moe["exact_reason"] and other["exact_layout"] is True
    assert other["measured"]["prompt_tokens_per_second"] == 321.0 and mine["measured"] is None
    assert main(["models", "list", str(named)]) == 0
    text = capsys.readouterr().out
    assert "321 / 45.6" in text and "local:hf:acme/moe-GGUF/moe.gguf: no exact parallel layout (a mixture" in text


class _Hub(http.server.BaseHTTPRequestHandler):
    """The hub's file route (``/ORG/REPO/resolve/REVISION/FILE``) as huggingface_hub reads it: on
    HEAD the commit, the ETag (a git LFS file's sha256) and the size; on GET the bytes (a Range
    from an offset, for a resumed download). ``files``: path -> (bytes, the ETag to give)."""

    files: dict[str, tuple[bytes, str]] = {}
    commit = "89abcdef0123456789abcdef0123456789abcdef"

    def _file(self) -> tuple[bytes, str] | None:
        match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/[^/]+/(.+)", self.path.split("?")[0])
        return self.files.get(f"{match.group(1)}/{match.group(2)}") if match else None

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
        found = self._file()
        if found is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", self.commit)
        self.send_header("ETag", f'"{found[1]}"')
        self.send_header("Content-Length", str(len(found[0])))
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        found = self._file()
        start = int(re.match(r"bytes=(\d+)-", self.headers.get("Range", "bytes=0-")).group(1))
        body = found[0][start:] if found else b""
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_hub_file_is_downloaded_from_an_endpoint_and_checked_against_the_hubs_sha256(
        caches: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real download path (``hf_hub_download`` against a local endpoint, ``HF_ENDPOINT``):
    into an empty cache, the blob named by the sha256 the hub gave; a file whose bytes are not
    that sha256 is refused in one line."""
    good = write_gguf(tmp_path / "good.gguf", **llama_like()).read_bytes()
    bad = good[:-1] + b"!"
    _Hub.files = {"acme/tiny-GGUF/tiny.gguf": (good, hashlib.sha256(good).hexdigest()),
                  "acme/tiny-GGUF/bad.gguf": (bad, hashlib.sha256(b"what the hub stored").hexdigest())}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    try:
        found = weights.locate("hf:acme/tiny-GGUF/tiny.gguf")
        assert found.sha256 == hashlib.sha256(good).hexdigest() == found.path.resolve().name
        assert found.path.read_bytes() == good and found.name == "tiny"
        assert found.path == caches / "hf" / "hub" / "models--acme--tiny-GGUF" / "snapshots" / _Hub.commit / "tiny.gguf"
        with pytest.raises(weights.WeightsError, match="bad.gguf: sha256 mismatch: the hub says") as caught:
            weights.locate("hf:acme/tiny-GGUF/bad.gguf")
        assert "\n" not in str(caught.value)
        with pytest.raises(weights.WeightsError, match="no file none.gguf in acme/tiny-GGUF"):
            weights.locate("hf:acme/tiny-GGUF/none.gguf")
    finally:
        server.shutdown()
        server.server_close()
