import pytest

from transferlab.config import build_config, load_config_file
from transferlab.errors import TransferlabError


def test_flags_override_file_and_recipe_fills_the_rest(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("train: data/\nepochs: 3\nlr: 0.01\nout: runs/a\n")
    config = build_config(load_config_file(config_file), {"epochs": 5, "lr": None})
    assert config.epochs == 5 and config.lr == 0.01 and config.train == "data/"


def test_seed_recipe_defaults_and_user_override():
    config = build_config(overrides={"train": "x", "out": "o", "method": "seed-recipe"})
    assert (config.backbone, config.pool, config.head, config.head_hidden, config.freeze, config.optimizer) == (
        "torchvision:vgg16", "flatten", "mlp", [1024], "all", "adam")
    assert build_config(overrides={"train": "x", "out": "o", "method": "seed-recipe", "epochs": 2}).epochs == 2


def test_features_defaults_to_logistic_head():
    assert build_config(overrides={"train": "x", "out": "o", "method": "features"}).head == "logistic"


def test_unknown_key_names_it_and_suggests(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("train: data/\nout: o\nepoch: 3\n")
    with pytest.raises(TransferlabError, match=r"unknown setting 'epoch'.*did you mean 'epochs'"):
        build_config(load_config_file(config_file), source=str(config_file))


def test_invalid_values_are_named():
    with pytest.raises(TransferlabError, match=r"invalid 'epochs'.*got 0"):
        build_config(overrides={"train": "x", "out": "o", "epochs": 0})
    with pytest.raises(TransferlabError, match=r"invalid 'method'"):
        build_config(overrides={"train": "x", "out": "o", "method": "magic"})
    with pytest.raises(TransferlabError, match=r"logistic"):
        build_config(overrides={"train": "x", "out": "o", "method": "finetune", "head": "logistic"})
    with pytest.raises(TransferlabError, match=r"missing required setting 'train'"):
        build_config(overrides={"out": "o"})


def test_bad_config_files(tmp_path):
    with pytest.raises(TransferlabError, match="config file not found"):
        load_config_file(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(TransferlabError, match="not valid YAML"):
        load_config_file(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(TransferlabError, match="mapping"):
        load_config_file(listing)
