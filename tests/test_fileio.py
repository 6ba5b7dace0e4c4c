import pytest

from transferlab.errors import TransferlabError
from transferlab.fileio import atomic_path, prepare_run_dir, read_json, write_json


def test_existing_run_dir_is_untouched_without_overwrite(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("precious")
    with pytest.raises(TransferlabError, match="already exists.*--overwrite"):
        prepare_run_dir(run, overwrite=False, resume=False)
    assert (run / "keep.txt").read_text() == "precious"
    prepare_run_dir(run, overwrite=True, resume=False)
    assert not (run / "keep.txt").exists()


def test_resume_needs_a_checkpoint(tmp_path):
    with pytest.raises(TransferlabError, match="no checkpoint"):
        prepare_run_dir(tmp_path, overwrite=False, resume=True)


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert read_json(target) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_read_json_names_bad_file(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{nope")
    with pytest.raises(TransferlabError, match="x.json is not valid JSON"):
        read_json(bad)
