"""Audio folders and manifests as data, decoding and resampling, bad audio files, and speech runs end to end on FSDD."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from transferlab.cli import app
from transferlab.data import load_data
from transferlab.data.audio_data import AudioData, AudioReadError, read_audio
from transferlab.errors import TransferlabError

soundfile = pytest.importorskip("soundfile")
runner = CliRunner()


def fsdd_clips(shared_data, speakers=("george", "jackson", "lucas"), per_speaker=6, digits=range(10)):
    """``(path, speaker, digit)`` of FSDD training clips (index >= 5), ``per_speaker`` each."""
    clips = []
    for speaker in speakers:
        found = [(shared_data / "fsdd" / "recordings" / f"{d}_{speaker}_{i}.wav", speaker, d)
                 for i in range(5, 50) for d in digits]
        clips += [clip for clip in found if clip[0].is_file()][:per_speaker]
    return clips


def speaker_folders(tmp_path, clips):
    """Class sub-folders, one per speaker (the layout of an image folder)."""
    for path, speaker, _ in clips:
        (tmp_path / "speakers" / speaker).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, tmp_path / "speakers" / speaker / path.name)
    return tmp_path / "speakers"


def test_audio_class_folders_and_manifests_load_as_audio_data(shared_data, tmp_path):
    clips = fsdd_clips(shared_data, per_speaker=3)
    data = load_data(str(speaker_folders(tmp_path, clips)), split_preference=("all",))
    assert isinstance(data, AudioData) and data.classes == ["george", "jackson", "lucas"] and len(data) == 9
    manifest = tmp_path / "clips.csv"
    with open(manifest, "w", newline="") as stream:
        csv.writer(stream).writerows([("path", "label"), *[(str(p), d) for p, _, d in clips]])
    data = load_data(str(manifest), split_preference=("all",))
    assert isinstance(data, AudioData) and data.classes == sorted({str(d) for _, _, d in clips}, key=int)


def test_read_audio_resamples_to_mono_at_the_asked_rate_and_cuts(shared_data, tmp_path):
    path = fsdd_clips(shared_data, per_speaker=1)[0][0]
    original, rate = soundfile.read(str(path), dtype="float32")
    assert rate == 8000
    wave = read_audio(path, 16000)
    assert wave.dtype == np.float32 and abs(len(wave) - 2 * len(original)) <= 1
    stereo = tmp_path / "stereo.wav"
    soundfile.write(str(stereo), np.stack([original, original], axis=1), 8000)
    np.testing.assert_allclose(read_audio(stereo, 8000), original, atol=1e-4)
    assert len(read_audio(path, 16000, max_seconds=0.1)) == 1600


def test_bad_audio_files_are_named_or_skipped(shared_data, tmp_path):
    folder = speaker_folders(tmp_path, fsdd_clips(shared_data, speakers=("george", "jackson"), per_speaker=2))
    (folder / "george" / "broken.wav").write_bytes(b"RIFF not really audio")
    with pytest.raises(AudioReadError, match="broken.wav"):
        load_data(str(folder), split_preference=("all",))
    with pytest.warns(UserWarning, match="skipped 1 bad file.*broken.wav"):
        assert len(load_data(str(folder), split_preference=("all",), skip_bad_files=True)) == 4
    (folder / "george" / "broken.wav").unlink()
    soundfile.write(str(folder / "jackson" / "empty.wav"), np.zeros(0, dtype=np.float32), 8000)
    with pytest.raises(AudioReadError, match="empty.wav holds no samples"):
        load_data(str(folder), split_preference=("all",))


def test_a_missing_audio_file_in_a_manifest_is_named_as_audio(shared_data, tmp_path):
    clips = fsdd_clips(shared_data, speakers=("george", "jackson"), per_speaker=2)
    manifest = tmp_path / "clips.csv"
    rows = [(str(path), speaker) for path, speaker, _ in clips] + [(str(tmp_path / "gone.wav"), "george")]
    with open(manifest, "w", newline="") as stream:
        csv.writer(stream).writerows([("path", "label"), *rows])
    with pytest.raises(AudioReadError, match="row 5 \\(line 6\\): audio file not found") as error:
        load_data(str(manifest), split_preference=("all",))
    assert str(tmp_path / "gone.wav") in str(error.value) and "image" not in str(error.value)
    with pytest.warns(UserWarning, match="skipped 1 bad file.*gone.wav"):
        assert isinstance(load_data(str(manifest), split_preference=("all",), skip_bad_files=True), AudioData)


def test_multitask_columns_of_an_audio_manifest_are_audio_data(shared_data, tmp_path):
    from transferlab.data.specs import read_manifest_columns

    clips = fsdd_clips(shared_data, speakers=("george", "jackson"), per_speaker=2)
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really audio")
    manifest = tmp_path / "tasks.csv"
    rows = [(str(path), speaker, digit) for path, speaker, digit in clips] + [("broken.wav", "george", "")]
    with open(manifest, "w", newline="") as stream:
        csv.writer(stream).writerows([("path", "speaker", "digit"), *rows])
    with pytest.raises(AudioReadError, match="cannot read audio file .*broken.wav"):
        read_manifest_columns(str(manifest), ["speaker", "digit"])
    with pytest.warns(UserWarning, match="skipped 1 bad file.*broken.wav"):
        examples, cells = read_manifest_columns(str(manifest), ["speaker", "digit"], skip_bad_files=True)
    assert isinstance(examples, AudioData) and len(examples) == 4
    assert cells["speaker"] == [speaker for _, speaker, _ in clips]


def test_mixing_images_and_audio_in_one_folder_is_refused(shared_data, tmp_path):
    folder = speaker_folders(tmp_path, fsdd_clips(shared_data, speakers=("george", "jackson"), per_speaker=2))
    from PIL import Image

    Image.new("RGB", (8, 8)).save(folder / "george" / "photo.png")
    with pytest.raises(TransferlabError, match="mixes audio files with images"):
        load_data(str(folder), split_preference=("all",))


@pytest.mark.slow
def test_speaker_identification_with_the_offline_speaker_encoder(shared_data, tmp_path):
    """features on the packaged Resemblyzer encoder (the audio default): real speakers told apart from 4 clips each."""
    pytest.importorskip("resemblyzer")
    speakers = ("george", "jackson", "lucas")
    train = speaker_folders(tmp_path / "train", fsdd_clips(shared_data, speakers, per_speaker=4))
    test_clips = [(shared_data / "fsdd" / "recordings" / f"{d}_{s}_{i}.wav", s, d)
                  for s in speakers for d in range(3) for i in range(2)]
    test = speaker_folders(tmp_path / "test", test_clips)
    run = tmp_path / "run"
    result = runner.invoke(app, ["fit", "--train", str(train), "--val", str(test), "--method", "features",
                                 "--out", str(run), "-q"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["backbone"] == "resemblyzer" and metrics["val"]["accuracy"] >= 0.8  # chance is 1/3
    predicted = runner.invoke(app, ["predict", str(run), str(test / "lucas"), "--format", "json"])
    rows = json.loads(predicted.stdout)
    assert len(rows) == 6 and rows[0]["path"].endswith(".wav")
    evaluated = runner.invoke(app, ["evaluate", str(run), "--data", str(test), "--json"])
    assert json.loads(evaluated.stdout)["accuracy"] == pytest.approx(metrics["val"]["accuracy"])


@pytest.mark.slow
def test_speech_finetune_trains_the_encoder_and_reloads(shared_data, tmp_path):
    pytest.importorskip("resemblyzer")
    import transferlab
    from transferlab.api import predict

    train = speaker_folders(tmp_path, fsdd_clips(shared_data, ("george", "jackson"), per_speaker=6))
    result = transferlab.api.fit({"train": str(train), "method": "finetune", "epochs": 2, "head_epochs": 1,
                                  "max_seconds": 1.0, "batch_size": 4, "out": str(tmp_path / "run")}, progress=False)
    assert result.model.backbone.spec["name"] == "resemblyzer" and len(result.history) == 2
    data = load_data(str(train), split_preference=("all",)).subset(np.arange(3))
    reloaded = predict(result.run_dir, data)
    from transferlab.evaluate import predict_proba

    np.testing.assert_allclose([[row["probabilities"][c] for c in result.model.classes] for row in reloaded],
                               predict_proba(result.model, data), atol=1e-5)
