#!/usr/bin/env python3
"""Score ``classify_message`` against the labelled corpus on a tuning part and a held-out part.

Agreement with the labels on the very messages the rules were written from says little about mail
nobody has seen: a rule can fit one file. So the corpus is split once and for all, by a hash of each
file name (stable across runs, machines and corpus additions), into a tuning part (about 70%) that
rules may be fitted to and a held-out part (about 30%) that is only ever measured. The figures
printed for the held-out part are the honest estimate of agreement on unseen mail.

The metrics are exactly those of ``tests/delivery/test_classify_corpus.py`` (kinds per message,
bounce types and standard status codes per failed recipient, reasons for information), imported
from it so that the two can never drift apart.

Usage: ``.venv/bin/python scripts/score_classifier.py [--corpus DIR] [--misses tuning|held-out|all]``.
``--misses`` lists the disagreements of that part; listing held-out misses is for the final report
only, never for tuning.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.delivery.bounces import Classification, classify_message  # noqa: E402
from tests.delivery.test_classify_corpus import Agreement, corpus_dir, tally  # noqa: E402

PARTS = ("tuning", "held-out", "all")
# Share of the hash space given to the tuning part.
TUNING_SHARE = 70


def part_of(name: str) -> str:
    """``tuning`` or ``held-out`` for a corpus file, from a hash of its name alone.

    SHA-256 rather than Python's ``hash`` so that the split does not depend on the interpreter's
    hash seed; the name alone so that adding files never moves existing ones between parts.
    """
    bucket = int(hashlib.sha256(name.encode("utf-8")).hexdigest()[:8], 16) % 100
    return "tuning" if bucket < TUNING_SHARE else "held-out"


Results = dict[str, tuple[list[dict[str, object]], Classification]]


def classify_corpus(folder: Path) -> Results:
    """Each labelled file's labels and the classifier's reading of it."""
    labels = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
    return {name: (entries, classify_message((folder / name).read_bytes())) for name, entries in labels.items()}


def select(results: Results, part: str) -> Results:
    """The results of one part (``all`` keeps every file)."""
    return {name: value for name, value in results.items() if part == "all" or part_of(name) == part}


def _rate(pair: tuple[int, int]) -> str:
    return f"{100 * Agreement.rate(pair):6.2f}% ({pair[0]:3d}/{pair[1]:3d})"


def report(results: Results) -> list[str]:
    """One line per part with the four agreement figures."""
    lines = [f"{'part':<9} {'files':>5}  {'kinds':<18} {'bounce types':<18} {'statuses':<18} {'reasons':<18}"]
    for part in PARTS:
        chosen = select(results, part)
        counted = tally(chosen)
        lines.append(
            f"{part:<9} {len(chosen):>5}  {_rate(counted.kinds):<18} {_rate(counted.types):<18} "
            f"{_rate(counted.statuses):<18} {_rate(counted.reasons):<18}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--corpus", type=Path, default=None, help="the inbound folder (default: shared corpus)")
    parser.add_argument("--misses", choices=PARTS, default=None, help="list the disagreements of one part")
    args = parser.parse_args(argv)
    folder: Path = args.corpus or corpus_dir()
    if not (folder / "labels.json").is_file() and (folder / "inbound" / "labels.json").is_file():
        folder = folder / "inbound"
    if not (folder / "labels.json").is_file():
        print(f"labelled corpus not found at {folder}", file=sys.stderr)
        return 2
    results = classify_corpus(folder)
    print(f"corpus {folder}")
    for line in report(results):
        print(line)
    if args.misses:
        for miss in tally(select(results, args.misses)).misses:
            print(f"  {miss}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
