"""Errors a caller can catch by kind; every message names the offending value."""

from __future__ import annotations


class SamnerError(Exception):
    """Base of every error this library raises on purpose."""


class InputTextError(SamnerError, ValueError):
    """The text to annotate is not usable (not a string, empty, or only whitespace)."""


class SchemaError(SamnerError, ValueError):
    """A target schema is malformed: empty, duplicated, or with non-string labels or definitions."""


class ConfigError(SamnerError, ValueError):
    """A configuration file, mapping or environment variable is malformed."""


class DataFileError(SamnerError, ValueError):
    """A data, labelled or results file is malformed; the message names the file and the line or record."""


class EndpointUnreachableError(SamnerError, ConnectionError):
    """An LLM endpoint could not be reached; the message carries its URL."""

    def __init__(self, url: str, stage: str, reason: str) -> None:
        self.url = url
        self.stage = stage
        self.reason = reason
        super().__init__(f"cannot reach the {stage} endpoint at {url}: {reason}")


class EndpointRequestError(SamnerError, RuntimeError):
    """A stage's request failed after its retries (HTTP 429 or 5xx, a timeout, a dropped connection).

    Only the input being annotated fails: a batch records it and goes on, and a resumed run retries it.
    """

    def __init__(self, url: str, stage: str, reason: str) -> None:
        self.url = url
        self.stage = stage
        self.reason = reason
        super().__init__(f"the {stage} request to {url} failed: {reason}")


class EmbeddedModelError(SamnerError, RuntimeError):
    """The embedded model is missing, corrupt, or its server failed to start."""


class AdapterError(SamnerError, ValueError):
    """A LoRA adapter the embedded model cannot serve: not a PEFT LoRA, DoRA, a module or base architecture that
    llama.cpp's adapter format (as converted here) does not cover, or one trained on another model."""


def describe(exc: BaseException) -> str:
    """One line for an exception in output files and messages: its type and its message."""
    return f"{type(exc).__name__}: {exc}"
