"""Build the Lambda code folder at synth time, without Docker.

The folder holds ``lambdas/`` (the handlers), the modules of ``alp`` the handlers import (found by reading
the import statements from the handlers on, those inside functions included) and pydantic with its
dependencies. boto3 and botocore are left out on purpose: the Lambda Python runtime provides them. The
packages come from the running interpreter when it matches the Lambda runtime (CPython 3.11 on Linux x86_64,
whose compiled ``pydantic_core`` wheel is the one the runtime loads); otherwise pip downloads manylinux wheels
for that platform. Files are copied in a fixed order without ``__pycache__``, so an unchanged tree gives the
same folder and CDK computes the same asset hash.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.metadata
import importlib.util
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

LAMBDA_PYTHON = (3, 11)
LAMBDA_MACHINE = "x86_64"
# pydantic and what it imports at run time; boto3/botocore come with the Lambda runtime.
THIRD_PARTY = ("pydantic", "pydantic_core", "annotated_types", "typing_extensions", "typing_inspection")
DISTRIBUTIONS = ("pydantic", "pydantic-core", "annotated-types", "typing-extensions", "typing-inspection")
FIRST_PARTY = ("lambdas", "alp")  # the packages whose modules the asset takes from the source tree
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".mypy_cache", ".pytest_cache")


class LambdaAssetError(RuntimeError):
    """The asset folder cannot be built (missing source folder, package or platform wheel)."""


def interpreter_matches_runtime() -> bool:
    """True when this interpreter can donate its compiled packages to the python3.11 x86_64 runtime."""
    return (sys.implementation.name == "cpython" and sys.version_info[:2] == LAMBDA_PYTHON
            and sys.platform == "linux" and platform.machine() == LAMBDA_MACHINE)


def _module_file(root: Path, module: str) -> Path | None:
    """The source file of a first-party module (``a.b`` -> ``a/b.py`` or ``a/b/__init__.py``), if any."""
    parts = module.split(".")
    if parts[0] not in FIRST_PARTY:
        return None
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every module an import statement in ``tree`` may name, lazy imports in functions included and
    ``if TYPE_CHECKING:`` blocks left out (they never run)."""
    names: set[str] = set()
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                anchor = ".".join(package[: len(package) - node.level + 1])
                base = f"{anchor}.{node.module}" if node.module else anchor
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # ``from pkg import module``
        stack.extend(ast.iter_child_nodes(node))
    return names


def handler_modules(root: str | Path) -> list[Path]:
    """The first-party source files the handlers in ``lambdas/`` import, directly or through each other,
    with the ``__init__.py`` of every package on the way; relative to ``root``, sorted."""
    root = Path(root)
    pending = [f"lambdas.{p.stem}" for p in sorted((root / "lambdas").glob("*.py")) if p.stem != "__init__"]
    found: dict[str, Path] = {}
    while pending:
        module = pending.pop()
        if module in found:
            continue
        path = _module_file(root, module)
        if path is None:
            continue
        found[module] = path
        parts = module.split(".")
        pending.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # the packages it lives in
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        pending.extend(_imported_names(tree, module, path.name == "__init__.py"))
    return sorted(p.relative_to(root) for p in found.values())


def _copy_modules(root: Path, dest: Path) -> None:
    for rel in handler_modules(root):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / rel, target)


def _copy_installed(dest: Path) -> None:
    for module in THIRD_PARTY:
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise LambdaAssetError(f"package {module!r} is not installed in {sys.prefix}; install the project first")
        origin = Path(spec.origin)
        if origin.name == "__init__.py":
            shutil.copytree(origin.parent, dest / origin.parent.name, ignore=_SKIP)
        else:
            shutil.copyfile(origin, dest / origin.name)
    for dist_name in DISTRIBUTIONS:
        # The dist-info keeps importlib.metadata.version() working inside the function.
        dist = importlib.metadata.distribution(dist_name)
        info_dirs = {f.parts[0] for f in dist.files or () if f.parts and f.parts[0].endswith(".dist-info")}
        for name in sorted(info_dirs):
            shutil.copytree(Path(str(dist.locate_file(name))), dest / name, ignore=_SKIP)


def _pip_install_for_runtime(dest: Path) -> None:
    versions = [f"{d}=={importlib.metadata.version(d)}" for d in DISTRIBUTIONS]
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--target", str(dest),
           "--platform", "manylinux2014_x86_64", "--implementation", "cp",
           "--python-version", "{}.{}".format(*LAMBDA_PYTHON), "--only-binary=:all:", *versions]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise LambdaAssetError(
            f"this interpreter is {platform.python_implementation()} {platform.python_version()} on "
            f"{sys.platform}/{platform.machine()}, not the Lambda runtime (CPython 3.11 linux x86_64), and pip "
            f"could not fetch manylinux wheels for it:\n{done.stderr[-2000:]}"
        )


def build_lambda_asset(repo_root: str | Path, out_dir: str | Path) -> Path:
    """(Re)build the Lambda code folder ``out_dir`` from ``repo_root``; returns its path."""
    root = Path(repo_root).resolve()
    out = Path(out_dir).resolve()
    for folder in FIRST_PARTY:
        if not (root / folder / "__init__.py").is_file():
            raise LambdaAssetError(f"{root / folder} is not a Python package")
    for protected in (root, root / "lambdas", root / "alp"):
        if out == protected or protected in out.parents and protected != root:
            raise LambdaAssetError(f"refusing to build the asset into {out}: it would overwrite sources")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Unique staging and trash folders: two synths running at once (tests, make synth) never collide.
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.build-", dir=out.parent))
    try:
        _copy_modules(root, staging)
        if interpreter_matches_runtime():
            _copy_installed(staging)
        else:
            _pip_install_for_runtime(staging)
        trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        if out.exists():
            out.replace(trash / "asset")
        # A rename, so CDK never sees a half-built folder; OSError: another build put an equal one first.
        with contextlib.suppress(OSError):
            staging.replace(out)
        shutil.rmtree(trash, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
