"""Imports point one way: cli -> evals -> programs -> signatures and core."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORE_MAY_NOT = (
    "samner_dspy.programs",
    "samner_dspy.evals",
    "samner_dspy.signatures",
    "samner_dspy.training",
    "samner_dspy.scale",
    "samner_dspy.cli",
)
# Each folder of the package, and what its modules (at any depth) may not import.
FORBIDDEN = {
    "signatures": (
        "samner_dspy.programs",
        "samner_dspy.evals",
        "samner_dspy.cli",
        "samner_dspy.training",
        "samner_dspy.scale",
    ),
    "programs": ("samner_dspy.evals", "samner_dspy.cli", "samner_dspy.training", "samner_dspy.scale"),
    "evals": ("samner_dspy.cli",),
    # The core: the package root, the shipped data's loader, serving the models and the file formats.
    "samner_dspy": CORE_MAY_NOT,
    "samner_dspy/data": CORE_MAY_NOT,
    "samner_dspy/serving": CORE_MAY_NOT,
    "samner_dspy/formats": CORE_MAY_NOT,
    # Training sits beside evals: it may use programs, signatures and the core, never evals or the CLI.
    "samner_dspy/training": ("samner_dspy.evals", "samner_dspy.cli"),
    # Corpus scale sits beside them too: programs and the core, never evals or the CLI.
    "samner_dspy/scale": ("samner_dspy.evals", "samner_dspy.cli"),
}
# The package root re-exports SAMNER lazily, and the CLI sits on top of everything.
EXEMPT = {"samner_dspy/__init__.py", "samner_dspy/cli.py"}
# The package root keeps the pipeline's core types; everything else lives in a folder that says its job.
ROOT_MODULE_LIMIT = 15


def folder_of(path: Path) -> str:
    """The FORBIDDEN key that governs ``path``: its deepest listed folder."""
    relative = path.relative_to(REPO).parent.as_posix()
    while relative not in FORBIDDEN:
        if "/" not in relative:
            raise AssertionError(f"{path.relative_to(REPO)} is in a folder test_layout does not know: add its rule")
        relative = relative.rsplit("/", 1)[0]
    return relative


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def package_files() -> list[Path]:
    top_folders = {key.split("/")[0] for key in FORBIDDEN}
    return sorted(path for folder in top_folders for path in (REPO / folder).rglob("*.py"))


def test_imports_point_one_way():
    violations = []
    for path in package_files():
        relative = path.relative_to(REPO).as_posix()
        if relative in EXEMPT:
            continue
        forbidden = FORBIDDEN[folder_of(path)]
        for module in imported_modules(path):
            if module.startswith(forbidden):
                violations.append(f"{relative} imports {module}")
    assert violations == []


def test_every_folder_of_the_layout_exists_and_is_a_package():
    missing = [folder for folder in FORBIDDEN if not (REPO / folder / "__init__.py").is_file()]
    assert missing == []


def test_a_module_in_an_unknown_folder_fails_the_layout():
    import pytest

    stray = REPO / "samner_dspy" / "serving" / "nested" / "x.py"
    assert folder_of(stray) == "samner_dspy/serving"
    with pytest.raises(AssertionError, match="does not know"):
        folder_of(REPO / "elsewhere" / "x.py")


def test_the_package_root_holds_only_the_core_types():
    modules = sorted(path.name for path in (REPO / "samner_dspy").glob("*.py"))
    assert len(modules) <= ROOT_MODULE_LIMIT, modules


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
