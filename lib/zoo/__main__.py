"""``python -m lib.zoo build|list|eval``: rebuild checkpoints, print the table, re-check a figure."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lib.zoo.build import VAL_LOSS_ATOL, CorpusChanged, build, evaluate_entry
from lib.zoo.registry import SPECS, WEIGHTS_DIR, ZooEntry, entries

COLUMNS = ("name", "kind", "params", "steps", "build time", "val loss (nats/char)", "val bits/char", "what it is")
TEXT_COLUMNS = ("name", "kind", "what it is")  # left-aligned in Markdown; the figures are right-aligned


def _duration(seconds: float | None) -> str:
    """A build time for the table: whole seconds, tenths below ten seconds, '—' when not built."""
    if seconds is None:
        return "—"
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


def _cells(entry: ZooEntry) -> list[str]:
    """One table row: figures of an entry not built yet show as '—'."""
    def shown(value: object, fmt: str) -> str:
        return "—" if value is None else format(value, fmt)

    return [
        entry.name,
        entry.kind,
        shown(entry.params, ","),
        shown(entry.steps, ","),
        _duration(entry.build_seconds),
        shown(entry.val_loss_nats, ".4f"),
        shown(entry.val_bpc, ".3f"),
        entry.description,
    ]


def table(directory: Path = WEIGHTS_DIR, *, markdown: bool = False) -> str:
    """The zoo's table: one row per entry, its figures as recorded in ``directory``."""
    rows = [_cells(entry) for entry in entries(directory).values()]
    if markdown:
        align = ["---" if column in TEXT_COLUMNS else "---:" for column in COLUMNS]
        return "\n".join("| " + " | ".join(row) + " |" for row in [list(COLUMNS), align, *rows])
    rows = [list(COLUMNS), *rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _build(args: argparse.Namespace) -> int:
    for name in args.names:
        record = build(name, steps=args.steps, out=args.out)
        print(
            f"{name}: val {record['val_bpc']:.3f} bits/char ({record['val_loss_nats']:.4f} nats), "
            f"{record['params']:,} params, {record['build_seconds']:.0f} s → {args.out}"
        )
    return 0


def _list(args: argparse.Namespace) -> int:
    print(table(args.dir, markdown=args.markdown))
    return 0


def _eval(args: argparse.Namespace) -> int:
    status = 0
    for name in args.names:
        try:
            recorded, measured = evaluate_entry(name, args.dir)
        except CorpusChanged as err:
            print(f"{name}: cannot compare — {err}")
            status = 1
            continue
        ok = abs(measured - recorded) <= VAL_LOSS_ATOL
        print(
            f"{name}: val {measured:.6f} nats/char, recorded {recorded:.6f} "
            f"(|Δ| = {abs(measured - recorded):.1e}, tolerance {VAL_LOSS_ATOL:g}) {'✓' if ok else '✗'}"
        )
        status |= not ok
    return status


def _known_name(name: str) -> str:
    if name not in SPECS:
        raise argparse.ArgumentTypeError(f"unknown zoo entry {name!r}; known: {', '.join(SPECS)}")
    return name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.zoo", description="The book's checkpoint zoo.")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("build", help="train (or count) entries and record their validation figures")
    p.add_argument("names", nargs="+", type=_known_name, metavar="NAME", help=", ".join(SPECS))
    p.add_argument("--steps", type=int, help="training steps instead of the recipe's (decoders only)")
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="folder for the weights and registry.json")
    p.set_defaults(run=_build)

    p = commands.add_parser("list", help="print the table of entries and their recorded figures")
    p.add_argument("--markdown", action="store_true", help="a Markdown table (docs/ZOO.md pastes it)")
    p.add_argument("--dir", type=Path, default=WEIGHTS_DIR, help="folder whose registry.json to read")
    p.set_defaults(run=_list)

    p = commands.add_parser("eval", help="recompute the validation loss of built entries and compare")
    p.add_argument("names", nargs="+", type=_known_name, metavar="NAME")
    p.add_argument("--dir", type=Path, default=WEIGHTS_DIR, help="folder holding the checkpoints")
    p.set_defaults(run=_eval)

    args = parser.parse_args(argv)
    if getattr(args, "steps", None) is not None and args.steps < 1:
        parser.error(f"--steps: expected a positive int, got {args.steps}")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
