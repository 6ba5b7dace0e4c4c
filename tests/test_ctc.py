"""Speech recognition (``--method ctc``, model kind ``ctc``): transcript manifests, the CTC vocabulary, loss and
decoding, freezing by group, and one end-to-end run on a tiny randomly initialised wav2vec2 and eight spoken digits
of the Free Spoken Digit Dataset."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("jiwer")
soundfile = pytest.importorskip("soundfile")

from typer.testing import CliRunner  # noqa: E402

from transferlab.api import build_config, evaluate, fit, load, predict  # noqa: E402
from transferlab.backbones import FeatureMap, create_backbone  # noqa: E402
from transferlab.cli import app  # noqa: E402
from transferlab.data import examples_from_paths  # noqa: E402
from transferlab.data.audio_data import AudioReadError  # noqa: E402
from transferlab.data.transcripts import build_vocabulary, drop_long_clips, load_transcribed_audio  # noqa: E402
from transferlab.errors import TransferlabError  # noqa: E402
from transferlab.metrics import error_rates  # noqa: E402
from transferlab.methods.ctc import ctc_loss  # noqa: E402
from transferlab.methods.finetune import freeze_and_rates  # noqa: E402
from transferlab.models.ctc import CTCModel, ctc_greedy_decode  # noqa: E402

WORDS = "zero one two three four five six seven eight nine".split()
RATE = 8000  # the recordings' own rate: no resampling in the tests
LEGACY_RUN = Path(__file__).parent / "fixtures" / "runs_v0" / "ctc"


def _write_manifest(path: Path, rows: list[tuple[str, str]], header=("path", "transcript")) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def digits(tmp_path_factory, shared_data) -> Path:
    """Eight clips (digits 0-7 spoken by one speaker) copied beside ``train.csv`` (relative paths)."""
    recordings = shared_data / "fsdd" / "recordings"
    if not recordings.is_dir():
        pytest.skip(f"FSDD recordings not found at {recordings}")
    root = tmp_path_factory.mktemp("digits")
    (root / "clips").mkdir()
    rows = []
    for digit in range(8):
        name = f"{digit}_george_0.wav"
        shutil.copy(recordings / name, root / "clips" / name)
        rows.append((f"clips/{name}", WORDS[int(name.split("_")[0])]))
    _write_manifest(root / "train.csv", rows)
    return root


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> Path:
    """A tiny randomly initialised wav2vec2 encoder (no CTC head) and its feature extractor, saved as a hub model
    would be."""
    folder = tmp_path_factory.mktemp("encoder")
    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, conv_dim=(16, 16),
        conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        vocab_size=12,
    )
    transformers.Wav2Vec2Model(config).save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=RATE, padding_value=0.0, do_normalize=True,
                                          return_attention_mask=True).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def ctc_run(digits, tiny_encoder, tmp_path_factory):
    """One ``fit`` shared by the end-to-end tests: 6 clips train, 2 held out, test on all 8."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("runs") / "ctc"
    result = fit({"train": str(digits / "train.csv"), "test": str(digits / "train.csv"), "method": "ctc",
                  "backbone": str(tiny_encoder), "epochs": 5, "batch_size": 3, "lr": 1e-2, "head_epochs": 1,
                  "val_fraction": 0.25, "scheduler": "constant", "precision": "fp32", "out": str(out)},
                 progress=False)
    return result


# --- data and vocabulary ---------------------------------------------------------------------------------------


def test_manifest_reads_transcripts_relative_to_the_csv(digits):
    data = load_transcribed_audio(digits / "train.csv")
    assert len(data) == 8 and data.transcripts[:3] == ["zero", "one", "two"]
    assert data.paths[0] == digits / "clips" / "0_george_0.wav"
    assert data.load_waveform(0, RATE).dtype == np.float32


def test_missing_transcript_column_lists_the_columns_found(digits, tmp_path):
    manifest = _write_manifest(tmp_path / "m.csv", [(str(digits / "clips" / "0_george_0.wav"), "zero")],
                               header=("path", "text"))
    with pytest.raises(TransferlabError, match=r"no column 'transcript'.*'path', 'text'"):
        load_transcribed_audio(manifest)
    assert load_transcribed_audio(manifest, transcript_column="text").transcripts == ["zero"]


def test_zero_length_and_missing_files_are_named_or_skipped(digits, tmp_path):
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, dtype=np.float32), RATE)
    good = str(digits / "clips" / "1_george_0.wav")
    manifest = _write_manifest(tmp_path / "m.csv", [(good, "one"), ("empty.wav", "zero"), ("gone.wav", "two")])
    with pytest.raises(AudioReadError, match=r"row 2 .*empty\.wav holds no samples \(zero length\)"):
        load_transcribed_audio(manifest)
    with pytest.warns(UserWarning, match=r"skipped 2 bad audio file\(s\).*empty\.wav.*gone\.wav"):
        data = load_transcribed_audio(manifest, skip_bad_files=True)
    assert data.transcripts == ["one"]
    missing = _write_manifest(tmp_path / "missing.csv", [(good, "one"), ("gone.wav", "two")])
    with pytest.raises(AudioReadError, match=r"row 2 .*audio file not found: .*gone\.wav"):
        load_transcribed_audio(missing)


def test_fit_names_a_zero_length_clip_before_training(digits, tiny_encoder, tmp_path):
    soundfile.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), RATE)
    manifest = _write_manifest(tmp_path / "m.csv", [(str(digits / "clips" / "1_george_0.wav"), "one"),
                                                    ("empty.wav", "zero")])
    with pytest.raises(AudioReadError, match="empty.wav holds no samples"):
        fit({"train": str(manifest), "method": "ctc", "backbone": str(tiny_encoder), "out": str(tmp_path / "run")},
            progress=False)
    assert not (tmp_path / "run").exists()


def test_empty_transcript_and_word_delimiter_name_the_row(digits, tmp_path):
    good = str(digits / "clips" / "1_george_0.wav")
    with pytest.raises(TransferlabError, match=r"row 2 .*empty 'transcript'"):
        load_transcribed_audio(_write_manifest(tmp_path / "a.csv", [(good, "one"), (good, "  ")]))
    with pytest.raises(TransferlabError, match=r"row 1 .*holds '\|'"):
        load_transcribed_audio(_write_manifest(tmp_path / "b.csv", [(good, "one|two")]))


def test_clips_longer_than_max_seconds_are_left_out_of_training(digits, caplog):
    data = load_transcribed_audio(digits / "train.csv")
    seconds = sorted(soundfile.info(str(path)).duration for path in data.paths)
    kept = drop_long_clips(data, max_seconds=seconds[3])
    assert len(kept) == 4 and "training on 4 of 8 clips" in caplog.text
    with pytest.raises(TransferlabError, match="every clip .* is longer than max_seconds 0.01"):
        drop_long_clips(data, max_seconds=0.01)


def test_vocabulary_keeps_case_and_writes_the_space_as_the_word_delimiter():
    vocabulary = build_vocabulary(["one  two", "One"])
    assert list(vocabulary)[:3] == ["<pad>", "<unk>", "|"]
    assert set(vocabulary) == {"<pad>", "<unk>", "|", "O", "e", "n", "o", "t", "w"}
    assert list(vocabulary.values()) == list(range(len(vocabulary)))


def test_greedy_decoding_merges_repeats_and_keeps_letters_split_by_a_blank():
    tokens = {0: "<pad>", 1: "<unk>", 2: "|", 3: "a", 4: "b"}
    assert ctc_greedy_decode([3, 3, 0, 3, 2, 2, 1, 4, 4, 0], tokens, blank_id=0) == "aa b"
    assert ctc_greedy_decode([0, 0, 2, 0], tokens, blank_id=0) == ""


def test_error_rates_count_word_and_character_edits():
    rates = error_rates(["one two", "three"], ["one", "tree"])
    assert rates["wer"] == pytest.approx(2 / 3)  # a deleted word, a substituted word
    assert rates["cer"] == pytest.approx(5 / 12)  # " two" deleted (4), "h" deleted (1); 12 reference characters


def test_ctc_loss_is_torch_ctc_mean_over_target_lengths_and_ignores_label_padding():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 5)
    labels = torch.tensor([[3, 4, 3], [2, -100, -100]])
    frames = torch.tensor([6, 4])
    log_probs = logits.log_softmax(-1)
    per_clip = [torch.nn.functional.ctc_loss(log_probs[b, : frames[b]], labels[b, : n], frames[b : b + 1],
                                             torch.tensor([n]), reduction="sum") / n
                for b, n in enumerate([3, 1])]
    torch.testing.assert_close(ctc_loss(logits, frames, labels), torch.stack(per_clip).mean())
    # a clip too short for its transcript (3 labels with a repeat need 4 frames) counts as 0, not infinity
    assert torch.isfinite(ctc_loss(logits, torch.tensor([2, 4]), labels))


def test_ctc_without_a_backbone_is_a_clear_error(digits, tmp_path):
    with pytest.raises(TransferlabError, match="method .ctc. fine-tunes a speech encoder.*set backbone"):
        fit({"train": str(digits / "train.csv"), "method": "ctc", "out": str(tmp_path / "run")}, progress=False)


def test_offline_hub_name_is_a_clear_error():
    with pytest.raises(TransferlabError, match=r"nobody/no-such-wav2vec2.*no internet"):
        create_backbone("nobody/no-such-wav2vec2")


def test_ctc_needs_an_audio_backbone():
    with pytest.raises(TransferlabError, match="needs an audio backbone.*image backbone 'lenet'"):
        CTCModel(create_backbone("lenet"), build_vocabulary(["one"]))


@pytest.mark.parametrize("freeze, trainable_groups", [
    (None, {"embeddings", "layer.0", "layer.1", "head"}),  # the recipe: the feature encoder stays frozen
    ("all", {"head"}),
    ("2", {"layer.0", "layer.1", "head"}),  # the feature encoder and the embeddings
    ("backbone.layer.*", {"feature_encoder", "embeddings", "head"}),
    ("none", {"feature_encoder", "embeddings", "layer.0", "layer.1", "head"}),  # the user's choice wins
])
def test_feature_encoder_stays_frozen_by_default_and_freeze_names_more(tiny_encoder, tmp_path, freeze,
                                                                        trainable_groups):
    model = CTCModel(create_backbone(str(tiny_encoder)), build_vocabulary(["one two"]))
    overrides = {"train": "x.csv", "method": "ctc", "backbone": "tiny", "freeze": freeze, "out": str(tmp_path)}
    config = build_config(overrides=overrides)
    param_groups, unfreezing = freeze_and_rates(model, config, transfer=True)
    assert {group["name"].removeprefix("backbone.") for group in param_groups} == trainable_groups
    unfreezing(model, 0)  # head_epochs=1: the first epoch trains the head alone
    head_only = {name for name, param in model.named_parameters() if param.requires_grad}
    assert head_only == {"head.linear.weight", "head.linear.bias"}
    unfreezing(model, 1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {name for group, names in model.parameter_groups()
                         if group.removeprefix("backbone.") in trainable_groups for name in names}


def test_settings_that_mean_nothing_to_ctc_are_refused():
    with pytest.raises(TransferlabError, match=r"'labels_per_class'.*not to ctc.*'head'.*not to ctc"):
        build_config(overrides={"train": "x.csv", "method": "ctc", "backbone": "tiny", "labels_per_class": 5,
                                "head": "mlp", "out": "run"})


def test_old_ctc_run_directories_are_refused_with_what_to_do():
    with pytest.raises(TransferlabError, match=r"older version of transferlab.*train it again with "
                                               r"'transferlab fit --method ctc'"):
        load(LEGACY_RUN)


# --- end to end ------------------------------------------------------------------------------------------------


def test_fit_trains_the_ctc_head_and_writes_the_run_dir(ctc_run, tiny_encoder):
    run_dir = ctc_run.run_dir
    info = json.loads((run_dir / "model.json").read_text())
    assert info["kind"] == "ctc" and info["format"] == "transferlab-model/1"
    assert info["vocabulary"][:3] == ["<pad>", "<unk>", "|"] and info["transcript_column"] == "transcript"
    assert info["backbone"]["modality"] == "audio" and info["backbone"]["hf_config"]["hidden_size"] == 32
    assert {"model.safetensors", "model.json", "feature_extractor"} <= {p.name for p in run_dir.iterdir()}
    assert not (run_dir / "ctc").exists()
    losses = [row["train_loss"] for row in ctc_run.history]
    assert losses[-1] < 0.7 * losses[0], losses  # overfits six clips
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val"]["n"] == 2 and metrics["test"]["n"] == 8
    assert metrics["test"]["wer"] >= 0 and metrics["test"]["cer"] >= 0
    assert {"val_wer", "val_cer", "val_score"} <= set(ctc_run.history[-1])
    assert ctc_run.history[-1]["val_score"] == -ctc_run.history[-1]["val_cer"]
    # the convolutional feature encoder stayed frozen (the recipe); the transformer layers trained
    pretrained = transformers.Wav2Vec2Model.from_pretrained(tiny_encoder).state_dict()
    trained = ctc_run.model.backbone.model.state_dict()
    conv = "feature_extractor.conv_layers.0.conv.weight"
    assert torch.equal(trained[conv], pretrained[conv])
    layer = "encoder.layers.1.feed_forward.output_dense.weight"
    assert not torch.equal(trained[layer], pretrained[layer])


def test_reloaded_run_evaluates_and_transcribes_like_the_trained_model(ctc_run, digits):
    model = load(ctc_run.run_dir)
    assert isinstance(model, CTCModel) and not model.training
    assert model.characters == set("".join(WORDS[:8])) | {" "}  # the training characters, "|" read as the space
    data = load_transcribed_audio(digits / "train.csv")
    assert model.evaluate(data, precision="fp32") == pytest.approx(ctc_run.metrics["test"])  # the run's precision
    assert model.transcribe(data) == ctc_run.model.transcribe(data)
    scores = evaluate(ctc_run.run_dir, str(digits / "train.csv"))  # the machine's precision ("auto")
    assert scores["n"] == 8 and {"wer", "cer"} <= set(scores)
    rows = predict(ctc_run.run_dir, examples_from_paths([digits / "clips"]))
    assert rows == model.predict(load_transcribed_audio(digits / "train.csv"))
    assert all(isinstance(row["transcript"], str) for row in rows)


def test_decoding_maps_frames_through_the_vocabulary_and_stops_at_the_clip_end(ctc_run):
    model = ctc_run.model
    vocab = model.vocabulary
    frames = ["<pad>", "o", "o", "n", "<pad>", "e", "|", "<pad>", "s", "i", "x", "x", "<pad>", "<pad>"]
    logits = torch.nn.functional.one_hot(torch.tensor([[vocab[t] for t in frames]]), len(vocab)).float()
    assert model.decode(FeatureMap(logits)) == ["one six"]
    assert model.decode(FeatureMap(logits, torch.tensor([[1] * 4 + [0] * 10]))) == ["on"]  # padding frames: cut
    # the frame mask comes from the backbone: 50 samples -> (50 - 10) // 5 + 1 = 9 -> (9 - 3) // 2 + 1 = 4 frames
    batch = model.preprocess.collate([np.zeros(50, dtype=np.float32), np.zeros(400, dtype=np.float32)])
    with torch.no_grad():
        assert model.eval()(batch).lengths.tolist() == [4, 39]
    labels = model.label_ids(["one six", "two"])
    assert labels[1].tolist() == [vocab["t"], vocab["w"], vocab["o"], -100, -100, -100, -100]
    assert labels[0, 3] == vocab["|"]


def test_weights_start_a_new_run_from_a_trained_runs_encoder(ctc_run, tiny_encoder, tmp_path):
    from transferlab.methods.ctc import build_ctc_model

    config = build_config(overrides={"train": "x.csv", "method": "ctc", "backbone": str(tiny_encoder),
                                     "weights": str(ctc_run.run_dir), "out": str(tmp_path)})
    model = build_ctc_model(config, build_vocabulary(["ab"]))
    assert model.backbone.spec["weights_source"] == f"file:{ctc_run.run_dir.name}"
    trained = ctc_run.model.backbone.state_dict()
    assert all(torch.equal(value, trained[key]) for key, value in model.backbone.state_dict().items())


def test_reference_characters_outside_the_vocabulary_are_an_error(ctc_run, digits, tmp_path):
    manifest = _write_manifest(tmp_path / "oov.csv", [("clips/0_george_0.wav", "zero"),
                                                      ("clips/1_george_0.wav", "ONE é")])
    shutil.copytree(digits / "clips", tmp_path / "clips")
    with pytest.raises(TransferlabError, match=r"row 2 .*cannot write: 'E', 'N', 'O', 'é'"):
        evaluate(ctc_run.run_dir, str(manifest))


def test_predict_refuses_images_for_a_speech_run(ctc_run, tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "picture.png")
    with pytest.raises(TransferlabError, match=r"holds ImageData, but a speech-recognition model transcribes audio"):
        predict(ctc_run.run_dir, examples_from_paths([tmp_path / "picture.png"]))


def test_cli_prints_wer_cer_and_transcripts(ctc_run, digits):
    runner = CliRunner()
    result = runner.invoke(app, ["evaluate", str(ctc_run.run_dir), "--data", str(digits / "train.csv"), "-q"])
    assert result.exit_code == 0, result.output
    assert "WER: " in result.output and "CER: " in result.output
    result = runner.invoke(app, ["predict", str(ctc_run.run_dir), str(digits / "clips" / "3_george_0.wav"), "-q"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "path,transcript" and lines[1].startswith(str(digits / "clips" / "3_george_0.wav"))

