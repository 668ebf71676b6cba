"""``hf://ORG/REPO/FILE.gguf[@REVISION][:fast]``: a GGUF file from the Hugging Face Hub on the local
model, the same as ``local:hf:ORG/REPO/FILE.gguf`` (see :mod:`toolkit.lm._hub` and :mod:`toolkit.lm._local`)."""

from __future__ import annotations

from typing import Any


def resolve(spec: str, rest: str, **options: Any) -> Any:
    from toolkit.lm import _local as local

    return local.resolve(spec, "hf:" + rest.removeprefix("//"), **options)
