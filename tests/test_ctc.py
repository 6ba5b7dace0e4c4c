"""Speech recognition (``--method ctc``): transcript manifests, the CTC vocabulary and decoding, and one end-to-end
run on a tiny randomly initialised wav2vec2 and eight spoken digits of the Free Spoken Digit Dataset."""

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

from transferlab.api import evaluate, fit, predict  # noqa: E402
from transferlab.artifacts import load  # noqa: E402
from transferlab.cli import app  # noqa: E402
from transferlab.data import examples_from_paths  # noqa: E402
from transferlab.data.audio_data import AudioReadError  # noqa: E402
from transferlab.errors import TransferlabError  # noqa: E402
from transferlab.speech import (  # noqa: E402
    SpeechRecognizer,
    build_recognizer,
    build_vocabulary,
    ctc_greedy_decode,
    error_rates,
    load_transcribed_audio,
)

WORDS = "zero one two three four five six seven eight nine".split()
RATE = 8000  # the recordings' own rate: no resampling in the tests


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
    from transferlab.speech.ctc import _drop_long_clips

    data = load_transcribed_audio(digits / "train.csv")
    seconds = sorted(soundfile.info(str(path)).duration for path in data.paths)
    kept = _drop_long_clips(data, max_seconds=seconds[3])
    assert len(kept) == 4 and "training on 4 of 8 clips" in caplog.text
    with pytest.raises(TransferlabError, match="every clip .* is longer than max_seconds 0.01"):
        _drop_long_clips(data, max_seconds=0.01)


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


def test_ctc_without_a_backbone_is_a_clear_error(digits, tmp_path):
    with pytest.raises(TransferlabError, match="method .ctc. fine-tunes a speech encoder.*set backbone"):
        fit({"train": str(digits / "train.csv"), "method": "ctc", "out": str(tmp_path / "run")}, progress=False)


def test_offline_hub_name_is_a_clear_error():
    with pytest.raises(TransferlabError, match=r"cannot load the speech encoder 'nobody/no-such-wav2vec2'.*hub"):
        build_recognizer("nobody/no-such-wav2vec2", build_vocabulary(["one"]))


@pytest.mark.parametrize("freeze, trainable_groups", [
    ("none", {"embeddings", "layer.0", "layer.1", "head"}),
    ("all", {"head"}),
    ("layer.0", {"embeddings", "layer.1", "head"}),
])
def test_feature_encoder_stays_frozen_and_freeze_names_more(tiny_encoder, tmp_path, freeze, trainable_groups):
    from transferlab.api import build_config
    from transferlab.speech.ctc import freeze_and_rates

    recognizer = build_recognizer(str(tiny_encoder), build_vocabulary(["one two"]))
    config = build_config(overrides={"train": "x.csv", "method": "ctc", "backbone": "tiny", "freeze": freeze, "out": str(tmp_path)})
    param_groups, unfreezing = freeze_and_rates(recognizer, config, transfer=True)
    assert {group["name"] for group in param_groups} == trainable_groups
    unfreezing(recognizer, 0)  # head_epochs=1: the first epoch trains the head alone
    head_only = {name for name, param in recognizer.named_parameters() if param.requires_grad}
    assert head_only == {"model.lm_head.weight", "model.lm_head.bias"}
    unfreezing(recognizer, 1)
    trainable = {n for n, p in recognizer.named_parameters() if p.requires_grad}
    assert trainable == {name for group, names in recognizer.parameter_groups() if group in trainable_groups
                         for name in names}


# --- end to end ------------------------------------------------------------------------------------------------


def test_fit_trains_the_ctc_head_and_writes_the_run_dir(ctc_run, tiny_encoder):
    run_dir = ctc_run.run_dir
    info = json.loads((run_dir / "model.json").read_text())
    assert info["kind"] == "ctc" and info["format"] == "transferlab-model/1"
    assert {"config.json", "model.safetensors", "vocab.json"} <= {p.name for p in (run_dir / "ctc").iterdir()}
    losses = [row["train_loss"] for row in ctc_run.history]
    assert losses[-1] < 0.7 * losses[0], losses  # overfits six clips
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val"]["n"] == 2 and metrics["test"]["n"] == 8
    assert metrics["test"]["wer"] >= 0 and metrics["test"]["cer"] >= 0
    assert {"val_wer", "val_cer", "val_score"} <= set(ctc_run.history[-1])
    # the convolutional feature encoder stayed frozen; the transformer layers trained
    pretrained = transformers.Wav2Vec2Model.from_pretrained(tiny_encoder).state_dict()
    trained = ctc_run.model.model.wav2vec2.state_dict()
    conv = "feature_extractor.conv_layers.0.conv.weight"
    assert torch.equal(trained[conv], pretrained[conv])
    layer = "encoder.layers.1.feed_forward.output_dense.weight"
    assert not torch.equal(trained[layer], pretrained[layer])


def test_reloaded_run_evaluates_and_transcribes_like_the_trained_model(ctc_run, digits):
    model = load(ctc_run.run_dir)
    assert isinstance(model, SpeechRecognizer) and not model.training
    assert model.characters == set("".join(WORDS[:8])) | {" "}  # the training characters, "|" read as the space
    scores = evaluate(ctc_run.run_dir, str(digits / "train.csv"))
    assert scores == pytest.approx(ctc_run.metrics["test"])
    rows = predict(ctc_run.run_dir, examples_from_paths([digits / "clips"]))
    expected, _ = ctc_run.model.transcribe(load_transcribed_audio(digits / "train.csv"))
    assert [row["transcript"] for row in rows] == expected
    assert all(isinstance(row["transcript"], str) for row in rows)


def test_decoding_maps_frames_through_the_trained_tokenizer(ctc_run):
    model = ctc_run.model
    vocab = model.processor.tokenizer.get_vocab()
    frames = ["<pad>", "o", "o", "n", "<pad>", "e", "|", "<pad>", "s", "i", "x", "x", "<pad>", "<pad>"]
    logits = torch.nn.functional.one_hot(torch.tensor([[vocab[t] for t in frames]]), len(vocab)).float()
    samples = torch.tensor([RATE])  # one second: more frames than given, so nothing is cut
    assert model.decode(logits, samples) == ["one six"]
    assert model.frame_lengths(torch.tensor([50])).tolist() == [4]  # (50 - 10) // 5 + 1 = 9, (9 - 3) // 2 + 1 = 4
    assert model.decode(logits, torch.tensor([50])) == ["on"]  # frames past a clip's end are padding: cut


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


def test_settings_that_mean_nothing_to_ctc_are_refused():
    from transferlab.api import build_config

    with pytest.raises(TransferlabError, match="do not apply to it: labels_per_class, head"):
        build_config(overrides={"train": "x.csv", "method": "ctc", "backbone": "tiny", "labels_per_class": 5,
                                "head": "mlp", "out": "run"})
