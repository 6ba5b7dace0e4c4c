"""The token-level interface over every registered backbone kind: ``forward_features`` gives a `FeatureMap`,
``pool_features`` of it is ``forward``, and padding (text tokens, audio frames) never reaches the pooled vector."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transferlab.backbones import Backbone, FeatureMap, create_backbone
from transferlab.backbones.pooling import pool_feature_map

transformers = pytest.importorskip("transformers")

from test_audio_backbones import TINY_WAV2VEC2_STYLE as TINY_WAV2VEC2, TINY_WHISPER  # noqa: E402

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "man", "is", "eating", "food", "the", "new", "movie", "."]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict:
    """Tiny random Hugging Face models saved as hub models are: a BERT with its tokenizer, a layer-norm wav2vec2
    (it takes the attention mask) and a Whisper encoder, each with its feature extractor."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    bert = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=37, max_position_embeddings=64)
    transformers.BertModel(bert).save_pretrained(root / "bert")
    transformers.BertTokenizer(str(root / "vocab.txt"), model_max_length=64).save_pretrained(root / "bert")
    wav2vec2 = transformers.Wav2Vec2Config(**TINY_WAV2VEC2, feat_extract_norm="layer", do_stable_layer_norm=True)
    transformers.Wav2Vec2Model(wav2vec2).save_pretrained(root / "wav2vec2")
    transformers.Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True,
                                          return_attention_mask=True).save_pretrained(root / "wav2vec2")
    transformers.WhisperModel(transformers.WhisperConfig(**TINY_WHISPER)).save_pretrained(root / "whisper")
    transformers.WhisperFeatureExtractor(feature_size=80).save_pretrained(root / "whisper")
    return {"bert": root / "bert", "wav2vec2": root / "wav2vec2", "whisper": root / "whisper"}


def _waves(*seconds: float) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.normal(0, 0.1, int(s * 16000)).astype(np.float32) for s in seconds]


IMAGE_CASES = [
    ("efficientnet_lite0", {"image_size": 64}, 4),
    ("lenet", {}, 4),
    ("resnet18", {"pretrained": False, "image_size": 64}, 4),
    ("resnet18", {"pretrained": False, "image_size": 64, "pool": "flatten"}, 4),
    ("vit_tiny_patch16_224", {"pretrained": False, "image_size": 32}, 3),
    ("torchvision:mobilenet_v2", {"pretrained": False, "image_size": 64}, 4),
    ("torchvision:vgg16", {"pretrained": False, "pool": "flatten", "image_size": 32}, 4),
    ("torchvision:densenet121", {"pretrained": False, "image_size": 64}, 3),  # pooled vector as one token
]


def _image_backbone(name, kwargs):
    try:
        return create_backbone(name, **kwargs)
    except Exception as exc:  # noqa: BLE001 - e.g. an image-size rule of a timm transformer
        pytest.skip(f"{name} cannot be built here: {exc}")


def _check_interface(backbone: Backbone, batch, dims: int) -> FeatureMap:
    backbone.eval()
    with torch.no_grad():
        features = backbone.forward_features(batch)
        pooled = backbone.pool_features(features)
        direct = backbone(batch)
    assert isinstance(features, FeatureMap)
    assert features.values.dim() == dims
    if features.mask is not None:
        assert features.mask.shape == features.values.shape[:2]
    assert pooled.shape == direct.shape == (direct.shape[0], backbone.num_features)
    torch.testing.assert_close(pooled, direct, rtol=0, atol=0)
    with pytest.raises(AttributeError):
        features.values = None  # frozen: heads cannot change what another head reads
    return features


@pytest.mark.parametrize(("name", "kwargs", "dims"), IMAGE_CASES, ids=[f"{n}-{k.get('pool', 'avg')}" for n, k, _ in IMAGE_CASES])
def test_image_backbones_pool_their_feature_maps(name, kwargs, dims):
    backbone = _image_backbone(name, kwargs)
    features = _check_interface(backbone, torch.randn(2, *backbone.preprocess.input_size), dims)
    assert features.mask is None


def test_conv_feature_maps_keep_their_spatial_layout():
    backbone = create_backbone("torchvision:vgg16", pretrained=False, pool="avg", image_size=64).eval()
    with torch.no_grad():
        features = backbone.forward_features(torch.randn(1, 3, 64, 64))
    assert features.values.shape == (1, 512, 2, 2)
    assert backbone.num_features == 512


@pytest.mark.parametrize("pool", ["avg", "cls"])
def test_text_padding_does_not_change_pooled_features(model_dirs, pool):
    backbone = create_backbone(str(model_dirs["bert"]), pool=pool, max_length=16).eval()
    texts = ["a man is eating", "the new movie is a new movie , a man is eating food ."]
    batch = backbone.preprocess.collate(backbone.preprocess.encode(texts))
    features = _check_interface(backbone, batch, 3)
    assert features.mask.sum(dim=1).tolist() == batch["attention_mask"].sum(dim=1).tolist()
    assert features.mask[0].tolist().count(0) > 0  # the short text is padded
    alone = backbone.preprocess.collate(backbone.preprocess.encode(texts[:1]))
    with torch.no_grad():
        torch.testing.assert_close(backbone(batch)[0], backbone(alone)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["wav2vec2", "whisper"])
def test_hf_audio_mask_is_over_output_frames_and_padding_leaves_pooling_alone(model_dirs, family):
    backbone = create_backbone(str(model_dirs[family]), max_seconds=2.0).eval()
    waves = _waves(0.5, 1.2)
    batch = backbone.preprocess.collate(waves)
    features = _check_interface(backbone, batch, 3)
    samples = batch["attention_mask"].sum(dim=1)
    assert features.mask.sum(dim=1).tolist() == backbone.frame_lengths(samples, features.values.shape[1]).tolist()
    assert features.mask[0].sum() < features.mask[1].sum()
    with torch.no_grad():
        alone = backbone(backbone.preprocess.collate(waves[:1]))
        torch.testing.assert_close(backbone(batch)[:1], alone, rtol=1e-4, atol=1e-5)


def test_wav2vec2_frame_mask_follows_the_convolutions(model_dirs):
    backbone = create_backbone(str(model_dirs["wav2vec2"])).eval()
    # 8000 samples: (8000 - 10) // 5 + 1 = 1599 frames, then (1599 - 3) // 2 + 1 = 799
    assert backbone.frame_lengths(torch.tensor([8000, 50]), 1000).tolist() == [799, 4]


def test_audio_cnn_frames_and_padding():
    backbone = create_backbone("audio-cnn", pretrained=False, max_seconds=2.0).eval()
    waves = _waves(0.4, 1.5)
    batch = backbone.preprocess.collate(waves)
    features = _check_interface(backbone, batch, 3)
    assert features.values.shape[2] == 128 and features.mask[0].sum() < features.mask[1].sum()
    with torch.no_grad():
        torch.testing.assert_close(backbone(batch)[:1], backbone(backbone.preprocess.collate(waves[:1])),
                                   rtol=1e-4, atol=1e-5)


def test_resemblyzer_tokens_are_its_partial_windows():
    pytest.importorskip("resemblyzer")
    backbone = create_backbone("resemblyzer", max_seconds=5.0).eval()
    waves = _waves(1.0, 4.0)
    batch = backbone.preprocess.collate(waves)
    features = _check_interface(backbone, batch, 3)
    assert features.values.shape[2] == 256
    windows = features.mask.sum(dim=1).tolist()
    assert windows[0] < windows[1]
    assert torch.all(features.values[0, windows[0]:] == 0)  # padding windows hold nothing
    with torch.no_grad():
        torch.testing.assert_close(backbone(batch)[:1], backbone(backbone.preprocess.collate(waves[:1])),
                                   rtol=1e-4, atol=1e-5)


def test_pooling_is_one_named_step():
    values = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    torch.testing.assert_close(pool_feature_map(values, mask, "avg")[0], values[0, :2].mean(dim=0))
    torch.testing.assert_close(pool_feature_map(values, None, "cls"), values[:, 0])
    assert pool_feature_map(values, mask, "flatten")[0, 8:].eq(0).all()  # the padded token is zeroed
    maps = torch.randn(2, 5, 3, 3)
    torch.testing.assert_close(pool_feature_map(maps, None, "avg"), maps.mean(dim=(2, 3)))
    with pytest.raises(ValueError, match="pool 'cls'.*choose 'avg' or 'flatten'"):
        pool_feature_map(maps, None, "cls")
    with pytest.raises(ValueError, match="unknown pool 'max'; choose one of avg, cls, flatten"):
        pool_feature_map(values, None, "max")
