"""How stage signatures become chat messages, and replies become fields.

Two renderings exist. ``IEPileAdapter`` speaks the instruction format the published IEPile anchor LoRA
was trained on. ``SamnerAdapter`` renders every stage whose adapter this project trains itself (and the
frozen calibrator); training-data builders call :func:`training_messages` with the same adapter, so a
trained adapter sees exactly the prompt it will get at inference.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import dspy
import json_repair
from dspy.adapters.chat_adapter import FieldInfoWithName
from dspy.utils.exceptions import AdapterParseError

from samner_dspy.constraints import JsonSchema, closed_object

IEPILE_NER_INSTRUCTION = (
    "You are an expert in named entity recognition. Please extract entities that match the schema "
    "definition from the input. Return an empty list if the entity type does not exist. Please respond "
    "in the format of a JSON string."
)
"""IEPile's English NER instruction, verbatim: the anchor LoRA was trained on this exact text."""


_LENIENT_READS: ContextVar[list[str] | None] = ContextVar("samner_lenient_reads", default=None)


@contextmanager
def noting_lenient_reads() -> Iterator[list[str]]:
    """Collect a note for each reply parsed here that was not valid JSON but could still be read, so the
    stage can record the repair in its trace rather than pass it off as a clean answer."""
    notes: list[str] = []
    token = _LENIENT_READS.set(notes)
    try:
        yield notes
    finally:
        _LENIENT_READS.reset(token)


def _note_if_lenient(completion: str) -> None:
    notes = _LENIENT_READS.get()
    if notes is None:
        return
    try:
        json.loads(completion)
    except ValueError:
        notes.append("not valid JSON (malformed, cut off, or wrapped in prose); read leniently")


def training_messages(
    adapter: dspy.Adapter, signature: type[dspy.Signature], inputs: dict[str, Any], outputs: dict[str, Any]
) -> list[dict[str, str]]:
    """Chat messages of one training example: the inference prompt plus the reference answer."""
    return [
        *adapter.format(signature, [], inputs),
        {"role": "assistant", "content": adapter.format_assistant_message_content(signature, outputs)},
    ]


def _string_lists(value: Any) -> dict[str, list[str]]:
    """Normalise an extractor's ``{type: [mentions]}`` answer, keeping only string mentions."""
    result: dict[str, list[str]] = {}
    for key, mentions in value.items():
        if isinstance(mentions, str):
            mentions = [mentions]
        if not isinstance(mentions, list):
            continue
        result[str(key)] = [m for m in mentions if isinstance(m, str)]
    return result


class IEPileAdapter(dspy.Adapter):
    """IEPile's NER instruction format for signatures with ``entity_types`` and ``text`` inputs.

    The prompt is one user turn holding ``{"instruction", "schema", "input"}`` as JSON; the answer is a
    JSON object mapping each type to a list of mention strings.
    """

    def _user_turn(self, signature: type[dspy.Signature], inputs: dict[str, Any]) -> str:
        payload = {
            "instruction": IEPILE_NER_INSTRUCTION,
            "schema": list(inputs["entity_types"]),
            "input": inputs["text"],
        }
        return json.dumps(payload, ensure_ascii=False)

    def _output_name(self, signature: type[dspy.Signature]) -> str:
        (name,) = signature.output_fields
        return name

    def format(
        self, signature: type[dspy.Signature], demos: list[dict[str, Any]], inputs: dict[str, Any]
    ) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        for demo in demos:
            messages.append({"role": "user", "content": self._user_turn(signature, demo)})
            messages.append({"role": "assistant", "content": self.format_assistant_message_content(signature, demo)})
        messages.append({"role": "user", "content": self._user_turn(signature, inputs)})
        return messages

    def format_assistant_message_content(
        self, signature: type[dspy.Signature], outputs: dict[str, Any], missing_field_message: str | None = None
    ) -> str:
        return json.dumps(outputs.get(self._output_name(signature), {}), ensure_ascii=False)

    def format_field_with_value(self, fields_with_values: dict[FieldInfoWithName, Any], role: str = "user") -> str:
        """Render a bare answer the way the anchor writes it (used by ``dspy.utils.DummyLM``)."""
        (value,) = fields_with_values.values()
        return json.dumps(value, ensure_ascii=False)

    def reply_schema(self, signature: type[dspy.Signature], field_schemas: dict[str, JsonSchema]) -> JsonSchema:
        """The anchor answers with the bare mapping, not wrapped in a field."""
        return field_schemas[self._output_name(signature)]

    def parse(self, signature: type[dspy.Signature], completion: str) -> dict[str, Any]:
        value = json_repair.loads(completion) if completion.strip() else None
        if not isinstance(value, dict):
            raise AdapterParseError(
                adapter_name=type(self).__name__,
                signature=signature,
                lm_response=completion,
                message="the anchor's reply is not a JSON object mapping entity types to lists of mentions",
            )
        _note_if_lenient(completion)
        return {self._output_name(signature): _string_lists(value)}


class SamnerAdapter(dspy.JSONAdapter):
    """dspy's JSON rendering, with the response format left to the stage.

    Stages build a JSON schema per request (the allowed labels depend on the caller's schema), so this
    adapter never replaces a ``response_format`` with one derived from the static signature.
    """

    def __init__(self) -> None:
        super().__init__(use_native_function_calling=False)
        self._system_messages: dict[type[dspy.Signature], str] = {}

    def format_system_message(self, signature: type[dspy.Signature]) -> str:
        # Rendering field types through pydantic costs about 2 ms a request; a signature class never changes
        # (dspy derives a new class for new instructions), so its system message is rendered once.
        if signature not in self._system_messages:
            self._system_messages[signature] = super().format_system_message(signature)
        return self._system_messages[signature]

    def _prepare_response_format(self, lm: Any, lm_kwargs: dict[str, Any], signature: Any) -> None:
        return None

    def parse(self, signature: type[dspy.Signature], completion: str) -> dict[str, Any]:
        fields = super().parse(signature, completion)
        _note_if_lenient(completion)
        return fields

    def reply_schema(self, signature: type[dspy.Signature], field_schemas: dict[str, JsonSchema]) -> JsonSchema:
        """A JSON object with one property per output field, as this adapter asks the LM to write."""
        return closed_object({name: field_schemas[name] for name in signature.output_fields})


class PlainAdapter(IEPileAdapter):
    """The plainest prompt: one user turn, the signature's one-line instruction, the label names and the text.

    For signatures with ``entity_types`` and ``text`` inputs and one list output of ``{"text", "type"}``
    objects: no system message, no definitions, no field descriptions. It is the baseline a reviewer tries
    first, so it is kept as bare as the sentence that describes it.
    """

    def _user_turn(self, signature: type[dspy.Signature], inputs: dict[str, Any]) -> str:
        instruction = " ".join(signature.instructions.split())
        return (
            f"{instruction} Entity types: {', '.join(inputs['entity_types'])}. "
            'Answer in JSON: {"entities": [{"text": ..., "type": ...}]}.\n\n'
            f"Text: {inputs['text']}"
        )

    def format_assistant_message_content(
        self, signature: type[dspy.Signature], outputs: dict[str, Any], missing_field_message: str | None = None
    ) -> str:
        name = self._output_name(signature)
        return json.dumps({name: outputs.get(name, [])}, ensure_ascii=False)

    def format_field_with_value(self, fields_with_values: dict[FieldInfoWithName, Any], role: str = "user") -> str:
        """Render a bare answer the way the model writes it (used by ``dspy.utils.DummyLM``)."""
        ((field, value),) = fields_with_values.items()
        return json.dumps({field.name: value}, ensure_ascii=False)

    def reply_schema(self, signature: type[dspy.Signature], field_schemas: dict[str, JsonSchema]) -> JsonSchema:
        return closed_object({name: field_schemas[name] for name in signature.output_fields})

    def parse(self, signature: type[dspy.Signature], completion: str) -> dict[str, Any]:
        name = self._output_name(signature)
        value = json_repair.loads(completion) if completion.strip() else None
        items = value.get(name) if isinstance(value, dict) else None
        if not isinstance(items, list):
            raise AdapterParseError(
                adapter_name=type(self).__name__,
                signature=signature,
                lm_response=completion,
                message=f'the reply is not a JSON object with an "{name}" list',
            )
        _note_if_lenient(completion)
        pairs = [i for i in items if isinstance(i, dict) and isinstance(i.get("text"), str)]
        return {name: [{"text": i["text"], "type": str(i.get("type", ""))} for i in pairs]}
