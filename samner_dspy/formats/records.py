"""JSON Lines: the one line reader, the results' reader and the one appending writer.

A result's record is :meth:`samner_dspy.types.Document.to_dict` (``samner eval`` adds the sentence's tokens and
gold). ``samner annotate -o``, the Ray engines and ``samner eval`` write these records; ``samner view``, ``samner
export`` and the evaluation report read them. A run killed mid-write leaves at most a torn last line: the
reader skips it and the writer cuts it off before appending, so a rerun redoes exactly that input.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from samner_dspy.errors import DataFileError, SamnerError


def _upgraded(record: dict[str, Any]) -> dict[str, Any]:
    """A document record of earlier versions (``windows``, ``traces``, ``errors`` beside the text) in the one
    shape: its windows inside its trace."""
    if "traces" not in record or "trace" in record:
        return record
    record = dict(record)
    bounds, traces = record.pop("windows", None) or [], record.pop("traces", None) or []
    windows = [{"start": s, "end": e, "trace": t, "error": None} for (s, e), t in zip(bounds, traces, strict=False)]
    for error in record.pop("errors", None) or []:  # "window 30:40: reason"
        where, _, reason = error.removeprefix("window ").partition(": ")
        start, _, end = where.partition(":")
        window = next((w for w in windows if f"{w['start']}:{w['end']}" == where), None)
        if window is None and start.isdigit() and end.isdigit():
            window = {"start": int(start), "end": int(end), "trace": None, "error": None}
            windows.append(window)
        if window is not None:
            window["error"] = reason
    record["trace"] = {"stages": [], "windows": windows}
    return record


def json_lines(
    lines: Iterable[str], source: str | Path, *, skip_torn: bool = False, need_text: bool = False
) -> Iterator[tuple[str, Any]]:
    """``(where, value)`` for each non-blank line of JSON Lines ``lines``, ``where`` naming the line
    (``"<source>, line N"``) for the caller's own errors. A line that is not JSON is an error naming it, or
    skipped with ``skip_torn`` (a results file torn by a kill); ``need_text`` requires an object with a string
    ``text`` field."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}, line {number}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            if skip_torn:
                continue
            raise DataFileError(f"{where}: not valid JSON ({exc})") from exc
        if need_text and (not isinstance(value, dict) or not isinstance(value.get("text"), str)):
            raise DataFileError(f"{where}: expected an object with a string 'text' field")
        yield where, value


def read_records(path: str | Path, check: bool = True) -> Iterator[dict[str, Any]]:
    """The records of a JSON Lines results file, in file order; lines that are not JSON (torn by a kill) are
    skipped. With ``check``, a record without a string ``text`` or with non-list ``entities`` is an error
    naming the line."""
    path = Path(path)
    if not path.is_file():
        raise SamnerError(f"results file {str(path)!r} does not exist")
    with path.open(encoding="utf-8", errors="replace") as handle:
        for where, record in json_lines(handle, path, skip_torn=True, need_text=check):
            if check and not isinstance(record.get("entities", []), list):
                raise DataFileError(f"{where}: 'entities' must be a list")
            if isinstance(record, dict):
                yield _upgraded(record)


def done_keys(path: str | Path, key: str = "index") -> set[Any]:
    """The ``key`` values already written to ``path`` (none if it does not exist): what a rerun skips."""
    if not Path(path).is_file():
        return set()
    return {record[key] for record in read_records(path, check=False) if isinstance(record.get(key), str | int)}


class RecordWriter:
    """Appends one flushed line per record; a torn last line (even a torn UTF-8 character) is cut off first,
    and a complete last line only gets its missing newline."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._handle = None

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._handle is not None:
            self._handle.close()

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _seal(self.path)
            self._handle = self.path.open("a", encoding="utf-8")
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()


def _seal(path: Path) -> None:
    if not path.is_file():
        return
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1
    try:
        json.loads(data[cut:])
    except ValueError:
        with path.open("r+b") as handle:
            handle.truncate(cut)
    else:
        with path.open("ab") as handle:
            handle.write(b"\n")
