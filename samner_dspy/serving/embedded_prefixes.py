"""Evaluated prompts kept on disk, so a new process starts with every stage's fixed prefix already evaluated.

A stage's prompt is its instructions and definitions, then the sentence: within a run each embedded server
re-evaluates only what differs from its last prompt, but a new process (every ``samner annotate``) paid for
every stage's whole prompt again, about 2,000 tokens and 10 s of a first sentence's 25 s on 2 cores.

The embedded server's process (:mod:`samner_dspy.serving.embedded_child`) installs this: once a request has evaluated a
long stretch of its prompt, llama.cpp's state (the KV cache of exactly the prompt's tokens) is written to the
store, with the tokens; a later request whose prompt shares a longer prefix with a stored prompt than with the
server's live state loads it first, and llama-cpp-python's own prefix matching then evaluates only the rest.
A loaded state is bit for bit what the server would hold had it evaluated that prompt itself, so a request
answers as it would after that prompt within one process (a model test compares them). As with llama.cpp's own
prefix reuse, evaluating the rest of a prompt in a batch of its own can move the logits in their last bits
against evaluating the whole prompt at once, so a greedy answer can occasionally differ from a cold server's
(8 of 100 CrossNER sentences' discovery, between two evaluation runs). The store is keyed by the model file and
the context settings, and keeps the newest entries.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"SAMNERKV1"
MIN_EVALUATED = 96
"""Prompt tokens a request must evaluate before its state is stored: below that, the prompt was mostly reused.
Low enough for the anchor's whole prompt (about 140 tokens, 70 of them IEPile's instruction, evaluated on one
core beside the explorer)."""
MIN_GAIN = 64
"""Tokens a stored prefix must save over the live state to be worth loading (a load costs a few milliseconds)."""


@dataclass
class Entry:
    path: Path
    tokens: np.ndarray


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    differs = np.flatnonzero(a[:n] != b[:n])
    return int(differs[0]) if len(differs) else n


class PrefixStore:
    """Prompt states in one folder: ``<sha1 of the tokens>.kv`` holds the tokens and llama.cpp's state data."""

    def __init__(self, folder: str | os.PathLike[str], keep: int = 16) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self._lock = threading.Lock()
        self.entries: dict[str, Entry] = {}
        for path in self.folder.glob("*.kv"):
            tokens = self._read_tokens(path)
            if tokens is not None:
                self.entries[path.stem] = Entry(path, tokens)

    @staticmethod
    def _read_tokens(path: Path) -> np.ndarray | None:
        try:
            with path.open("rb") as handle:
                if handle.read(len(MAGIC)) != MAGIC:
                    return None
                n = int(np.frombuffer(handle.read(4), dtype=np.int32)[0])
                return np.frombuffer(handle.read(4 * n), dtype=np.int32).copy()
        except (OSError, IndexError, ValueError):
            return None

    def best(self, tokens: np.ndarray) -> tuple[int, Entry | None]:
        """The stored prompt sharing the longest prefix with ``tokens``, and how long that prefix is."""
        with self._lock:
            scored = [(common_prefix(entry.tokens, tokens), entry) for entry in self.entries.values()]
        return max(scored, key=lambda pair: pair[0], default=(0, None))

    def state(self, entry: Entry) -> bytes | None:
        """The state data of an entry (None if its file went away, another process's eviction)."""
        try:
            with entry.path.open("rb") as handle:
                handle.seek(len(MAGIC) + 4 + 4 * len(entry.tokens))
                data = handle.read()
            os.utime(entry.path)  # newest first when the store is trimmed
            return data
        except OSError:
            return None

    def put(self, tokens: np.ndarray, data: bytes) -> None:
        key = hashlib.sha1(tokens.astype(np.int32).tobytes()).hexdigest()
        path = self.folder / f"{key}.kv"
        with tempfile.NamedTemporaryFile(dir=self.folder, suffix=".tmp", delete=False) as out:
            out.write(MAGIC)
            out.write(np.int32(len(tokens)).tobytes())
            out.write(tokens.astype(np.int32).tobytes())
            out.write(data)
        os.replace(out.name, path)  # another process reads a whole entry or none
        with self._lock:
            self.entries[key] = Entry(path, tokens.astype(np.int32).copy())
            self._trim()

    def _trim(self) -> None:
        def age(item: tuple[str, Entry]) -> float:
            try:
                return item[1].path.stat().st_mtime
            except OSError:
                return 0.0

        for key, entry in sorted(self.entries.items(), key=age)[: max(len(self.entries) - self.keep, 0)]:
            entry.path.unlink(missing_ok=True)
            del self.entries[key]


def _state_bytes(llama: Any) -> bytes:
    import llama_cpp

    size = llama_cpp.llama_state_get_size(llama._ctx.ctx)
    buffer = (ctypes.c_uint8 * int(size))()
    written = llama_cpp.llama_state_get_data(llama._ctx.ctx, buffer, size)
    return bytes(buffer)[: int(written)]


def _load(llama: Any, tokens: np.ndarray, data: bytes) -> bool:
    import llama_cpp

    if not data:  # a file cut short: nothing to load
        return False
    buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
    if llama_cpp.llama_state_set_data(llama._ctx.ctx, buffer, len(data)) != len(data):
        llama.reset()
        return False
    llama.input_ids[: len(tokens)] = tokens
    llama.n_tokens = len(tokens)
    llama._requires_eval = True
    return True


def install(store: PrefixStore) -> None:
    """Wrap ``llama_cpp.Llama.generate``: load the best stored prefix first, store a long fresh prompt after."""
    import llama_cpp

    original = llama_cpp.Llama.generate
    if getattr(original, "_samner_prefixes", False):
        return

    def generate(self: Any, tokens: Any, *args: Any, **kwargs: Any) -> Iterator[int]:
        prompt = np.asarray(list(tokens), dtype=np.int32)
        live = common_prefix(np.asarray(self._input_ids, dtype=np.int32), prompt)
        shared, entry = store.best(prompt)
        if entry is not None and shared > live + MIN_GAIN and (data := store.state(entry)) is not None:
            if _load(self, entry.tokens, data):
                live = shared
        steps = original(self, prompt.tolist(), *args, **kwargs)
        first = True
        for token in steps:
            # At the first token the KV cache holds exactly the prompt: the moment to store it.
            if first and len(prompt) - live >= MIN_EVALUATED and self.n_tokens == len(prompt):
                store.put(prompt, _state_bytes(self))
            first = False
            yield token

    generate._samner_prefixes = True  # type: ignore[attr-defined]
    llama_cpp.Llama.generate = generate
