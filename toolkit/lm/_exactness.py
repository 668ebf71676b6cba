"""Whether a model can run the exact parallel layout (:class:`~toolkit.lm._kvlayout.ExactKV`): a
decision on what its GGUF header says and what runs it, made before any weights are loaded.

The exact layout gives every token of a document the same kernels in a batch as alone. What it
relies on, read in the llama.cpp source vendored by llama-cpp-python 0.3.36 (x86-64 CPU backend)
and measured bit for bit on the registered models:

* a weight matrix's kernel depends only on its type and the rows in the call: the K-quants and most
  i-quants take a tiled kernel from 8 rows (``GGML_CPU_TILED_MM``), F32, F16, BF16, Q8_0, Q4_0, Q5_0
  and IQ4_NL llamafile's tinyBLAS from 2 rows, the other types a dot product per row at any count;
  the exact layout's calls have 8 rows or more (prompts 64 or more), so every call of a matrix takes
  one kernel, whose value for a row does not depend on the other rows: no head size or matrix shape
  enters (a shape tinyBLAS cannot tile goes to the per-row kernel at every count);
* attention is flash attention over a KV cache of f16 keys and values, whatever the head size;
* nothing else mixes rows: no routing of tokens to experts (a mixture of experts runs an expert's
  rows in one kernel or another by how many of the batch's tokens it gets), no recurrent state (it
  is not KV cells the layout can place), no sliding window (its cache is another, not validated).

The kernels are those of one build: another llama-cpp-python version or another CPU family may
choose by other rules, so exactness is refused there rather than assumed.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from toolkit.lm._gguf import Header

MEASURED_ON = "0.3.36"  # the llama-cpp-python whose kernel rules these are

TILED_FROM_8 = frozenset({"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS",
                          "IQ3_S", "IQ1_S", "IQ1_M"})
TINYBLAS_FROM_2 = frozenset({"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q5_0", "IQ4_NL"})
PER_ROW = frozenset({"Q4_1", "Q5_1", "Q8_1", "TQ1_0", "TQ2_0", "MXFP4", "NVFP4", "Q1_0", "Q2_0"})

# llama.cpp's recurrent and hybrid architectures (src/llama-arch.cpp, llm_arch_is_recurrent/_hybrid)
STATEFUL = frozenset({"mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7", "jamba", "falcon-h1", "plamo2",
                      "granitehybrid", "lfm2", "lfm2moe", "nemotron_h", "nemotron_h_moe", "qwen3next", "kimi-linear",
                      "bailingmoe3", "kimi-k3", "glm5-next", "qwen35", "qwen35moe", "qwen4exp", "deepseek4",
                      "minimax-01"})
_STATE_KEYS = ("ssm.", "wkv.", "shortconv.", "kda.", "full_attention_interval", "time_mix")

FAST_MEANS = ("documents decoded together share one KV cache and the batch's kernels, so a document's answer "
              "in a batch can differ from its answer alone where two tokens nearly tie")


@dataclass(frozen=True)
class Verdict:
    exact: bool
    reason: str | None = None  # why not, as a clause

    def note(self, name: str) -> str:
        """One line for the user: why ``name`` runs ``local:fast`` and what that means."""
        return f"note: {name}: no exact parallel layout ({self.reason}); running local:fast: {FAST_MEANS}"


def exact_layout(header: Header, llama_version: str | None = None, machine: str | None = None) -> Verdict:
    """Whether the model of ``header`` runs exactly under llama-cpp-python ``llama_version`` on a
    ``machine`` (default: the installed version, this machine), and if not, why."""
    if llama_version is None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            llama_version = version("llama_cpp_python")
        except PackageNotFoundError:
            llama_version = "not installed"
    machine = machine or platform.machine()
    if llama_version != MEASURED_ON:
        return Verdict(False, f"its kernel rules are llama-cpp-python {MEASURED_ON}'s, this is {llama_version}")
    if machine.lower() not in ("x86_64", "amd64"):
        return Verdict(False, f"its kernel rules are those of x86-64 CPUs, this is {machine}")
    arch = header.architecture
    if arch in STATEFUL or any(key.startswith(f"{arch}.{part}") for key in header.metadata for part in _STATE_KEYS):
        return Verdict(False, f"{arch} keeps a recurrent state, which is not KV cells the layout can place")
    if (header.arch("expert_count") or 0) > 0:
        return Verdict(False, "a mixture of experts: an expert's kernel depends on how many of the batch's "
                              "tokens are routed to it")
    if (header.arch("attention.sliding_window") or 0) > 0:
        return Verdict(False, "sliding-window attention keeps another cache, not validated for exactness")
    unknown = sorted(set(header.matrix_types()) - TILED_FROM_8 - TINYBLAS_FROM_2 - PER_ROW)
    if unknown:
        return Verdict(False, f"weights of type {', '.join(unknown)}, whose kernels' batch rules are not known here")
    return Verdict(True)
