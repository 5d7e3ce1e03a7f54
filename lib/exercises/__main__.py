"""Command line: ``python -m lib.exercises generate [--check] [--ipynb]`` and ``python -m lib.exercises list``.

generate          write exercises/NN_slug.py from every solutions/NN_slug.py (only files that change)
generate --check  write nothing; exit 1 naming every exercise file that differs from what generate makes
generate --ipynb  also write exercises/NN_slug.ipynb, the notebooks instructors hand out
list              print the registered exercises: id, function, points, summary
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lib.exercises import EXERCISES
from lib.exercises.generate import MarkerError, chapter_of, exercise_path, make_exercise, masters, write_ipynb

REPO_ROOT = Path(__file__).resolve().parents[2]


def _relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def generate(root: Path, *, check_only: bool, ipynb: bool) -> int:
    """Generate (or with ``check_only`` compare) every exercise file; returns the exit status."""
    found = masters(root)
    if not found:
        print(f"error: {root / 'solutions'} holds no NN_slug.py master", file=sys.stderr)
        return 1
    stale = []
    for master in found:
        target = exercise_path(root, master)
        text = make_exercise(master.read_text(encoding="utf-8"), _relative(master, root), chapter_of(master))
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if check_only:
            if current != text:
                stale.append(_relative(target, root))
            continue
        if current != text:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            print(f"wrote {_relative(target, root)}")
        if ipynb:
            write_ipynb(text, target.with_suffix(".ipynb"))
            print(f"wrote {_relative(target.with_suffix('.ipynb'), root)}")
    for name in stale:
        print(f"error: {name} is not what the generator makes; run `python -m lib.exercises generate`", file=sys.stderr)
    return 1 if stale else 0


def list_exercises() -> int:
    """Print one line per registered exercise."""
    for exercise in EXERCISES.values():
        print(f"{exercise.id}  {exercise.function:<20} {exercise.points} pt  {exercise.summary}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.exercises", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="write exercises/ from solutions/")
    mode = gen.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="write nothing; exit 1 if a committed file is stale")
    mode.add_argument("--ipynb", action="store_true", help="also write the .ipynb notebooks for students")
    gen.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root (default: this checkout)")
    commands.add_parser("list", help="print the registered exercises")
    args = parser.parse_args(argv)
    if args.command == "list":
        return list_exercises()
    try:
        return generate(args.root.resolve(), check_only=args.check, ipynb=args.ipynb)
    except MarkerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
