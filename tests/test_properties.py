"""Property-based tests (hypothesis): whatever a user hands in -- a data spec, a CSV manifest, a text table, a YAML
config file -- either loads or raises `TransferlabError` (the command line prints it in one line); never another
exception. Each file-reading property runs in a fresh folder made the current directory, so that a generated spec
can only name files of that folder."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from transferlab.api import build_config
from transferlab.config import load_config_file
from transferlab.data import load_data
from transferlab.data.specs import KINDS, SPLITS
from transferlab.errors import TransferlabError

# the same examples every run (CI stays deterministic; no example database in the work tree); PROPERTY_EXAMPLES=1000
# explores further, with new examples each run
_EXAMPLES = os.environ.get("PROPERTY_EXAMPLES")
PROPERTY = settings(max_examples=int(_EXAMPLES or 60), deadline=None, derandomize=_EXAMPLES is None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

# names a generated spec or manifest cell may use: the sandbox's own files, and some that do not exist
FILES = ["imgs", "imgs/a", "m.csv", "t.csv", "t.tsv", "t.jsonl", "a.png", "b.png", "gone.png", "notes.txt", ".", ""]
# no path separators, "..", "~" or absolute paths: a spec must not reach outside the sandbox (e.g. walk "/")
SAFE_CHARACTERS = st.characters(blacklist_characters="/\\~", blacklist_categories=("Cs",))
SAFE_TEXT = st.text(SAFE_CHARACTERS, max_size=20).filter(lambda text: ".." not in text)


@contextmanager
def sandbox():
    """A temporary folder, made the current directory, with images in class folders, a manifest and text tables."""
    previous = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for name, value in (("a", 0), ("b", 200)):
            (root / "imgs" / name).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((8, 8), value + i, dtype=np.uint8)).save(root / "imgs" / name / f"{i}.png")
            Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(root / f"{name}.png")
        (root / "m.csv").write_text("path,label\na.png,x\nb.png,y\n")
        (root / "t.csv").write_text("text,label\ngood,1\nbad,0\n")
        (root / "t.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t0\n")
        (root / "t.jsonl").write_text('{"text": "good", "label": 1}\n{"text": "bad", "label": 0}\n')
        (root / "notes.txt").write_text("not data")
        os.chdir(root)
        try:
            yield root
        finally:
            os.chdir(previous)


def loads_or_explains(load):
    """Call ``load``; a `TransferlabError` is an answer too. Any other exception fails the property."""
    try:
        load()
    except TransferlabError:
        pass


SPECS = st.one_of(
    SAFE_TEXT,
    st.builds(lambda kind, location: f"{kind}:{location}", st.sampled_from(KINDS) | SAFE_TEXT,
              st.sampled_from(FILES) | SAFE_TEXT),
    st.builds(lambda base, split: f"{base}@{split}", st.sampled_from(FILES) | SAFE_TEXT,
              st.sampled_from([*SPLITS, "all"]) | SAFE_TEXT),
    st.sampled_from(FILES),
).filter(lambda spec: ".." not in spec and not spec.startswith(("/", "~")))


@pytest.mark.filterwarnings("ignore:skipped:UserWarning")  # skipped bad files or empty texts
@PROPERTY
@given(spec=SPECS)
def test_any_data_spec_loads_or_raises_a_transferlab_error(spec):
    with sandbox():
        loads_or_explains(lambda: load_data(spec, split_preference=("train", "all")))


MANIFEST_CELLS = st.one_of(st.sampled_from(FILES + ["x", "y", "label", "path", " ", '"', ","]), SAFE_TEXT)


def manifest_text(header: list[str], rows: list[list[str]], delimiter: str) -> str:
    return "\n".join(delimiter.join(row) for row in [header, *rows]) + "\n"


@pytest.mark.filterwarnings("ignore:skipped:UserWarning")  # skipped bad files or empty texts
@PROPERTY
@given(
    content=st.one_of(
        st.binary(max_size=300),
        st.builds(manifest_text, st.lists(st.sampled_from(["path", "label", "kind", "path ", ""]) | SAFE_TEXT,
                                          max_size=4),
                  st.lists(st.lists(MANIFEST_CELLS, max_size=4), max_size=5), st.sampled_from([",", ";"])).map(
            lambda text: text.encode("utf-8")),
    ),
    spec=st.sampled_from(["m.csv", "csv:m.csv", "m.csv@all"]),
    skip_bad_files=st.booleans(),
)
def test_any_csv_manifest_loads_or_raises_a_transferlab_error(content, spec, skip_bad_files):
    with sandbox() as root:
        (root / "m.csv").write_bytes(content)
        loads_or_explains(lambda: load_data(spec, split_preference=("all",), skip_bad_files=skip_bad_files))


TABLE_CELLS = st.one_of(st.sampled_from(["good", "bad", "1", "0", "", " ", '"', "\t", ",", "\n", "\x00"]),
                        st.text(max_size=30))


def table_text(suffix: str, header: list[str], rows: list[list[str]]) -> bytes:
    if suffix == ".jsonl":
        import json

        return "".join(json.dumps(dict(zip(header, row))) + "\n" for row in rows).encode("utf-8")
    delimiter = "\t" if suffix == ".tsv" else ","
    return manifest_text(header, rows, delimiter).encode("utf-8", errors="surrogatepass")


@pytest.mark.filterwarnings("ignore:skipped:UserWarning")  # skipped bad files or empty texts
@PROPERTY
@given(
    suffix=st.sampled_from([".csv", ".tsv", ".jsonl"]),
    header=st.lists(st.sampled_from(["text", "sentence", "label", "path", ""]) | st.text(max_size=8), max_size=4),
    rows=st.lists(st.lists(TABLE_CELLS, max_size=4), max_size=5),
    noise=st.binary(max_size=200),
    use_noise=st.booleans(),
)
def test_any_text_table_loads_or_raises_a_transferlab_error(suffix, header, rows, noise, use_noise):
    with sandbox() as root:
        table = root / f"table{suffix}"
        table.write_bytes(noise if use_noise else table_text(suffix, header, rows))
        loads_or_explains(lambda: load_data(str(table), split_preference=("all",)))


SETTING_NAMES = ["method", "train", "val", "test", "out", "epochs", "lr", "batch_size", "classes", "tasks", "head",
                 "head_hidden", "freeze", "max_image_pixels", "skip_bad_files", "seed", "resume", "overwrite",
                 "source", "target", "trade_off", "lambda", "weighting", "lora_rank"]
YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10) | st.sampled_from(
        ["finetune", "features", "multitask", "dann", "lora", "1e-3", "a,b", "all", "none", "2001-13-45"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)


@PROPERTY
@given(
    text=st.one_of(
        st.text(max_size=200),
        st.dictionaries(st.sampled_from(SETTING_NAMES) | st.text(max_size=8), YAML_VALUES, max_size=6).map(
            lambda values: yaml.safe_dump(values, allow_unicode=True)),
        st.sampled_from(["a: 2001-13-45\n", "a: 0000-00-00", "seed: !!float x", "[" * 2000, "classes: &a [*a]",
                         "out: !!binary '!!'\n", "- 1\n- 2\n", "{{", "out: [\n", "\t- x"]),
    ),
)
def test_any_yaml_config_loads_or_raises_a_transferlab_error(text):
    with sandbox() as root:
        config = root / "run.yaml"
        config.write_text(text, encoding="utf-8", errors="surrogatepass")
        loads_or_explains(lambda: build_config(load_config_file(config)))



@pytest.mark.parametrize("text", ["a: 0000-00-00\n", "lr: !!float x\n", "[" * 2000, "method: []\n", "method:\n",
                                  "method: 3\n"])
def test_yaml_the_properties_found_is_explained(tmp_path, text):
    """What the YAML property found: dates YAML cannot build (ValueError), nesting too deep (RecursionError), and
    a method that is not a string (TypeError) escaped as tracebacks."""
    config = tmp_path / "run.yaml"
    config.write_text(text)
    with pytest.raises(TransferlabError, match="run.yaml|unknown method"):
        build_config(load_config_file(config))


def test_the_properties_reach_both_outcomes():
    """The strategies are not vacuous: the sandbox's own specs load, a broken one is explained."""
    with sandbox():
        assert len(load_data("imgs", split_preference=("all",))) == 4
        assert len(load_data("m.csv", split_preference=("all",))) == 2
        assert len(load_data("t.jsonl", split_preference=("all",))) == 2
        with pytest.raises(TransferlabError):
            load_data("nope:imgs", split_preference=("all",))
