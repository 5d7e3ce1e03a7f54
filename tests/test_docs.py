"""README.md and docs/ARCHITECTURE.md must stay true: the commands and modules they name exist."""

import importlib.util
import re

from lib.bookmodel import ROOT

README = (ROOT / "README.md").read_text()
ARCHITECTURE = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()


def test_readme_opens_with_the_two_commands():
    block = re.search(r"## Two commands\n\n```bash\n(.*?)```", README, re.S)
    assert block, "README.md must have a '## Two commands' section with one bash block"
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["make book", "make test"]


def test_every_make_target_named_in_the_docs_exists():
    targets = set(re.findall(r"^([a-z][a-z-]*):", MAKEFILE, re.M))
    named = set(re.findall(r"`make ([a-z][a-z-]*)", README + ARCHITECTURE))
    assert named and named <= targets, f"not in the Makefile: {sorted(named - targets)}"


def _is_module(dotted: str) -> bool:
    try:
        return importlib.util.find_spec(dotted) is not None
    except ImportError:  # a parent is a module, not a package
        return False


def _resolves(dotted: str) -> bool:
    """True when ``dotted`` is a module, or attributes reached from its longest module prefix."""
    parts = dotted.split(".")
    k = next(k for k in range(len(parts), 0, -1) if _is_module(".".join(parts[:k])))
    obj = importlib.import_module(".".join(parts[:k]))
    for attribute in parts[k:]:
        if not hasattr(obj, attribute):
            return False
        obj = getattr(obj, attribute)
    return True


def test_every_lib_module_named_in_the_architecture_exists():
    named = set(re.findall(r"`(lib(?:\.[a-z_][a-z0-9_]*)+)", ARCHITECTURE))
    missing = sorted(dotted for dotted in named if not _resolves(dotted))
    assert not missing, f"docs/ARCHITECTURE.md names modules or attributes that do not exist: {missing}"
