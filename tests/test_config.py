import pytest

from transferlab.api import build_config
from transferlab.config import load_config_file
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


def test_training_settings_the_logistic_head_would_ignore_are_refused_in_one_line(tmp_path):
    base = {"train": "x", "out": "o", "method": "features"}
    with pytest.raises(TransferlabError, match=r"^--epochs, --lr would be ignored by features here: the logistic head "
                       r"is fitted by scikit-learn .* \(in flags\); drop them$"):
        build_config(overrides={**base, "epochs": 5, "lr": 0.1}, source="flags")
    config_file = tmp_path / "run.yaml"
    config_file.write_text("method: features\ntrain: x\nout: o\nwarmup: 0.1\n")
    with pytest.raises(TransferlabError, match=r"--warmup would be ignored .*in .*run.yaml\); drop it"):
        build_config(load_config_file(config_file), source=str(config_file))
    assert build_config(overrides={**base, "head": "linear", "epochs": 5}).epochs == 5  # a torch head trains
    assert build_config(overrides={**base, "batch_size": 8}).batch_size == 8  # embedding batches: used


def test_unknown_key_names_it_and_suggests(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("train: data/\nout: o\nepoch: 3\n")
    with pytest.raises(TransferlabError, match=r"unknown setting 'epoch'.*did you mean 'epochs'"):
        build_config(load_config_file(config_file), source=str(config_file))


def test_invalid_values_are_named():
    with pytest.raises(TransferlabError, match=r"invalid 'epochs'.*got 0"):
        build_config(overrides={"train": "x", "out": "o", "epochs": 0})
    with pytest.raises(TransferlabError, match=r"unknown method 'magic'.*choose one of finetune, scratch"):
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


@pytest.mark.parametrize("setting, value, method, owners", [
    ("trade_off", 0.5, "finetune", r"applies to dann, cdan, dan, coral, mcc, mdd, self-training; not to finetune"),
    ("lora_r", 4, "finetune", r"applies to lora; not to finetune"),
    ("consistency", True, "dann", r"applies to self-training; not to dann"),
    ("source_share", 0.3, "dann", r"applies to joint; not to dann"),
    ("freeze", "all", "lora", r"applies to finetune, seed-recipe, .*; not to lora"),
])
def test_settings_a_method_does_not_take_are_refused_naming_the_methods_that_do(setting, value, method, owners):
    data = {"source": "a", "target": "b"} if method == "dann" else {"train": "x"}
    with pytest.raises(TransferlabError, match=rf"setting '{setting}' \(--{setting.replace('_', '-')}\) {owners}"):
        build_config(overrides={**data, "out": "o", "method": method, setting: value})


def test_a_refused_setting_in_a_config_file_names_the_file(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("train: data/\nout: o\nmethod: finetune\nlambda: 0.5\n")
    with pytest.raises(TransferlabError, match=rf"setting 'lambda' \(--lambda\) applies to joint; not to finetune \(in {config_file}\)"):
        build_config(load_config_file(config_file), source=str(config_file))


def test_every_method_has_a_settings_model_a_summary_and_its_recipe_validates():
    from transferlab.methods import METHODS

    assert {"finetune", "scratch", "features", "joint", "multitask", "lora", "dann"} <= set(METHODS)
    for name, spec in METHODS.items():
        assert spec.summary and spec.settings.model_fields["method"]
        assert set(spec.recipe) <= set(spec.settings.model_fields), name


def test_speech_recognition_refuses_the_settings_of_image_and_text_tables():
    for setting, value in [("max_image_pixels", 1000), ("text_column", "t"), ("max_length", 64), ("empty_texts", "error")]:
        with pytest.raises(TransferlabError, match=rf"setting '{setting}' .* not to ctc"):
            build_config(overrides={"train": "x.csv", "method": "ctc", "backbone": "b", "out": "o", setting: value})
    assert build_config(overrides={"train": "x", "out": "o", "max_image_pixels": 1000}).max_image_pixels == 1000
