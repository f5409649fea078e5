"""Attack on item 1 of issue 9: a Python started in the checkout must get the standard library,
not one of Parley's folders (a top-level operator/ used to shadow the stdlib `operator`)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import ROOT

STDLIB = Path(sysconfig.get_paths()["stdlib"]).resolve()
PROBE = "import operator, sys; print(operator.__file__)"


def _origin(cmd: list[str], stdin: str | None = None, **env: str) -> Path:
    res = subprocess.run(cmd, cwd=ROOT, input=stdin, capture_output=True, text=True, timeout=30,
                         env={**os.environ, **env})
    assert res.returncode == 0, res.stderr
    return Path(res.stdout.strip()).resolve()


@pytest.mark.parametrize("how", ["-c", "-S -c", "stdin", "script-in-root"])
def test_python_in_the_checkout_gets_stdlib_operator(how: str, tmp_path: Path) -> None:
    """`python -c`, `python - <<EOF` and `python script.py` (sys.path[0] = the root). `-S` is
    the sharp case: site's .pth files import the stdlib `operator` early and hide the shadow,
    a Python without them (-S, embedded, some distributions) imported the folder."""
    if how == "-c":
        origin = _origin([sys.executable, "-c", PROBE])
    elif how == "-S -c":
        origin = _origin([sys.executable, "-S", "-c", PROBE])
    elif how == "stdin":
        origin = _origin([sys.executable, "-"], stdin=PROBE)
    else:
        # A script in the root puts the root first on sys.path; PYTHONPATH does the same
        # without writing into the checkout.
        script = tmp_path / "script.py"
        script.write_text(PROBE)
        origin = _origin([sys.executable, str(script)], PYTHONPATH=str(ROOT))
    assert origin.is_relative_to(STDLIB), f"`import operator` got {origin}, not the stdlib"


def test_no_top_level_folder_or_module_shadows_the_stdlib() -> None:
    """Every importable name at the root of the checkout is checked, not only `operator`."""
    importable = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    importable |= {p.stem for p in ROOT.glob("*.py")}
    assert not importable & set(sys.stdlib_module_names), importable & set(
        sys.stdlib_module_names)


def test_the_operator_still_imports_as_parley_operator() -> None:
    """The rename did not lose the deployable: `parley.operator` comes from kube-operator/."""
    origin = _origin([sys.executable, "-c",
                      "import parley.operator.main as m; print(m.__file__)"])
    assert origin.parent == (ROOT / "kube-operator").resolve()
