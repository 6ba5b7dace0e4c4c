"""``--method ctc``: speech recognition by fine-tuning a new CTC head (and the encoder) on a pretrained
wav2vec2-style speech encoder, e.g. an encoder pretrained on Mandarin adapted to transcribed dialect speech.

Loss (Graves et al., "Connectionist Temporal Classification", ICML 2006), as transformers computes it with
``ctc_loss_reduction="mean"``::

    L = mean_b [ -log sum_{pi in B^-1(y_b)} prod_t p(pi_t | x_b)  /  |y_b| ]

over the alignments ``pi`` (one token or the blank ``<pad>`` per output frame, ``(B, T, V)`` log-probabilities)
that collapse to the label sequence ``y_b``; alignments impossible for a clip too short for its transcript count
as 0 (``ctc_zero_infinity``) instead of breaking training.

What trains: the convolutional feature encoder stays frozen (the standard wav2vec2 recipe); the CTC head alone for
``head_epochs`` epochs, then the transformer layers too, with discriminative learning rates (``lr`` for the head,
``lr / layer_lr_ratio`` for the first group). ``--freeze`` freezes more, over the groups of
`SpeechRecognizer.parameter_groups`: ``all`` (only the head trains), ``N`` groups, or a name pattern.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch.utils.data import Dataset

from transferlab.config import FitConfig
from transferlab.data.audio_data import AudioData
from transferlab.engine.loop import Trainer, TrainSettings
from transferlab.engine.optim import build_optimizer, build_scheduler
from transferlab.errors import TransferlabError
from transferlab.methods.base import MethodResult, RunContext, Splits, register_method, train_settings
from transferlab.methods.freeze import (
    GradualUnfreezing,
    discriminative_param_groups,
    frozen_parameter_names,
    set_requires_grad,
)
from transferlab.speech.metrics import error_rates
from transferlab.speech.recognizer import SpeechRecognizer, build_recognizer
from transferlab.speech.transcripts import build_vocabulary, load_transcribed_audio

__all__ = [
    "TranscribedAudioDataset",
    "TranscriptValidation",
    "ctc_objective",
    "prepare_speech_splits",
    "score_transcripts",
    "train_ctc",
]

log = logging.getLogger("transferlab")

EVAL_BATCH_SIZE = 8


# --- data ------------------------------------------------------------------------------------------------------


def prepare_speech_splits(config: FitConfig) -> Splits:
    """Train, validation and test `AudioData` with transcripts from the config's manifests.

    Validation data is ``config.val`` or a seeded random ``val_fraction`` of ``config.train``. The vocabulary is
    the characters of the training and validation transcripts; a test transcript with other characters raises
    (see `load_transcribed_audio`).

    Raises:
        TransferlabError: no ``--backbone`` (speech recognition has no default encoder), or bad data.
    """
    if config.backbone is None:
        raise TransferlabError("--method ctc needs --backbone: a pretrained speech encoder (wav2vec2, HuBERT, WavLM, "
                               "data2vec-audio) as a local directory saved with save_pretrained, or a hub name such "
                               "as facebook/wav2vec2-base when online")
    options = dict(transcript_column=config.transcript_column, skip_bad_files=config.skip_bad_files)
    train = load_transcribed_audio(config.train, **options)
    if config.val is not None:
        val = load_transcribed_audio(config.val, **options)
    else:
        train, val = _hold_out(train, config.val_fraction, config.seed)
    test = None
    if config.test is not None:
        characters = {char for text in [*train.transcripts, *val.transcripts] for char in text}
        test = load_transcribed_audio(config.test, vocabulary=characters, **options)
    return Splits(train=train, val=val, test=test)


def _hold_out(data: AudioData, fraction: float, seed: int) -> tuple[AudioData, AudioData]:
    if len(data) < 2:
        raise TransferlabError(f"{data.name} has {len(data)} clip(s): too few to hold out validation clips; "
                               "give validation data with --val")
    count = min(len(data) - 1, max(1, round(len(data) * fraction)))
    order = np.random.default_rng(seed).permutation(len(data))
    log.info("held out %d of %d training clips for validation (seed %d)", count, len(data), seed)
    return data.subset(np.sort(order[count:])), data.subset(np.sort(order[:count]))


def _drop_long_clips(data: AudioData, max_seconds: float) -> AudioData:
    """The clips of at most ``max_seconds`` (cutting a clip would cut its transcript's alignment too)."""
    import soundfile

    seconds = np.array([soundfile.info(str(path)).duration for path in data.paths])
    keep = np.flatnonzero(seconds <= max_seconds)
    if len(keep) == 0:
        raise TransferlabError(f"every clip of {data.name} is longer than max_seconds {max_seconds:g} (the shortest "
                               f"lasts {seconds.min():.1f} s); raise --max-seconds")
    if len(keep) < len(data):
        log.warning("training on %d of %d clips of %s: %d are longer than max_seconds %g (longest %.1f s)",
                    len(keep), len(data), data.name, len(data) - len(keep), max_seconds, seconds.max())
    return data.subset(keep)


class TranscribedAudioDataset(Dataset):
    """Yields ``(waveform, transcript)``; ``collate_fn`` makes ``(inputs, labels)`` with the recogniser's
    feature extractor (padded waveforms) and tokenizer (``(B, L)`` ids padded with -100)."""

    def __init__(self, data: AudioData, recognizer: SpeechRecognizer):
        if data.transcripts is None:
            raise TransferlabError(f"{data.name} has no transcripts; --method ctc trains on a path,transcript manifest")
        self.data = data
        self.featurize = recognizer.featurize
        self.label_ids = recognizer.label_ids
        self.sampling_rate = recognizer.sampling_rate

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        return self.data.load_waveform(index, self.sampling_rate), self.data.transcripts[index]

    def collate_fn(self, items: list) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        waves, transcripts = zip(*items)
        return self.featurize(list(waves)), self.label_ids(list(transcripts))


# --- objective and validation ----------------------------------------------------------------------------------


def ctc_objective(model: SpeechRecognizer, batch) -> dict:
    """The shared loop's objective: the CTC loss of a batch ``(inputs, labels (B, L))`` (module docstring)."""
    inputs, labels = batch
    loss = model.model(**inputs, labels=labels).loss
    return {"loss": loss, "parts": {}}


def score_transcripts(recognizer: SpeechRecognizer, data: AudioData, *, batch_size: int = EVAL_BATCH_SIZE,
                      device: torch.device | None = None, precision: str = "fp32") -> dict:
    """``{"n", "wer", "cer"}`` of the recogniser's greedy transcripts of ``data`` against its transcripts."""
    hypotheses, _ = recognizer.transcribe(data, batch_size=batch_size, device=device, precision=precision)
    return {"n": len(data), **error_rates(data.transcripts, hypotheses)}


class TranscriptValidation:
    """Validation for the shared loop: ``evaluate(model, settings)`` -> ``val_loss``, ``val_wer``, ``val_cer`` and
    ``val_score = -val_cer`` (higher is better) on greedy transcripts."""

    def __init__(self, data: AudioData):
        self.data = data

    def evaluate(self, model: SpeechRecognizer, settings: TrainSettings) -> dict[str, float]:
        hypotheses, loss = model.transcribe(self.data, batch_size=settings.batch_size, device=settings.device,
                                            precision=settings.precision, with_loss=True)
        rates = error_rates(self.data.transcripts, hypotheses)
        return {"val_loss": loss, "val_wer": rates["wer"], "val_cer": rates["cer"], "val_score": -rates["cer"]}


# --- the method ------------------------------------------------------------------------------------------------


def freeze_and_rates(recognizer: SpeechRecognizer, config: FitConfig, transfer: bool
                     ) -> tuple[list[dict], GradualUnfreezing]:
    """Freeze the feature encoder and what ``config.freeze`` names; return the optimizer's parameter groups and
    the head-only-epochs hook (see the module docstring). Without ``transfer`` (random start) one learning rate
    and no head-only epochs."""
    groups = recognizer.parameter_groups()
    frozen = frozen_parameter_names(config.freeze, groups)
    if hasattr(recognizer.model, "freeze_feature_encoder"):
        recognizer.model.freeze_feature_encoder()
    frozen |= {name for group, names in groups if group == "feature_encoder" for name in names}
    set_requires_grad(recognizer, frozen, False)
    encoder_trainable = {name for _, names in groups[:-1] for name in names} - frozen
    unfreezing = GradualUnfreezing(encoder_trainable, config.head_epochs if transfer else 0)
    ratio = config.layer_lr_ratio if transfer else 1.0
    return discriminative_param_groups(recognizer, groups, config.lr, ratio, frozen), unfreezing


@register_method("ctc")
def train_ctc(config: FitConfig, splits: Splits, context: RunContext) -> MethodResult:
    """Fine-tune a CTC head on ``config.backbone`` (a local transformers speech encoder or a hub name) with the
    shared loop; the best epoch by validation CER is kept."""
    if config.weights is not None:
        raise TransferlabError(f"--weights {config.weights} is not used by --method ctc; give the pretrained encoder's "
                               "directory (saved with save_pretrained) as --backbone")
    transcripts = splits.train.transcripts + (splits.val.transcripts if splits.val is not None else [])
    vocabulary = build_vocabulary(transcripts)
    transfer = config.pretrained
    recognizer = build_recognizer(config.backbone, vocabulary, pretrained=transfer,
                                  transcript_column=config.transcript_column)
    log.info("CTC vocabulary of %d tokens: %s", len(vocabulary), "".join(list(vocabulary)[3:]))
    param_groups, unfreezing = freeze_and_rates(recognizer, config, transfer)
    train = _drop_long_clips(splits.train, config.max_seconds)
    optimizer = build_optimizer(config.optimizer, param_groups, config.weight_decay)
    scheduler = build_scheduler(config.scheduler, optimizer, config.epochs * math.ceil(len(train) / config.batch_size))
    validation = TranscriptValidation(splits.val) if splits.val is not None else None
    trainer = Trainer(recognizer, ctc_objective, optimizer, scheduler, train_settings(config, context), [unfreezing])
    history = trainer.fit(TranscribedAudioDataset(train, recognizer), validation, resume=config.resume)
    return MethodResult(model=recognizer, history=history)
