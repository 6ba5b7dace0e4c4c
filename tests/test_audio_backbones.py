"""Audio backbones: Hugging Face encoders (tiny random configs saved locally) and the packaged Resemblyzer encoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from transferlab.errors import TransferlabError

transformers = pytest.importorskip("transformers")

from transferlab.backbones.hf_audio import create_hf_audio_backbone, rebuild_audio_backbone  # noqa: E402

TINY_WAV2VEC2_STYLE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                           conv_dim=(16, 16), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=16,
                           num_conv_pos_embedding_groups=2)
TINY_WHISPER = dict(d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                    decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37, num_mel_bins=80,
                    max_source_positions=1500, max_target_positions=32, vocab_size=64, pad_token_id=0,
                    bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)


def _tiny_model_dir(path, family: str, *, with_extractor: bool = True, **overrides):
    """A randomly initialised tiny model of ``family`` saved with ``save_pretrained`` (plus its feature extractor)."""
    if family == "whisper":
        config = transformers.WhisperConfig(**{**TINY_WHISPER, **overrides})
        model = transformers.WhisperModel(config)
        extractor = transformers.WhisperFeatureExtractor(feature_size=80)
    else:
        config_class = {"wav2vec2": transformers.Wav2Vec2Config, "hubert": transformers.HubertConfig,
                        "wavlm": transformers.WavLMConfig}[family]
        config = config_class(**{**TINY_WAV2VEC2_STYLE, **overrides})
        model = transformers.AutoModel.from_config(config)
        extractor = transformers.Wav2Vec2FeatureExtractor(
            sampling_rate=16000, do_normalize=True, return_attention_mask=config.feat_extract_norm == "layer")
    model.save_pretrained(str(path))
    if with_extractor:
        extractor.save_pretrained(str(path))
    return path


def _waves(*seconds: float) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.normal(0, 0.1, int(s * 16000)).astype(np.float32) for s in seconds]


def _check_groups(backbone) -> None:
    names = [name for _, group in backbone.parameter_groups() for name in group]
    trainable = [name for name, param in backbone.named_parameters() if param.requires_grad]
    assert len(names) == len(set(names)), "a parameter is in two groups"
    assert set(names) == set(trainable)


@pytest.mark.parametrize("family", ["wav2vec2", "hubert", "wavlm", "whisper"])
def test_hf_audio_backbone_from_local_dir(tmp_path, family):
    source = _tiny_model_dir(tmp_path / family, family)
    backbone = create_hf_audio_backbone(str(source), pretrained=True, pool="avg", max_seconds=2.0).eval()
    reference = transformers.AutoModel.from_pretrained(str(source))
    if family == "whisper":
        reference = reference.encoder
    assert backbone.model.state_dict().keys() == reference.state_dict().keys()
    assert all(torch.equal(value, reference.state_dict()[key]) for key, value in backbone.model.state_dict().items())
    assert backbone.num_features == 32 and backbone.preprocess.sampling_rate == 16000
    assert backbone.spec["name"] == str(source) and backbone.spec["modality"] == "audio"
    assert backbone.spec["weights_source"] == f"hf:{source}"
    json.dumps(backbone.spec)  # goes into model.json

    with torch.no_grad():
        features = backbone(backbone.preprocess.collate(_waves(0.5, 0.3, 0.8)))
    assert features.shape == (3, 32) and torch.isfinite(features).all()

    expected = ["feature_encoder", "layer.0", "layer.1", "encoder_norm"] if family == "whisper" else [
        "feature_encoder", "embeddings", "layer.0", "layer.1"]
    assert [name for name, _ in backbone.parameter_groups()] == expected
    _check_groups(backbone)

    rebuilt = rebuild_audio_backbone(json.loads(json.dumps(backbone.spec)))
    assert rebuilt.preprocess is None and rebuilt.num_features == 32 and rebuilt.spec["name"] == str(source)
    shapes = {key: value.shape for key, value in backbone.state_dict().items()}
    assert {key: value.shape for key, value in rebuilt.state_dict().items()} == shapes


def test_padding_does_not_change_embedding_of_layer_norm_model(tmp_path):
    source = _tiny_model_dir(tmp_path / "w2v", "wav2vec2", feat_extract_norm="layer", do_stable_layer_norm=True)
    backbone = create_hf_audio_backbone(str(source), pretrained=True, pool="avg", max_seconds=2.0).eval()
    assert backbone.passes_attention_mask
    short, long = _waves(0.4, 1.0)
    with torch.no_grad():
        alone = backbone(backbone.preprocess.collate([short]))
        padded = backbone(backbone.preprocess.collate([short, long]))
    assert torch.allclose(alone[0], padded[0], atol=1e-4)


def test_training_on_clips_shorter_than_a_time_mask(tmp_path):
    no_dropout = dict(hidden_dropout=0.0, activation_dropout=0.0, attention_dropout=0.0, feat_proj_dropout=0.0,
                      layerdrop=0.0)
    source = _tiny_model_dir(tmp_path / "w2v", "wav2vec2", mask_time_prob=0.5, mask_time_length=10, **no_dropout)
    backbone = create_hf_audio_backbone(str(source), pretrained=True, pool="avg", max_seconds=2.0).train()
    short = backbone.preprocess.collate([np.full(100, 0.1, dtype=np.float32)])  # 9 frames < 10
    assert torch.isfinite(backbone(short)).all()
    with torch.no_grad():  # longer batches are still masked while training
        long = backbone.preprocess.collate(_waves(0.5))
        assert not torch.allclose(backbone(long), backbone.eval()(long))


def test_whisper_pools_over_real_frames_only(tmp_path):
    source = _tiny_model_dir(tmp_path / "whisper", "whisper")
    backbone = create_hf_audio_backbone(str(source), pretrained=True, pool="avg", max_seconds=2.0).eval()
    short, long = _waves(0.4, 1.0)
    with torch.no_grad():
        alone = backbone(backbone.preprocess.collate([short]))
        batched = backbone(backbone.preprocess.collate([short, long]))
        hidden = backbone.model(backbone.preprocess.collate([short])["input_features"]).last_hidden_state
    assert torch.allclose(alone[0], batched[0], atol=1e-4)
    assert torch.allclose(alone[0], hidden[0, :20].mean(0), atol=1e-5)  # 0.4 s = 40 mel frames = 20 encoder frames


def test_default_feature_extractor_when_source_has_none(tmp_path):
    source = _tiny_model_dir(tmp_path / "w2v", "wav2vec2", with_extractor=False, feat_extract_norm="layer")
    backbone = create_hf_audio_backbone(str(source), pretrained=False, pool="avg", max_seconds=2.0)
    extractor = backbone.preprocess.feature_extractor
    assert isinstance(extractor, transformers.Wav2Vec2FeatureExtractor)
    assert extractor.return_attention_mask and extractor.do_normalize and extractor.sampling_rate == 16000
    assert backbone.spec["weights_source"] == "random"


def test_hf_audio_user_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TransferlabError, match="facebook/wav2vec2-base.*local directory"):
        create_hf_audio_backbone("facebook/wav2vec2-base", pretrained=True, pool="avg", max_seconds=2.0)
    with pytest.raises(TransferlabError, match="directory not found: .*missing"):
        create_hf_audio_backbone(str(tmp_path / "missing"), pretrained=True, pool="avg", max_seconds=2.0)
    transformers.HubertConfig(**TINY_WAV2VEC2_STYLE).save_pretrained(str(tmp_path / "config_only"))
    with pytest.raises(TransferlabError, match="weights of the audio model in .*config_only"):
        create_hf_audio_backbone(str(tmp_path / "config_only"), pretrained=True, pool="avg", max_seconds=2.0)
    source = _tiny_model_dir(tmp_path / "w2v", "wav2vec2")
    with pytest.raises(TransferlabError, match="'cls'.*avg"):
        create_hf_audio_backbone(str(source), pretrained=True, pool="cls", max_seconds=2.0)
    transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=37).save_pretrained(str(tmp_path / "bert"))
    with pytest.raises(TransferlabError, match="'bert'.*wav2vec2, hubert, wavlm, whisper"):
        create_hf_audio_backbone(str(tmp_path / "bert"), pretrained=False, pool="avg", max_seconds=2.0)


# --- resemblyzer -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def speaker_encoder():
    pytest.importorskip("resemblyzer")
    from transferlab.backbones import create_backbone

    return create_backbone("resemblyzer", max_seconds=10.0).eval()


@pytest.fixture(scope="module")
def fsdd_waves():
    from pathlib import Path

    from transferlab.data.audio_data import read_audio

    folder = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fsdd" / "recordings"
    if not folder.is_dir():
        pytest.skip(f"FSDD recordings not found at {folder}")
    return [read_audio(folder / name, 16000) for name in ("0_george_0.wav", "7_jackson_12.wav")]


def test_resemblyzer_matches_embed_utterance(speaker_encoder, fsdd_waves):
    from resemblyzer import VoiceEncoder
    from resemblyzer.audio import normalize_volume

    reference = VoiceEncoder(device="cpu", verbose=False)
    wave = fsdd_waves[0]
    long_wave = np.concatenate([wave] * 6)  # several partial windows
    for clip in (wave, long_wave):
        expected = reference.embed_utterance(normalize_volume(clip, -30, increase_only=True))
        with torch.no_grad():
            embedding = speaker_encoder(speaker_encoder.preprocess.collate([clip]))[0].numpy()
        assert float(embedding @ expected) > 0.999
        assert np.isclose(np.linalg.norm(embedding), 1.0, atol=1e-5)


def test_resemblyzer_batch_equals_one_at_a_time(speaker_encoder, fsdd_waves):
    clips = [fsdd_waves[0], np.concatenate([fsdd_waves[1]] * 5)]
    with torch.no_grad():
        batched = speaker_encoder(speaker_encoder.preprocess.collate(clips))
        alone = torch.cat([speaker_encoder(speaker_encoder.preprocess.collate([clip])) for clip in clips])
    assert batched.shape == (2, 256)
    assert torch.allclose(batched, alone, atol=1e-5)


def test_resemblyzer_interface_and_rebuild(speaker_encoder):
    groups = speaker_encoder.parameter_groups()
    assert [name for name, _ in groups] == ["lstm.0", "lstm.1", "lstm.2", "linear"]
    assert groups[1][1] == ["encoder.lstm.weight_ih_l1", "encoder.lstm.weight_hh_l1", "encoder.lstm.bias_ih_l1",
                            "encoder.lstm.bias_hh_l1"]
    _check_groups(speaker_encoder)
    spec = json.loads(json.dumps(speaker_encoder.spec))
    assert spec["weights_source"] == "package:resemblyzer" and spec["num_features"] == 256

    rebuilt = rebuild_audio_backbone(spec)
    assert rebuilt.preprocess is None
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in speaker_encoder.state_dict().items()}
    packaged = speaker_encoder.state_dict()["encoder.linear.weight"]
    assert not torch.equal(rebuilt.state_dict()["encoder.linear.weight"], packaged)  # random, not packaged


def test_resemblyzer_rejects_other_pools():
    pytest.importorskip("resemblyzer")
    from transferlab.backbones import create_backbone

    with pytest.raises(TransferlabError, match="'flatten'"):
        create_backbone("resemblyzer", pool="flatten")


def test_audio_cnn_ignores_padding_and_rebuilds_from_its_spec():
    """The from-scratch audio baseline: a clip alone and padded beside a longer one give the same features."""
    import torch

    from transferlab.backbones import create_backbone, rebuild_backbone

    backbone = create_backbone("audio-cnn").eval()
    short, long = torch.randn(4000) * 0.1, torch.randn(12000) * 0.1
    batch = backbone.preprocess.collate([short.numpy(), long.numpy()])
    with torch.no_grad():
        together = backbone(batch)
        alone = backbone(backbone.preprocess.collate([short.numpy()]))
    assert together.shape == (2, backbone.num_features)
    torch.testing.assert_close(together[0], alone[0], atol=1e-4, rtol=1e-4)
    names = [name for _, group in backbone.parameter_groups() for name in group]
    assert sorted(names) == sorted(name for name, _ in backbone.named_parameters())
    rebuilt = rebuild_backbone(json.loads(json.dumps(backbone.spec)))
    assert rebuilt.state_dict().keys() == backbone.state_dict().keys()
