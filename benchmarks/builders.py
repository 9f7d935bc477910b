"""Examples per second of the training-data builders, on synthetic records in the public formats.

    python benchmarks/builders.py --records 5000

Writes a Pile-NER-type JSON array and an IEPile JSON Lines file of ``--records`` synthetic records each
to a temporary folder, then times ``samner_dspy.training.builders.build`` on them end to end (streaming
read, parsing, grounding, ``<ENT>`` tagging, rendering by the stage's adapter, de-duplication, writing).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

from samner_dspy.adapters import IEPILE_NER_INSTRUCTION
from samner_dspy.training.builders import build
from samner_dspy.training.sources import iter_records

FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "John", "Margaret", "Niklaus"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "McCarthy", "Hamilton", "Wirth"]
ORGS = ["IBM", "Bell Labs", "Xerox PARC", "Stanford University", "CERN", "the Royal Society", "NASA", "ETH Zurich"]
PLACES = ["London", "Zurich", "Boston", "Geneva", "Palo Alto", "Cambridge", "Amsterdam", "Houston"]
WORKS = ["The Art of Computer Programming", "Structured Programming", "Pascal", "Algol 60", "Lisp", "COBOL"]


def sentence(rng: random.Random) -> tuple[str, dict[str, list[str]]]:
    person = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    org, place, work = rng.choice(ORGS), rng.choice(PLACES), rng.choice(WORKS)
    text = (
        f"In {rng.randint(1940, 2020)}, {person} joined {org} in {place}, where the work on {work} "
        f"took {rng.randint(2, 30)} years and involved {rng.randint(3, 400)} people."
    )
    return text, {"person": [person], "organization": [org], "location": [place], "work of art": [work]}


def pile_ner_records(count: int, rng: random.Random) -> list[dict]:
    records = []
    for index in range(count):
        text, entities = sentence(rng)
        turns = [{"from": "human", "value": f"Text: {text}"}, {"from": "gpt", "value": "I've read this text."}]
        for entity_type, mentions in [*entities.items(), ("programming paradigm", [])]:
            turns.append({"from": "human", "value": f"What describes {entity_type} in the text?"})
            turns.append({"from": "gpt", "value": json.dumps(mentions)})
        records.append({"conversations": turns, "id": f"ner_{index}"})
    return records


def iepile_records(count: int, rng: random.Random) -> list[dict]:
    records = []
    for _ in range(count):
        text, entities = sentence(rng)
        schema = [*entities, "event"]
        instruction = {"instruction": IEPILE_NER_INSTRUCTION, "schema": schema, "input": text}
        output = {**entities, "event": []}
        records.append(
            {"task": "NER", "source": "synthetic", "instruction": json.dumps(instruction), "output": json.dumps(output)}
        )
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        pile = root / "pile-ner.json"
        pile.write_text(json.dumps(pile_ner_records(args.records, rng)))
        iepile = root / "train.json"
        iepile.write_text("".join(json.dumps(r) + "\n" for r in iepile_records(args.records, rng)))
        for kind, source in (("explorer", pile), ("archetype", iepile)):
            report = build(kind, iter_records(source), root / f"{kind}.jsonl")
            skipped = sum(report.skipped.values())
            print(
                f"{kind:9s} {report.examples_per_second:7.0f} examples/s  "
                f"({report.written} written, {skipped} skipped, {report.read} read in {report.seconds:.2f} s)"
            )


if __name__ == "__main__":
    main()
