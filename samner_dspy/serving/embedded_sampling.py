"""Greedy decoding under a grammar, checking the grammar against the chosen token only: same tokens, half the time.

llama-cpp-python's sampler chain applies the grammar to every token of the vocabulary (152k for Qwen) before
each greedy choice, which on two cores costs about as much as running the model (24 ms a token against 33 ms).
llama.cpp's own server does what this module does: pick the most likely token first and ask the grammar only
whether that one is allowed; only when it is not is the grammar applied to the whole vocabulary and the choice
made again. Under greedy decoding the answer is the same token either way (the best token overall, when the
grammar allows it, is the best allowed one), so answers do not change: ``tests/test_embedded_model.py``
decodes the same constrained prompts both ways and compares the tokens.

:func:`install` swaps it into ``llama_cpp.Llama`` for requests at temperature 0 with a grammar (every stage of
this project); anything else keeps llama-cpp-python's own chain. The embedded server's process calls it.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

import llama_cpp
import numpy as np


class GrammarCheckedGreedy:
    """Repetition penalties, then the highest logit, then the grammar's verdict on that one token.

    Stands in for the ``LlamaSampler`` chain ``Llama.sample`` uses (``sample`` picks and accepts a token)."""

    def __init__(self, llama: llama_cpp.Llama, grammar: llama_cpp.LlamaGrammar, penalties: dict[str, Any]) -> None:
        self.n_vocab = llama.n_vocab()
        self.penalties = llama_cpp.llama_sampler_init_penalties(
            self.n_vocab,
            penalties["penalty_last_n"],
            penalties["penalty_repeat"],
            penalties["penalty_freq"],
            penalties["penalty_present"],
        )
        self.grammar = llama_cpp.llama_sampler_init_grammar(
            llama._model.vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8")
        )
        self._data = (llama_cpp.llama_token_data * self.n_vocab)()
        self._table = np.ctypeslib.as_array(self._data)
        self._ids = np.arange(self.n_vocab, dtype=np.int32)
        self._all = llama_cpp.llama_token_data_array(self._data, self.n_vocab, -1, False)
        self._one = (llama_cpp.llama_token_data * 1)()
        self._single = llama_cpp.llama_token_data_array(self._one, 1, -1, False)

    def _allowed(self, token: int, logit: float) -> bool:
        self._one[0].id, self._one[0].logit, self._one[0].p = token, logit, 0.0
        self._single.size, self._single.selected, self._single.sorted = 1, -1, False
        llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(self._single))
        return not math.isinf(self._one[0].logit)

    def sample(self, ctx: Any, idx: int = -1) -> int:
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx.ctx, idx), shape=(self.n_vocab,))
        self._table["id"] = self._ids
        self._table["logit"] = logits
        self._table["p"] = 0.0
        self._all.data = ctypes.cast(self._data, llama_cpp.llama_token_data_p)
        self._all.size, self._all.selected, self._all.sorted = self.n_vocab, -1, False
        llama_cpp.llama_sampler_apply(self.penalties, ctypes.byref(self._all))
        best = int(np.argmax(self._table["logit"]))  # the first highest, as llama.cpp's greedy sampler picks
        if not self._allowed(best, float(self._table["logit"][best])):
            llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(self._all))
            best = int(np.argmax(self._table["logit"]))
        token = int(self._table["id"][best])
        llama_cpp.llama_sampler_accept(self.penalties, token)
        llama_cpp.llama_sampler_accept(self.grammar, token)
        return token

    def close(self) -> None:
        for sampler in (self.penalties, self.grammar):
            if sampler is not None:
                llama_cpp.llama_sampler_free(sampler)
        self.penalties = self.grammar = None

    def __del__(self) -> None:
        self.close()


def install() -> None:
    """Use :class:`GrammarCheckedGreedy` for greedy, grammar-constrained requests in this process."""
    original = llama_cpp.Llama._init_sampler
    if getattr(original, "grammar_checked", False):
        return

    def init_sampler(self: llama_cpp.Llama, **options: Any) -> Any:
        plain = (
            options.get("temp", 0.8) == 0.0
            and options.get("grammar") is not None
            and options.get("logits_processor") is None
            and not options.get("mirostat_mode")
        )
        if not plain:
            return original(self, **options)
        penalties = {
            "penalty_last_n": self.last_n_tokens_size,
            "penalty_repeat": options.get("repeat_penalty", 1.0),
            "penalty_freq": options.get("frequency_penalty", 0.0),
            "penalty_present": options.get("presence_penalty", 0.0),
        }
        try:
            return GrammarCheckedGreedy(self, options["grammar"], penalties)
        except (AttributeError, TypeError, ctypes.ArgumentError):
            # Another llama-cpp-python whose internals differ: its own chain still decodes, only slower.
            return original(self, **options)

    init_sampler.grammar_checked = True  # type: ignore[attr-defined]
    llama_cpp.Llama._init_sampler = init_sampler
