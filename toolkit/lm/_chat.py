"""Chat prompts as the local model reads them: its own chat template (from the GGUF file), rendered
as ``create_chat_completion`` renders it and tokenised so that only the template's markup can
become control tokens (a document containing ``<|im_end|>`` is read as text)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_MARK = re.compile("\ue000([0-9]+)\ue001")  # a message's place in the rendered template


@dataclass
class ChatPrompt:
    """A rendered chat prompt: its tokens and what ends the model's turn."""

    tokens: list[int]
    stop: list[str]  # the template's stop strings
    stopping_criteria: Any  # llama_cpp.StoppingCriteriaList (the end-of-turn token)


class ChatTemplate:
    """The model's chat template, rendered as ``create_chat_completion`` renders it (its Jinja
    template, no BOS added) and tokenised so that only the template's markup can become control
    tokens: message contents are plain text (``special=False``), whatever they contain. For contents
    without control-token text the tokens are exactly ``create_chat_completion``'s."""

    def __init__(self, llama: Any) -> None:
        from llama_cpp import llama_chat_format

        self.llama = llama
        eos, bos = llama.token_eos(), llama.token_bos()
        self._format = llama_chat_format.Jinja2ChatFormatter(  # as llama_cpp.Llama registers its default
            template=llama.metadata["tokenizer.chat_template"],
            eos_token=llama._model.token_get_text(eos) if eos != -1 else "",
            bos_token=llama._model.token_get_text(bos) if bos != -1 else "",
            stop_token_ids=[eos],
        )

    def __call__(self, messages: list[dict[str, str]]) -> ChatPrompt:
        """``messages`` rendered and tokenised. The template is rendered with a placeholder per
        message to tell its markup from the contents; llama.cpp's own split (control tokens, then
        each stretch of text between them tokenised alone) is applied to the markup's control
        tokens only. Raises ValueError if the template alters contents (then they cannot be located)."""
        contents = [m["content"] for m in messages]
        # llama_cpp types messages as per-role TypedDicts; these are the same role/content dicts, untyped.
        placeholders = [{**m, "content": f"\ue000{i}\ue001"} for i, m in enumerate(messages)]
        marked = self._format(messages=placeholders)  # type: ignore[arg-type]
        result = self._format(messages=messages)  # type: ignore[arg-type]
        parts = _MARK.split(marked.prompt)  # markup, message index, markup, ...
        if "".join(contents[int(p)] if i % 2 else p for i, p in enumerate(parts)) != result.prompt:
            raise ValueError("the chat template alters message contents: they cannot be told from its markup")
        tokens: list[int] = []
        text = ""
        for i, part in enumerate(parts):
            if i % 2:
                text += contents[int(part)]
                continue
            for piece in self._split_markup(part):
                if isinstance(piece, str):
                    text += piece
                else:
                    tokens += self._plain(text) + [piece]
                    text = ""
        return ChatPrompt(tokens + self._plain(text), list(result.stop or []), result.stopping_criteria)

    def _plain(self, text: str) -> list[int]:
        return self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False) if text else []

    def _split_markup(self, markup: str) -> list[str | int]:
        """``markup`` as text pieces and the control tokens llama.cpp finds in it (as with
        ``special=True``: control and unknown-attribute tokens; user-defined ones are plain text)."""
        import llama_cpp

        special = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
        vocab = self.llama._model.vocab
        pieces: list[str | int] = []
        at = 0
        for token in self.llama.tokenize(markup.encode("utf-8"), add_bos=False, special=True):
            if llama_cpp.llama_vocab_get_attr(vocab, token) & special:
                spelt = self.llama._model.token_get_text(token)
                found = markup.index(spelt, at)
                pieces += [markup[at:found], token]
                at = found + len(spelt)
        return pieces + [markup[at:]]
