"""``model.json`` is checked against its kind's schema: a file that is valid JSON but incomplete or wrong is one
error naming the file, what wrote it and the bad field, never a KeyError; any JSON value loads or gives a
`TransferlabError` (property-based, with hypothesis)."""

import copy
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from transferlab.api import load
from transferlab.cli import app
from transferlab.errors import TransferlabError

FIXTURES = Path(__file__).parent / "fixtures" / "runs_v0"
runner = CliRunner()


def _info(kind: str) -> dict:
    return json.loads((FIXTURES / kind / "model.json").read_text())


def _run_with(tmp_path: Path, info, kind: str = "classifier") -> Path:
    run = tmp_path / "run"
    if not run.exists():
        shutil.copytree(FIXTURES / kind, run)
    (run / "model.json").write_text(json.dumps(info))
    return run


def _predict_error(run: Path, image: Path) -> str:
    result = runner.invoke(app, ["predict", str(run), str(image)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, (KeyError, AttributeError))
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.fixture
def image(tmp_path):
    from PIL import Image

    Image.new("L", (28, 28), 128).save(tmp_path / "digit.png")
    return tmp_path / "digit.png"


def test_predict_names_a_missing_backbone(tmp_path, image):
    info = {key: value for key, value in _info("classifier").items() if key != "backbone"}
    line = _predict_error(_run_with(tmp_path, info), image)
    assert "model.json" in line and "missing 'backbone'" in line and "'transferlab-model/1'" in line


def test_predict_names_a_model_json_that_is_not_an_object(tmp_path, image):
    line = _predict_error(_run_with(tmp_path, [_info("classifier")]), image)
    assert "model.json must hold a JSON object" in line and "got list" in line


def test_predict_names_a_missing_preprocess_mean(tmp_path, image):
    info = _info("classifier")
    del info["preprocess"]["mean"]
    line = _predict_error(_run_with(tmp_path, info), image)
    assert "missing 'preprocess.mean'" in line and "'transferlab-model/1'" in line


@pytest.mark.parametrize("change, fragment", [
    (lambda info: info["head"].update(kind="forest"), "'head.kind'"),
    (lambda info: info.update(kind=["classifier"]), "has kind ['classifier']"),
    (lambda info: info["backbone"].update(image_size=4000), "do not fit"),  # would allocate 3 GB: refused first
    (lambda info: info.update(classes=[]), "'classes'"),
    (lambda info: info["preprocess"].update(std=[0.0]), "'preprocess.std.0'"),
    (lambda info: info["tasks"][1].pop("type"), "'tasks.1.type'"),
    (lambda info: info["tasks"][0].update(classes="dark|light"), "'tasks.0.classes'"),
])
def test_wrong_fields_are_named(tmp_path, change, fragment):
    kind = "multitask" if "tasks" in fragment else "classifier"
    info = _info(kind)
    change(info)
    with pytest.raises(TransferlabError, match="model.json") as error:
        load(_run_with(tmp_path, info, kind))
    assert fragment in str(error.value)


# --- any JSON value loads or gives a TransferlabError -------------------------------------------------------------

WORDS = ["image", "text", "audio", "lenet", "mlp", "linear", "bottleneck", "classification", "regression",
         "multilabel", "classifier", "multitask", "ctc", "transferlab-model/1", "<pad>", "avg", "flatten"]
LEAVES = (st.none() | st.booleans() | st.integers(-3, 600) | st.integers()
          | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12) | st.sampled_from(WORDS))
JSON = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=10) | st.sampled_from(WORDS), inner, max_size=4), max_leaves=12)
PROPERTY = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def _paths(value, prefix=()):
    yield prefix
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield from _paths(child, (*prefix, key))


@st.composite
def _mutated(draw, base: dict):
    """``base`` with one value somewhere in it replaced by any JSON value, or removed."""
    info = copy.deepcopy(base)
    path = draw(st.sampled_from(list(_paths(base))[1:]))
    parent = info
    for key in path[:-1]:
        parent = parent[key]
    if draw(st.booleans()):
        parent[path[-1]] = draw(JSON)
    elif isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent.pop(path[-1])
    return info


def _loads_or_user_error(run: Path, info) -> None:
    (run / "model.json").write_text(json.dumps(info))
    try:
        load(run)
    except TransferlabError:
        pass


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("model-info")
    return {kind: shutil.copytree(FIXTURES / kind, root / kind) for kind in ("classifier", "multitask")}


@PROPERTY
@given(info=JSON)
def test_any_json_value_loads_or_is_a_user_error(runs, info):
    _loads_or_user_error(runs["classifier"], info)


@PROPERTY
@given(info=_mutated(_info("classifier")))
def test_a_classifier_model_json_with_any_field_changed_loads_or_is_a_user_error(runs, info):
    _loads_or_user_error(runs["classifier"], info)


@PROPERTY
@given(info=_mutated(_info("multitask")))
def test_a_multitask_model_json_with_any_field_changed_loads_or_is_a_user_error(runs, info):
    _loads_or_user_error(runs["multitask"], info)
