"""The layers of DESIGN.md hold: import-linter's contracts (pyproject.toml) are kept, and no layer above the models
names a method or a kind of model."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "transferlab"


def test_import_contracts_are_kept():
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(lint).exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    result = subprocess.run([lint], cwd=SOURCE.parents[1], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module", ["api.py", "cli.py", "cli_options.py", "artifacts.py", "export/engines.py",
                                    "export/onnx_file.py", "export/inputs.py", "serving/app.py", "serving/inputs.py"])
def test_layers_above_the_models_never_branch_on_a_method_or_a_kind(module):
    from transferlab.methods import METHODS
    from transferlab.models import KINDS

    code = (SOURCE / module).read_text()
    named = [name for name in [*METHODS, *KINDS] if re.search(rf"[\"']{re.escape(name)}[\"']", code)]
    assert not named, f"{module} names {named}"
    kind_classes = [cls.__name__ for cls in KINDS.values()]
    assert not [name for name in kind_classes if name in code], f"{module} names a model class"
