"""Seconds for the README's first command after set-up: one ``samner annotate`` process, start to exit.

    python benchmarks/first_annotation.py --rounds 2 --output benchmarks/results/first_annotation.jsonl

Each round times the command in three states of the embedded servers' prefix store
(:mod:`samner_dspy.serving.embedded_prefixes`), each in a fresh ``SAMNER_HOME`` that shares the joined model file:

- ``cold``: the store off (``SAMNER_PREFIX_STORE=0``): every stage's whole prompt is evaluated;
- ``after set-up``: the store holds only what set-up's ``samner embedded check`` left (another sentence and
  schema: the stages' schema-independent instructions), which is where a new user stands;
- ``second run``: the same command again, the store holding the first run's prompts.

The command's own output is kept (``--output``) so the README can show what it really prints; each line also
says when and on which commit it was measured, since rows of several sessions share the file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from samner_dspy.serving.embedded import cache_dir, model_path

COMMAND = [
    "annotate",
    "Bob Dylan played harmonica on Blonde on Blonde, recorded in Nashville.",
    "--schema",
    "crossner:music",
]
SAMNER = Path(sys.executable).with_name("samner")


def timed(home: Path, args: list[str], store: bool = True) -> tuple[float, str]:
    env = {**os.environ, "SAMNER_HOME": str(home), "SAMNER_PREFIX_STORE": "1" if store else "0", "COLUMNS": "80"}
    env.pop("SAMNER_CONFIG", None)
    started = time.perf_counter()
    done = subprocess.run([str(SAMNER), *args], env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, done.stdout


def measured_on() -> dict[str, str | None]:
    """The date and the repository's commit (``-dirty`` with uncommitted changes) of a measurement."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=root, capture_output=True, text=True)
        revision = commit.stdout.strip() or None
    except OSError:
        revision = None
    return {"date": datetime.date.today().isoformat(), "commit": revision}


def fresh_home(root: Path, name: str) -> Path:
    home = root / name
    home.mkdir()
    (home / "models").symlink_to(cache_dir())  # the joined, verified model file: not joined again
    return home


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output", type=Path, help="append one JSON line per timed command")
    args = parser.parse_args()
    model_path()  # joined once, outside the timings
    rows = []
    measured = measured_on()
    with tempfile.TemporaryDirectory(prefix="samner-first-") as folder:
        for round_ in range(args.rounds):
            root = Path(folder) / f"round{round_}"
            root.mkdir()
            cold, _ = timed(fresh_home(root, "cold"), COMMAND, store=False)
            home = fresh_home(root, "setup")
            check, _ = timed(home, ["embedded", "check"])
            after, printed = timed(home, COMMAND)
            second, _ = timed(home, COMMAND)
            rows.append({"round": round_, "cold_s": cold, "check_s": check, "after_setup_s": after, "second_s": second})
            print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in rows[-1].items()}), flush=True)
            if args.output:
                with args.output.open("a", encoding="utf-8") as out:
                    out.write(json.dumps({**rows[-1], **measured, "printed": printed}) + "\n")
    print("\n| state | " + " | ".join(f"round {r['round'] + 1}" for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for key, title in (("cold_s", "cold (store off)"), ("after_setup_s", "after set-up"), ("second_s", "second run")):
        print(f"| {title} | " + " | ".join(f"{r[key]:.1f} s" for r in rows) + " |")
    print("\nWhat the command printed after set-up:\n")
    print(printed)


if __name__ == "__main__":
    main()
