"""Training files for the two adapters SAM-NER trains, rendered exactly as the stages prompt at inference.

- explorer: Pile-NER (``Universal-NER/Pile-NER-type``, UniversalNER's conversation format) becomes
  ``ExtractSpans`` examples: the passage, every entity type asked about, and the mentions per type. As in
  the authors' builder, the types are listed in a (seeded) random order in every example, so the adapter
  learns no position bias from Pile-NER's positives-first order; ``shuffle=False`` keeps that order.
- archetype: IEPile's NER records (``zjunlp/iepile``) become ``ClassifyArchetype`` examples: each
  fine-grained type is projected onto its archetype (appendix B), mentions are marked with ``<ENT>``
  tags the way the stage marks discovered entities, and the example is conditioned on the instance's
  projected schema (section 3.2) or, with ``conditioning="full"``, on all 14 archetypes. With
  ``conditioning="types"`` (labelled data) the same prompt lists the example's own fine-grained types and
  their definitions in the archetypes' place, and each mention is answered with its type: what
  ``calibration="matched"`` asks the classifier at inference. As in the
  authors' builder, numeric types (:data:`NUMERIC_TYPES`: dates, amounts, ratings) are dropped rather
  than projected onto Misc (``numeric="misc"`` projects them). Every occurrence is tagged under its own
  name, ``Paris (2)`` for a repeat, exactly as the pipeline asks at inference (``occurrences="first"`` tags
  only the first, as the authors' builder does; ``"every"`` tags every one under one name).

Each example's messages come from the stage module's own adapter and signature
(:func:`samner_dspy.adapters.training_messages`), so a trained adapter sees the inference prompt. The
builders stream, drop exact duplicates, and count every skipped record and every dropped mention by
reason. Output is chat-format JSON Lines (``{"messages": [...]}``), which TRL, LLaMA-Factory (OpenAI
format), axolotl and :mod:`samner_dspy.training.finetune` read.
"""

from __future__ import annotations

import ast
import hashlib
import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

import dspy

from samner_dspy.adapters import IEPileAdapter, training_messages
from samner_dspy.archetypes import archetype_definitions, normalize_type_name, project_training_type, project_type
from samner_dspy.formats.labelled import Sentence, read_labelled
from samner_dspy.formats.records import json_lines
from samner_dspy.grounding import Located, Unlocated, locate, resolve_overlaps
from samner_dspy.programs.archetype import ArchetypeClassifier
from samner_dspy.programs.extractor import SpanExtractor
from samner_dspy.programs.program import ground_candidates
from samner_dspy.tagging import occurrence_keys, tag_entities
from samner_dspy.types import Candidate, Span

Kind = Literal["explorer", "anchor", "archetype"]
KINDS: tuple[str, ...] = get_args(Kind)
Conditioning = Literal["instance", "full", "types"]
CONDITIONINGS: tuple[str, ...] = get_args(Conditioning)
Numeric = Literal["drop", "misc"]
Occurrences = Literal["first", "every", "each"]
OCCURRENCES: tuple[str, ...] = get_args(Occurrences)

NUMERIC_TYPES: frozenset[str] = frozenset(
    normalize_type_name(name)
    for name in (
        "cardinal", "ordinal", "percent", "money", "price", "quantity",
        "average ratings", "rating", "date", "time", "year", "hours",
    )
)  # fmt: skip
"""The IEPile types the authors' archetype builder leaves out (names compared as :func:`normalize_type_name`
compares them): values, not names, so no archetype fits them."""

PILE_NER_HUB = "Universal-NER/Pile-NER-type"
IEPILE_HUB = "zjunlp/iepile"
IEPILE_HUB_FILES = "train.json"

_QUESTION = re.compile(r"^What describes (?P<type>.+?) in the text\?$", re.DOTALL)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


class Skip(Exception):
    """A source record that yields no training example; ``reason`` is what the report counts."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Example:
    inputs: dict[str, Any]
    outputs: dict[str, Any]


@dataclass
class BuildReport:
    """What a build read, wrote, skipped and changed, with reasons; written next to the output."""

    kind: str
    source: str
    output: str
    licence: str = ""
    read: int = 0
    written: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    mentions: Counter[str] = field(default_factory=Counter)
    """Mention-level changes inside written examples (dropped or respelled), by reason."""
    seconds: float = 0.0

    @property
    def examples_per_second(self) -> float:
        return self.written / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "licence": self.licence,
            "output": self.output,
            "read": self.read,
            "written": self.written,
            "skipped": dict(self.skipped.most_common()),
            "mentions": dict(self.mentions.most_common()),
            "seconds": round(self.seconds, 3),
            "examples_per_second": round(self.examples_per_second, 1),
        }

    def summary(self) -> str:
        lines = [f"{self.kind}: read {self.read} records, wrote {self.written} examples to {self.output}"]
        lines += [f"  skipped {count}: {reason}" for reason, count in self.skipped.most_common()]
        lines += [f"  mentions {count}: {reason}" for reason, count in self.mentions.most_common()]
        return "\n".join(lines)


def _parse_list(value: str) -> list[Any]:
    """A Pile-NER answer: a JSON list, or occasionally a Python literal list."""
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise Skip("an answer is not a list") from None
    if not isinstance(parsed, list):
        raise Skip("an answer is not a list")
    return parsed


def _grounded(text: str, mentions: Iterable[Any], notes: Counter[str]) -> list[str]:
    """Mentions as the text spells them; strings not in the text are dropped (the stage would drop them)."""
    kept: list[str] = []
    for mention in mentions:
        if not isinstance(mention, str):
            notes["not a string: dropped"] += 1
            continue
        where = locate(text, mention)
        if not isinstance(where, Located):
            notes[f"{where.reason}: dropped"] += 1
            continue
        if where.surface != mention:
            notes["respelled as the text writes it"] += 1
        if where.surface not in kept:
            kept.append(where.surface)
    return kept


def pile_ner_example(record: Any, notes: Counter[str]) -> Example:
    """One Pile-NER conversation as an ``ExtractSpans`` example.

    The conversation is ``Text: <passage>``, an acknowledgement, then pairs of ``What describes <type> in
    the text?`` and a JSON list of mentions (empty for the negative types the authors sampled).
    """
    turns = record.get("conversations") if isinstance(record, dict) else None
    if not isinstance(turns, list) or not turns:
        raise Skip("no conversation")
    first = turns[0] if isinstance(turns[0], dict) else {}
    if first.get("from") != "human" or not str(first.get("value", "")).startswith("Text:"):
        raise Skip("the conversation does not open with 'Text: ...'")
    text = first["value"][len("Text:") :].strip()
    if not text:
        raise Skip("empty text")
    types: dict[str, list[str]] = {}
    asked: str | None = None
    for turn in turns[1:]:
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise Skip("a malformed turn")
        if turn.get("from") == "human":
            match = _QUESTION.match(turn["value"].strip())
            if match is None:
                raise Skip("a question that is not 'What describes <type> in the text?'")
            asked = match["type"].strip()
            continue
        if asked is None:  # the acknowledgement ("I've read this text.")
            continue
        mentions = _grounded(text, _parse_list(turn["value"]), notes)
        known = types.setdefault(asked, [])
        known.extend(m for m in mentions if m not in known)
        asked = None
    if not types:
        raise Skip("no entity type asked about")
    return Example({"entity_types": list(types), "text": text}, {"entities": types})


def shuffle_types(example: Example, rng: random.Random) -> Example:
    """The explorer example with the types its prompt lists in random order, as the authors' builder lists
    them; the answer keeps the source's order, as theirs keeps it."""
    types = list(example.inputs["entity_types"])
    rng.shuffle(types)
    return Example({**example.inputs, "entity_types": types}, example.outputs)


def _json_field(record: dict[str, Any], name: str) -> Any:
    value = record.get(name)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise Skip(f"'{name}' is not valid JSON") from None
    return value


def _first_occurrences(text: str, surfaces: Iterable[str], notes: Counter[str]) -> list[tuple[Span, Candidate]]:
    """Each mention's first whole-word occurrence, as the authors' builder tags; of overlapping ones the longest."""
    owner: dict[Span, Candidate] = {}
    for surface in surfaces:
        where = locate(text, surface)
        if not isinstance(where, Located):
            notes[f"{where.reason}: dropped"] += 1
            continue
        owner.setdefault(where.spans[0], Candidate(surface, ("gold",)))
    kept, discarded = resolve_overlaps(list(owner))
    if discarded:
        notes["overlaps a longer mention: dropped"] += len(discarded)
    return [(span, owner[span]) for span in kept]


def _every_occurrence(text: str, surfaces: Iterable[str], notes: Counter[str]) -> list[tuple[Span, Candidate]]:
    """Every occurrence of each mention, as the pipeline marks discovered entities at inference."""
    candidates = []
    for surface in surfaces:
        where = locate(text, surface)
        if isinstance(where, Unlocated):
            notes[f"{where.reason}: dropped"] += 1
        else:
            candidates.append(replace(where.as_candidate(("gold",)), surface=surface))
    located, grounding = ground_candidates(text, candidates)
    for dropped in grounding.dropped:
        notes[f"{dropped.reason}: dropped"] += 1
    return located


Projection = Callable[[str], "str | None"]
"""A fine-grained type's archetype, or None for a value type that is left out of archetype training."""


def appendix_b(numeric: Numeric = "drop") -> Projection:
    """The paper's projection (appendix B, Misc for the types it does not name); :data:`NUMERIC_TYPES` are
    left out (``numeric="drop"``) or projected onto Misc (``"misc"``)."""

    def project(fine_type: str) -> str | None:
        if numeric == "drop" and normalize_type_name(fine_type) in NUMERIC_TYPES:
            return None
        return project_type(fine_type)

    return project


def iepile_example(
    record: Any,
    notes: Counter[str],
    conditioning: Conditioning = "instance",
    numeric: Numeric = "drop",
    occurrences: Occurrences = "each",
) -> Example:
    """One IEPile NER record as a ``ClassifyArchetype`` example (see :func:`archetype_example`).

    A record is ``{"task", "source", "instruction", "output"}`` where ``instruction`` is a JSON string of
    ``{"instruction", "schema", "input"}`` and ``output`` a JSON string mapping each schema type to its
    mentions. Types project as :func:`appendix_b` says.
    """
    if not isinstance(record, dict):
        raise Skip("not a JSON object")
    if record.get("task") != "NER":
        raise Skip("not an NER record")
    instruction = _json_field(record, "instruction")
    if not isinstance(instruction, dict) or not isinstance(instruction.get("input"), str):
        raise Skip("'instruction' has no string 'input'")
    text = instruction["input"]
    schema = [t for t in instruction.get("schema") or [] if isinstance(t, str)]
    if not text.strip():
        raise Skip("empty text")
    if _CJK.search(text) or any(_CJK.search(t) for t in schema):
        raise Skip("not English (the archetype mapping is English)")
    output = _json_field(record, "output")
    if not isinstance(output, dict):
        raise Skip("'output' is not a JSON object")
    return archetype_example(text, schema, output, notes, appendix_b(numeric), conditioning, occurrences)


def archetype_example(
    text: str,
    schema: list[str],
    output: dict[str, Any],
    notes: Counter[str],
    project: Projection,
    conditioning: Conditioning = "instance",
    occurrences: Occurrences = "each",
    type_definitions: dict[str, str] | None = None,
) -> Example:
    """A ``ClassifyArchetype`` example of ``text`` whose ``output`` maps each type to its mentions.

    Mentions of a type ``project`` leaves out (a value type) are dropped. The rest are grounded and marked
    with ``<ENT>`` tags: at their first occurrence (``occurrences="first"``, the authors' training data), at
    every one under the mention's name (``"every"``), or at every one under its own name (``"each"``:
    ``Paris``, ``Paris (2)``, what the program sends at inference); of overlapping ones the longest stays.
    The example is conditioned on the archetypes of ``schema`` and the output's types (``"instance"``,
    section 3.2) or on all 14 (``"full"``). With ``"types"`` the choices are ``schema``'s types themselves,
    each defined by ``type_definitions`` (its name where that has none), and a mention is answered with its
    type; ``project`` then only says which types to leave out (None).
    """
    archetype_of: dict[str, set[str]] = {}
    kept_types: list[str] = []
    for fine_type, mentions in output.items():
        archetype = project(str(fine_type))
        if archetype is not None and conditioning == "types":
            archetype = str(fine_type)
        if archetype is None:
            if mentions:
                notes["of a numeric type: dropped"] += len(mentions) if isinstance(mentions, list) else 1
            continue
        kept_types.append(str(fine_type))
        if isinstance(mentions, str):
            mentions = [mentions]
        for mention in mentions if isinstance(mentions, list) else []:
            if isinstance(mention, str) and mention.strip():
                archetype_of.setdefault(mention, set()).add(archetype)
    if not archetype_of:
        raise Skip("no entities" if notes["of a numeric type: dropped"] == 0 else "only entities of numeric types")
    tag = _first_occurrences if occurrences == "first" else _every_occurrence
    located = tag(text, archetype_of, notes)
    if not located:
        raise Skip("no entity found in the text")
    labels: dict[str, set[str]] = {}
    for span, candidate in located:
        labels.setdefault(span.text, set()).update(archetype_of[candidate.surface])
    if any(len(archetypes) > 1 for archetypes in labels.values()):
        raise Skip(
            "a mention's types project to different archetypes" if conditioning != "types" else "a mention of two types"
        )
    spans = [span for span, _ in located]
    keys = occurrence_keys(spans) if occurrences == "each" else [span.text for span in spans]
    entities = list(dict.fromkeys(keys))
    if conditioning == "full":
        definitions = archetype_definitions()
    elif conditioning == "types":
        shown = [t for t in dict.fromkeys([*schema, *kept_types]) if project(t) is not None]
        definitions = {t: (type_definitions or {}).get(t) or t for t in shown}
    else:
        projected = {project(t) for t in [*schema, *kept_types]} - {None}
        definitions = {name: meaning for name, meaning in archetype_definitions().items() if name in projected}
    return Example(
        {"archetype_definitions": definitions, "tagged_text": tag_entities(text, spans, keys), "entities": entities},
        {"archetypes": {key: next(iter(labels[span.text])) for span, key in zip(spans, keys, strict=True)}},
    )


def type_name(label: str) -> str:
    """A corpus's tag as a type name a prompt can say: ``RATINGS_AVERAGE`` and ``Gene_or_gene_product`` become
    ``ratings average`` and ``gene or gene product``."""
    return normalize_type_name(label)


def sentence_mentions(sentence: Sentence) -> dict[str, list[str]]:
    """Each type of a labelled sentence with its distinct mentions, in the order the text has them."""
    mentions: dict[str, list[str]] = {}
    for entity in sentence.entities:
        known = mentions.setdefault(type_name(entity.label), [])
        if entity.text not in known:
            known.append(entity.text)
    return mentions


def asked_types(present: list[str], pool: Sequence[str], negatives: int, rng: random.Random) -> list[str]:
    """The types one example asks about: those present, and ``negatives`` of the pool's others (answered with
    empty lists), in a random order so that no position means "present"."""
    others = sorted(set(pool) - set(present))
    types = [*present, *rng.sample(others, min(negatives, len(others)))]
    rng.shuffle(types)
    return types


def labelled_extraction_example(sentence: Sentence, pool: Sequence[str], negatives: int, rng: random.Random) -> Example:
    """A labelled sentence as an ``ExtractSpans`` example (explorer or anchor): the types present and sampled
    absent ones, each answered with its mentions. Sentences without entities are skipped: the absent types
    already teach the empty answer."""
    mentions = sentence_mentions(sentence)
    if not mentions:
        raise Skip("no entities")
    types = asked_types(list(mentions), pool, negatives, rng)
    return Example(
        {"entity_types": types, "text": sentence.text}, {"entities": {t: mentions.get(t, []) for t in types}}
    )


def labelled_archetype_example(
    sentence: Sentence,
    notes: Counter[str],
    pool: Sequence[str],
    negatives: int,
    rng: random.Random,
    conditioning: Conditioning = "instance",
    occurrences: Occurrences = "each",
    type_definitions: dict[str, str] | None = None,
) -> Example:
    """A labelled sentence as a ``ClassifyArchetype`` example: types project as
    :func:`samner_dspy.archetypes.project_training_type` says, conditioned on the archetypes of the types an
    extraction example of the same sentence would ask about (with ``"types"``, on those types themselves)."""
    mentions = sentence_mentions(sentence)
    if not mentions:
        raise Skip("no entities")
    schema = asked_types(list(mentions), pool, negatives, rng)
    return archetype_example(
        sentence.text, schema, mentions, notes, project_training_type, conditioning, occurrences, type_definitions
    )


def stage_renderer(kind: Kind) -> tuple[dspy.Adapter, type[dspy.Signature]]:
    """The adapter and signature of the stage module itself, so builder and stage cannot disagree."""
    stage: SpanExtractor | ArchetypeClassifier
    if kind == "archetype":
        stage = ArchetypeClassifier()
    else:
        stage = SpanExtractor(kind, IEPileAdapter() if kind == "anchor" else None)
    return stage.adapter, stage.predict.signature


def build(
    kind: Kind,
    records: Iterable[Any],
    output: str | Path,
    *,
    source: str = "",
    licence: str = "",
    limit: int | None = None,
    conditioning: Conditioning = "instance",
    numeric: Numeric = "drop",
    occurrences: Occurrences = "each",
    shuffle: bool = True,
    seed: int = 0,
    type_pool: Sequence[str] | None = None,
    negatives: int = 3,
    type_definitions: dict[str, str] | None = None,
    progress: Callable[[BuildReport], None] | None = None,
) -> BuildReport:
    """Convert ``records`` into chat-format JSON Lines at ``output``; the report lands beside it.

    Records are the public sources' (Pile-NER conversations for the explorer, IEPile records for the
    archetype classifier), or labelled :class:`~samner_dspy.formats.labelled.Sentence` objects for any kind, which
    ask about their types and ``negatives`` absent ones from ``type_pool`` (see
    :func:`labelled_extraction_example`). ``conditioning``, ``numeric`` and ``occurrences`` shape archetype
    examples (see :func:`archetype_example`); ``shuffle`` and ``seed`` the order of types: the same seed, the
    same file. Exact duplicates are found before shuffling, so a shuffle cannot make a repeated record look new.
    ``type_definitions`` (``conditioning="types"``) define the types by name (:func:`read_type_definitions`).
    """
    if numeric not in ("drop", "misc"):
        raise ValueError(f"numeric must be 'drop' or 'misc', got {numeric!r}")
    if occurrences not in OCCURRENCES:
        raise ValueError(f"occurrences must be one of {', '.join(OCCURRENCES)}, got {occurrences!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if negatives < 0:
        raise ValueError(f"negatives must be 0 or more, got {negatives}")
    if conditioning not in CONDITIONINGS:
        raise ValueError(f"conditioning must be one of {', '.join(CONDITIONINGS)}, got {conditioning!r}")
    rng = random.Random(seed) if shuffle else None
    pool = [type_name(t) for t in type_pool or ()]
    definitions = {type_name(t): d for t, d in (type_definitions or {}).items()}
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    adapter, signature = stage_renderer(kind)
    report = BuildReport(kind, source, str(output), licence)
    seen: set[bytes] = set()
    started = time.perf_counter()
    with output.open("w", encoding="utf-8") as sink:
        for record in records:
            if limit is not None and report.written >= limit:
                break
            report.read += 1
            notes: Counter[str] = Counter()
            try:
                if isinstance(record, Sentence):
                    sampler = rng or random.Random(f"{seed}:{report.read}")
                    if kind == "archetype":
                        example = labelled_archetype_example(
                            record, notes, pool, negatives, sampler, conditioning, occurrences, definitions
                        )
                    else:
                        example = labelled_extraction_example(record, pool, negatives, sampler)
                elif kind == "archetype" and conditioning == "types":
                    raise ValueError("conditioning='types' examples are built from labelled sentences")
                elif kind == "archetype":
                    example = iepile_example(record, notes, conditioning, numeric, occurrences)
                elif kind == "anchor":
                    raise ValueError("anchor examples are built from labelled sentences (samner_dspy.formats.labelled)")
                else:
                    example = pile_ner_example(record, notes)
            except Skip as skip:
                report.skipped[skip.reason] += 1
                continue
            content = json.dumps([example.inputs, example.outputs], ensure_ascii=False)
            digest = hashlib.blake2b(content.encode("utf-8"), digest_size=16).digest()
            if digest in seen:
                report.skipped["duplicate of an earlier example"] += 1
                continue
            seen.add(digest)
            if kind != "archetype" and rng is not None and not isinstance(record, Sentence):
                example = shuffle_types(example, rng)
            messages = training_messages(adapter, signature, example.inputs, example.outputs)
            line = json.dumps({"messages": messages}, ensure_ascii=False)
            report.mentions.update(notes)
            sink.write(line + "\n")
            report.written += 1
            if progress is not None and report.written % 1000 == 0:
                progress(report)
    report.seconds = time.perf_counter() - started
    report_path(output).write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return report


def labelled_mix(
    files: Sequence[tuple[str, str]], per_input: int | Sequence[int] | None = None, seed: int = 0
) -> tuple[list[Sentence], list[str]]:
    """The sentences of several labelled files ``(path, format)`` and the union of their types: every sentence
    in file order, or a seeded sample of ``per_input`` sentences with entities from each file (one count for
    all, or one per file), shuffled together so that a training run stopped early has seen every corpus."""
    counts = [per_input] * len(files) if per_input is None or isinstance(per_input, int) else list(per_input)
    if len(counts) != len(files):
        raise ValueError(f"per_input gives {len(counts)} counts for {len(files)} inputs")
    if any(count is not None and count <= 0 for count in counts):
        raise ValueError(f"per_input must be positive, got {per_input}")
    rng = random.Random(seed)
    chosen: list[Sentence] = []
    pool: set[str] = set()
    for (path, data_format), count in zip(files, counts, strict=True):
        sentences = list(read_labelled(path, data_format))  # type: ignore[arg-type]
        pool.update(e.label for s in sentences for e in s.entities)
        if count is not None:
            with_entities = [s for s in sentences if s.entities]
            sentences = rng.sample(with_entities, min(count, len(with_entities)))
        chosen.extend(sentences)
    if per_input is not None:
        rng.shuffle(chosen)
    return chosen, sorted(pool)


def labelled_input(path: str) -> str | None:
    """The labelled-data format a ``samner build`` input is read as without ``--format``: BIO/CoNLL for the
    usual token-tag extensions, None (a public source's records) for JSON, JSON Lines, folders and hub ids."""
    suffix = Path(path).suffix.lower()
    return "bio" if Path(path).is_file() and suffix in (".txt", ".bio", ".conll", ".tsv", ".iob", ".iob2") else None


def report_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".report.json")


def default_source(kind: Kind) -> tuple[str, str | None]:
    """The public dataset each builder reads when no local file is given: (hub id, data files)."""
    return (PILE_NER_HUB, None) if kind == "explorer" else (IEPILE_HUB, IEPILE_HUB_FILES)


def read_type_definitions(path: str | Path) -> dict[str, str]:
    """Type definitions by type name: ``{type: definition}``, or SLIMER's layout (``{type: {"gpt_answer":
    '{"Definition": ...}'}}``, Pile-NER's 391 types), whose one-sentence ``Definition`` is kept."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: type definitions must be a JSON object of type -> definition")
    definitions: dict[str, str] = {}
    for name, value in data.items():
        if isinstance(value, dict):
            answer = value.get("gpt_answer")
            value = json.loads(answer).get("Definition") if isinstance(answer, str) else value.get("Definition")
        if isinstance(value, str) and value.strip():
            definitions[type_name(name)] = value.strip()
    return definitions


def read_examples(path: str | Path) -> Iterator[list[dict[str, str]]]:
    """The message lists of a built file, one per line."""
    with Path(path).open(encoding="utf-8") as handle:
        yield from (example["messages"] for _, example in json_lines(handle, path))
