"""``--method ctc``: speech recognition by fine-tuning a per-frame CTC head (and the encoder) on a pretrained speech
encoder, e.g. an encoder pretrained on Mandarin adapted to transcribed dialect speech.

The pieces, as for every method: the pure loss `ctc_loss`, the model `transferlab.models.CTCModel` (the ordinary
audio backbone + `CTCHead`), and one `MethodSpec`. What trains when is the shared fine-tuning recipe
(`transferlab.methods.finetune.freeze_and_rates`) over the model's named groups: the head alone for
``head_epochs``, then the encoder too, with discriminative learning rates. The recipe freezes the convolutional
feature encoder (``freeze: backbone.feature_encoder``, the standard wav2vec2 recipe); a ``--freeze`` of your own
replaces that default: ``all`` (only the head trains), ``N`` (the first N groups: 2 is the feature encoder and the
embeddings), ``none``, or a pattern over group or parameter names.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from pydantic import Field
from torch.utils.data import Dataset

from transferlab.backbones import create_backbone
from transferlab.config import FinetuneSettings, FitConfig, PretrainedSettings, TrainDataSettings, TrainingSettings
from transferlab.data.audio_data import AudioData
from transferlab.data.splits import hold_out_indices
from transferlab.data.transcripts import build_vocabulary, drop_long_clips, load_transcribed_audio
from transferlab.engine.distributed import steps_per_epoch
from transferlab.engine.loop import Trainer, TrainSettings
from transferlab.engine.optim import build_optimizer, build_scheduler
from transferlab.errors import TransferlabError
from transferlab.methods.base import MethodResult, MethodSpec, RunContext, Splits, register_method, train_settings
from transferlab.methods.finetune import freeze_and_rates
from transferlab.metrics import error_rates
from transferlab.models.ctc import IGNORE_INDEX, CTCModel

__all__ = [
    "CTC_RECIPE",
    "CTCConfig",
    "TranscribedAudioDataset",
    "TranscriptValidation",
    "build_ctc_model",
    "ctc_loss",
    "ctc_objective",
    "prepare_ctc_splits",
    "train_ctc",
]

log = logging.getLogger("transferlab")

# the convolutional feature encoder stays frozen unless the user's --freeze says otherwise
CTC_RECIPE = {"freeze": "backbone.feature_encoder"}


class CTCConfig(FitConfig, TrainDataSettings, TrainingSettings, FinetuneSettings, PretrainedSettings):
    """``ctc``: transcript manifests, a speech encoder as ``backbone``, the fine-tuning schedule."""

    transcript_column: str = Field("transcript", min_length=1,
                                   description="transcript column of the path,transcript manifests")


# --- the loss ---------------------------------------------------------------------------------------------------


def ctc_loss(logits: torch.Tensor, frame_lengths: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Connectionist temporal classification loss (Graves et al., ICML 2006), averaged over target lengths.

    ``L = mean_b [ -log sum_{pi in B^-1(y_b)} prod_{t < T_b} p(pi_t | x_b) / |y_b| ]``

    over the alignments ``pi`` (one token or the blank, id 0, per real frame) that collapse (merge repeats, drop
    blanks) to the label sequence ``y_b``. Alignments impossible for a clip too short for its transcript count as
    0 (``zero_infinity``) instead of breaking training. Computed in float32 whatever the autocast precision.

    Args:
        logits: ``(B, T, V)`` per-frame token scores.
        frame_lengths: ``(B,)`` real frames of each clip, ``T_b <= T``.
        labels: ``(B, L)`` token ids, padded with ``IGNORE_INDEX`` (-100) after each transcript's ``|y_b`` ids.

    Returns:
        The scalar loss.
    """
    log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # (T, B, V), as ctc_loss takes them
    real = labels != IGNORE_INDEX
    return F.ctc_loss(log_probs, labels[real], frame_lengths.long(), real.sum(dim=-1), blank=0, reduction="mean",
                      zero_infinity=True)


def ctc_objective(model: CTCModel, batch) -> dict:
    """The shared loop's objective: `ctc_loss` of a batch ``(inputs, labels (B, L))``."""
    inputs, labels = batch
    outputs = model(inputs)
    return {"loss": ctc_loss(outputs.values, outputs.lengths, labels), "parts": {}}


# --- data -------------------------------------------------------------------------------------------------------


def prepare_ctc_splits(config: CTCConfig) -> Splits:
    """Train, validation and test `AudioData` with transcripts from the config's manifests.

    Validation data is ``config.val`` or a seeded random ``val_fraction`` of ``config.train``
    (`transferlab.data.splits.hold_out_indices`). The vocabulary is the characters of the training and validation
    transcripts; a test transcript with other characters is an error naming its row.

    Raises:
        TransferlabError: no ``backbone`` (speech recognition has no default encoder), or bad data.
    """
    if config.backbone is None:
        raise TransferlabError("method 'ctc' fine-tunes a speech encoder with a CTC head: set backbone (--backbone) "
                               "to a wav2vec2, HuBERT or WavLM encoder, as a local directory saved with "
                               "save_pretrained or a hub name such as facebook/wav2vec2-base when online")
    options = dict(transcript_column=config.transcript_column, skip_bad_files=config.skip_bad_files)
    train = load_transcribed_audio(config.train, **options)
    if config.val is not None:
        val = load_transcribed_audio(config.val, **options)
    else:
        train_index, val_index = hold_out_indices(len(train), config.val_fraction, config.seed, what="clips")
        train, val = train.subset(train_index), train.subset(val_index)
        log.info("held out %d of %d training clips for validation (seed %d)", len(val_index),
                 len(train_index) + len(val_index), config.seed)
    test = None
    if config.test is not None:
        characters = {char for text in [*train.transcripts, *val.transcripts] for char in text}
        test = load_transcribed_audio(config.test, vocabulary=characters, **options)
    return Splits(train=train, val=val, test=test)


class TranscribedAudioDataset(Dataset):
    """Yields ``(waveform, transcript)`` at the model's sampling rate; ``collate_fn`` is `CTCModel.collate`."""

    def __init__(self, data: AudioData, model: CTCModel):
        if data.transcripts is None:
            raise TransferlabError(f"{data.name} has no transcripts; --method ctc trains on a path,transcript manifest")
        self.data = data
        self.sampling_rate = model.sampling_rate
        self.collate_fn = model.collate

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        return self.data.load_waveform(index, self.sampling_rate), self.data.transcripts[index]


class TranscriptValidation:
    """Validation for the shared loop: ``evaluate(model, settings)`` -> ``val_loss``, ``val_wer``, ``val_cer`` and
    ``val_score = -val_cer`` (higher is better) on greedy transcripts of whole clips."""

    def __init__(self, data: AudioData):
        self.data = data

    def evaluate(self, model: CTCModel, settings: TrainSettings) -> dict[str, float]:
        hypotheses, loss = [], 0.0
        for indices, outputs in model.batched_outputs(self.data, batch_size=settings.batch_size,
                                                      precision=settings.precision, device=settings.device):
            labels = model.label_ids([self.data.transcripts[i] for i in indices]).to(outputs.values.device)
            loss += float(ctc_loss(outputs.values, outputs.lengths, labels)) * len(indices)
            hypotheses += model.decode(outputs)
        rates = error_rates(self.data.transcripts, hypotheses)
        return {"val_loss": loss / len(self.data), "val_wer": rates["wer"], "val_cer": rates["cer"],
                "val_score": -rates["cer"]}


# --- the method -------------------------------------------------------------------------------------------------


def build_ctc_model(config: CTCConfig, vocabulary: dict[str, int]) -> CTCModel:
    """``config.backbone`` (pretrained, or random with ``pretrained: false``; ``weights`` loads a local state dict
    or a run directory's backbone into it) with a new CTC head over ``vocabulary``."""
    backbone = create_backbone(config.backbone, weights=config.weights, pretrained=config.pretrained,
                               max_seconds=config.max_seconds)
    return CTCModel(backbone, vocabulary, transcript_column=config.transcript_column)


def train_ctc(config: CTCConfig, splits: Splits, context: RunContext) -> MethodResult:
    """Fine-tune a CTC head and the encoder of ``config.backbone`` with the shared loop; the best epoch by
    validation CER is kept."""
    transcripts = splits.train.transcripts + (splits.val.transcripts if splits.val is not None else [])
    vocabulary = build_vocabulary(transcripts)
    model = build_ctc_model(config, vocabulary)
    log.info("CTC vocabulary of %d tokens: %s", len(vocabulary), "".join(list(vocabulary)[3:]))
    param_groups, unfreezing = freeze_and_rates(model, config, transfer=True)
    train = drop_long_clips(splits.train, config.max_seconds)
    optimizer = build_optimizer(config.optimizer, param_groups, config.weight_decay)
    scheduler = build_scheduler(config, optimizer, config.epochs * steps_per_epoch(len(train), config.batch_size))
    validation = TranscriptValidation(splits.val) if splits.val is not None else None
    trainer = Trainer(model, ctc_objective, optimizer, scheduler, train_settings(config, context), [unfreezing])
    history = trainer.fit(TranscribedAudioDataset(train, model), validation, resume=config.resume)
    return MethodResult(model=model, history=history)


register_method(MethodSpec("ctc", "speech recognition: a CTC head over characters on a speech encoder (wav2vec2, "
                                  "HuBERT, WavLM)", CTCConfig, prepare_ctc_splits, train_ctc, CTC_RECIPE))
