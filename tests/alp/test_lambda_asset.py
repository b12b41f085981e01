"""The Lambda code folder built at synth time imports every handler on its own, as the runtime would.

Each handler is imported in a fresh interpreter with no site-packages (-S), no PYTHON* environment (-E),
no bytecode written into the asset (-B, /var/task is read-only in Lambda too),
no script folder on the path (-P); its path is the asset folder plus a folder that holds only what the
python3.11 Lambda runtime ships (boto3, botocore and their dependencies). A module missing from the asset
fails here, not in the cloud.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from paths import REPO_ROOT  # noqa: E402

from alp.lambda_asset import (
    LambdaAssetError,
    build_lambda_asset,
    handler_modules,
    interpreter_matches_runtime,
)

ROOT = REPO_ROOT
RUNTIME_PACKAGES = ("boto3", "botocore", "jmespath", "s3transfer", "dateutil", "urllib3", "six")
HANDLERS = ("batcher", "gt_pre_annotation", "gt_post_annotation", "labeling_completion")


@pytest.fixture(scope="module")
def asset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_lambda_asset(ROOT, tmp_path_factory.mktemp("lambda") / "asset")


@pytest.fixture(scope="module")
def runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Links to the packages the Lambda runtime provides, and nothing else."""
    import importlib.util

    folder = tmp_path_factory.mktemp("runtime")
    for name in RUNTIME_PACKAGES:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, f"{name} is not installed"
        origin = Path(spec.origin)
        src = origin.parent if origin.name == "__init__.py" else origin
        (folder / src.name).symlink_to(src)
    return folder


def _import_alone(asset: Path, runtime_dir: Path, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    program = f"import sys; sys.path[:0] = [{str(asset)!r}]; sys.path.append({str(runtime_dir)!r}); {code}"
    return subprocess.run([sys.executable, "-B", "-S", "-E", "-P", "-c", program], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("handler", HANDLERS)
def test_given_the_asset_alone_when_a_handler_is_imported_then_it_loads(asset: Path, runtime_dir: Path,
                                                                        handler: str, tmp_path: Path) -> None:
    if not (ROOT / "lambdas" / f"{handler}.py").is_file():
        pytest.skip(f"lambdas/{handler}.py is not written yet")
    done = _import_alone(asset, runtime_dir, f"import lambdas.{handler} as m; assert callable(m.handler); "
                                             "import pydantic_core; print(pydantic_core.__file__)", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().startswith(str(asset)), "pydantic_core must come from the asset"


def test_given_the_isolated_interpreter_then_the_dev_environment_is_not_visible(asset: Path, runtime_dir: Path,
                                                                               tmp_path: Path) -> None:
    """The check above means something only if packages outside the asset are really unreachable."""
    done = _import_alone(asset, runtime_dir, "import numpy", tmp_path)
    assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr


def test_given_the_asset_then_it_holds_code_and_pydantic_but_not_boto3_or_caches(asset: Path) -> None:
    names = {p.name for p in asset.iterdir()}
    assert {"lambdas", "alp", "pydantic", "pydantic_core", "annotated_types", "typing_inspection",
            "typing_extensions.py"} <= names
    assert not {"boto3", "botocore", "numpy"} & names
    assert not list(asset.rglob("__pycache__"))
    assert interpreter_matches_runtime()  # this project's venv is CPython 3.11 linux x86_64, like the runtime


def test_given_the_asset_then_its_first_party_code_is_what_the_handlers_import(asset: Path) -> None:
    """Only the modules the handlers reach (lazy imports in functions included) ship, not all of ``alp/``."""
    shipped = sorted(p.relative_to(asset) for top in ("lambdas", "alp") for p in (asset / top).rglob("*")
                     if p.is_file())
    assert shipped == handler_modules(ROOT)
    names = {str(p) for p in shipped}
    assert {"alp/labeling/post_annotation.py", "alp/labeling/pre_annotation.py", "alp/geometry.py",
            "alp/settings.py"} <= names  # settings: imported inside a function of the post-annotation logic
    assert not {"alp/labeling/local.py", "alp/labeling/workflow.py", "alp/labeling/render.py", "alp/metrics.py",
                "alp/demo/__init__.py", "alp/lambda_asset.py"} & names


def test_given_the_same_sources_when_built_twice_then_the_folders_are_identical(asset: Path, tmp_path: Path) -> None:
    again = build_lambda_asset(ROOT, tmp_path / "again")
    files_a = sorted(p.relative_to(asset) for p in asset.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a[:200]:
        assert (asset / rel).read_bytes() == (again / rel).read_bytes()


def test_given_an_output_inside_the_sources_then_the_build_refuses(tmp_path: Path) -> None:
    with pytest.raises(LambdaAssetError, match="overwrite sources"):
        build_lambda_asset(ROOT, ROOT / "alp" / "asset")
    with pytest.raises(LambdaAssetError, match="not a Python package"):
        build_lambda_asset(tmp_path, tmp_path / "out")
