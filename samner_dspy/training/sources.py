"""Streaming the large public sources record by record, from a local file or the Hugging Face hub."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from samner_dspy.errors import SamnerError
from samner_dspy.formats.records import json_lines

_CHUNK = 1 << 20


def _open_text(path: Path) -> TextIO:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return path.open(encoding="utf-8")


def _json_array(handle: TextIO, where: str) -> Iterator[Any]:
    """Elements of a top-level JSON array, decoded one at a time (Pile-NER ships as one big array)."""
    decoder = json.JSONDecoder()
    buffer = handle.read(_CHUNK).lstrip()
    if not buffer.startswith("["):
        raise SamnerError(f"{where}: expected a JSON array")
    buffer = buffer[1:]
    eof = False
    while True:
        position = 0
        while position < len(buffer) and buffer[position] in " \t\r\n,":
            position += 1
        buffer = buffer[position:]
        if buffer.startswith("]"):
            return
        if not buffer and eof:
            raise SamnerError(f"{where}: the JSON array is not closed")
        try:
            element, end = decoder.raw_decode(buffer)
        except json.JSONDecodeError as exc:
            if eof:
                raise SamnerError(f"{where}: invalid JSON in the array ({exc})") from exc
            more = handle.read(_CHUNK)
            eof = not more
            buffer += more
            continue
        if end == len(buffer) and not eof:  # a number or literal may continue in the next chunk
            more = handle.read(_CHUNK)
            eof = not more
            if more:
                buffer += more
                continue
        yield element
        buffer = buffer[end:]


def _values(handle: TextIO, where: str) -> Iterator[Any]:
    return (value for _, value in json_lines(handle, where))


def _first_character(path: Path) -> str:
    with _open_text(path) as handle:
        while (char := handle.read(1)) and char.isspace():
            pass
        return char


def iter_file(path: str | Path) -> Iterator[Any]:
    """Records of a local JSON Lines or JSON array file (optionally gzipped), without loading it whole."""
    path = Path(path)
    reader = _json_array if _first_character(path) == "[" else _values
    with _open_text(path) as handle:
        yield from reader(handle, str(path))


def iter_hub(name: str, data_files: str | list[str] | None = None, split: str = "train") -> Iterator[dict[str, Any]]:
    """Records of a Hugging Face dataset (a hub id or a local dataset folder), streamed."""
    try:
        from datasets import load_dataset
    except ImportError:
        raise SamnerError("reading the Hugging Face hub needs `datasets`: pip install 'samner-dspy[train]'") from None
    try:
        dataset = load_dataset(name, data_files=data_files, split=split, streaming=True)
    except Exception as exc:
        raise SamnerError(f"cannot open dataset {name!r} (data_files={data_files!r}): {exc}") from exc
    yield from dataset


def iter_records(source: str | Path, data_files: str | list[str] | None = None, split: str = "train") -> Iterator[Any]:
    """A local file is streamed directly; anything else (a folder, a hub id) goes through ``datasets``."""
    path = Path(source)
    if path.is_file():
        return iter_file(path)
    return iter_hub(str(source), data_files, split)
