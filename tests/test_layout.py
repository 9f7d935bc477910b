"""Imports point one way: cli -> evals -> programs -> signatures and core."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "signatures": ("samner_dspy.programs", "samner_dspy.evals", "samner_dspy.cli", "samner_dspy.training"),
    "programs": ("samner_dspy.evals", "samner_dspy.cli", "samner_dspy.training"),
    "evals": ("samner_dspy.cli",),
    "samner_dspy": ("samner_dspy.programs", "samner_dspy.evals", "samner_dspy.signatures", "samner_dspy.training"),
    # Training sits beside evals: it may use programs, signatures and the core, never evals or the CLI.
    "samner_dspy/training": ("samner_dspy.evals", "samner_dspy.cli"),
    # Corpus scale sits beside them too: programs and the core, never evals or the CLI.
    "samner_dspy/scale": ("samner_dspy.evals", "samner_dspy.cli"),
}
# The package root re-exports SAMNER lazily, and the CLI sits on top of everything.
EXEMPT = {"samner_dspy/__init__.py", "samner_dspy/cli.py"}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_imports_point_one_way():
    violations = []
    for folder, forbidden in FORBIDDEN.items():
        for path in sorted((REPO / folder).glob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            if relative in EXEMPT:
                continue
            for module in imported_modules(path):
                if module.startswith(forbidden):
                    violations.append(f"{relative} imports {module}")
    assert violations == []


def test_card_folders_install_under_the_package_namespace():
    """Each card folder is ``samner_dspy.<folder>``: this checkout's folder (an editable install) or a
    ``samner_dspy/<folder>`` inside an installed package, never another checkout's folder or a top-level one."""
    import importlib

    for folder in ("signatures", "programs", "evals"):
        package = Path(importlib.import_module(f"samner_dspy.{folder}").__file__).resolve().parent
        assert package == (REPO / folder).resolve() or package.parent.name == "samner_dspy", (folder, package)
        assert package.name == folder


def test_only_the_package_name_lands_at_the_top_level_of_site_packages():
    from importlib.metadata import distribution

    assert distribution("samner-dspy").read_text("top_level.txt").split() == ["samner_dspy"]
