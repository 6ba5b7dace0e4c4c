"""`CTCModel`: speech recognition as a per-frame head on the ordinary audio backbone (kind ``ctc``).

An audio backbone's ``forward_features`` gives one vector per output frame, ``(B, T, D)``, with a mask of the frames
that hold real audio (`transferlab.backbones.FeatureMap`). A linear head turns every frame into scores over a
character vocabulary (`transferlab.data.transcripts.build_vocabulary`: ``<pad>``, the CTC blank, is id 0), and greedy
(best-path) CTC decoding reads a transcript from the best token of each real frame. The loss that trains it lives
with the method (`transferlab.methods.ctc.ctc_loss`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from pydantic import Field
from torch import nn

from transferlab.artifacts import save_weights, write_model_info
from transferlab.backbones import Backbone, FeatureMap
from transferlab.data.audio_data import AUDIO_EXTENSIONS, AudioData
from transferlab.data.transcripts import BLANK, UNKNOWN, WORD_DELIMITER, load_transcribed_audio, normalize_transcript
from transferlab.engine.batches import to_device
from transferlab.engine.precision import autocast, resolve_precision
from transferlab.errors import TransferlabError
from transferlab.metrics import error_rates
from transferlab.models.base import DataOptions, Predictor, rebuild_saved, register_kind
from transferlab.models.classifier import refuse_task
from transferlab.models.info import ModelInfo, read_info

__all__ = ["IGNORE_INDEX", "CTCHead", "CTCModel", "ctc_greedy_decode"]

IGNORE_INDEX = -100  # padding of label ids (positions past a transcript's end)
EVAL_BATCH_SIZE = 8


def ctc_greedy_decode(ids: list[int], tokens: dict[int, str], blank_id: int) -> str:
    """Best-path CTC decoding: merge repeated ids, drop blanks (and ``<unk>``), write ``|`` as a space.

    ``[a, a, <pad>, a, |, b]`` -> ``"aa b"``: a blank between two equal ids keeps both, as CTC requires.

    Args:
        ids: the argmax token id of every output frame, ``(T,)``.
        tokens: id -> token.
        blank_id: the id of the CTC blank.
    """
    kept = [token for position, token in enumerate(ids) if position == 0 or token != ids[position - 1]]
    characters = [tokens.get(token, UNKNOWN) for token in kept if token != blank_id]
    text = "".join(" " if char == WORD_DELIMITER else char for char in characters if char != UNKNOWN)
    return normalize_transcript(text)


class CTCHead(nn.Module):
    """A linear layer applied to every frame: ``(B, T, D)`` features -> ``(B, T, V)`` token scores (logits).

    Args:
        num_features: ``D``, the backbone's feature size.
        vocab_size: ``V``, the number of tokens, the blank among them.
        dropout: dropout on the frame features before the linear layer (wav2vec2's ``final_dropout``).
    """

    def __init__(self, num_features: int, vocab_size: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(num_features, vocab_size)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(frames))


@register_kind
class CTCModel(Predictor):
    """An audio backbone and a `CTCHead` over a character vocabulary: ``head(backbone.forward_features(x))``.

    Args:
        backbone: an audio backbone whose ``forward_features`` gives ``(B, T, D)`` frames with a frame mask (a
            wav2vec2, HuBERT or WavLM encoder from `transferlab.backbones.create_backbone`).
        vocabulary: token -> id, ids ``0 .. V-1``; ``<pad>`` (the blank) is 0, ``|`` stands for the space.
        transcript_column: the manifest column of transcripts, read again by `load_eval_data`.

    Raises:
        TransferlabError: a backbone that does not read audio, or a vocabulary without the blank at 0.
    """

    kind = "ctc"
    onnx_refusal = ("its transcripts come from greedy CTC decoding of variable-length frame outputs in Python, which "
                    "an ONNX graph of the network would leave out")
    lower_is_better = frozenset({"wer", "cer"})

    def __init__(self, backbone: Backbone, vocabulary: dict[str, int], *, transcript_column: str = "transcript"):
        super().__init__()
        if backbone.spec.get("modality") != "audio":
            raise TransferlabError(f"a CTC speech recogniser needs an audio backbone (wav2vec2, HuBERT, WavLM), got "
                                   f"{backbone.spec.get('modality', 'image')} backbone {backbone.spec.get('name')!r}")
        if vocabulary.get(BLANK) != 0 or sorted(vocabulary.values()) != list(range(len(vocabulary))):
            raise TransferlabError(f"a CTC vocabulary maps {BLANK!r} (the blank) to 0 and its tokens to 0 .. V-1; "
                                   f"got {vocabulary}")
        self.backbone = backbone
        self.head = CTCHead(backbone.num_features, len(vocabulary))
        self.vocabulary = dict(vocabulary)
        self.transcript_column = transcript_column
        self._tokens = {index: token for token, index in self.vocabulary.items()}

    @property
    def preprocess(self):
        return self.backbone.preprocess

    @property
    def sampling_rate(self) -> int:
        return int(self.preprocess.sampling_rate)

    @property
    def characters(self) -> set[str]:
        """The characters the model can write (``|`` counted as the space)."""
        tokens = set(self.vocabulary) - {BLANK, UNKNOWN}
        return {" " if token == WORD_DELIMITER else token for token in tokens}

    def forward(self, inputs: dict[str, torch.Tensor]) -> FeatureMap:
        """Per-frame logits ``(B, T, V)`` of a batch `AudioPreprocess.collate` made, with the ``(B, T)`` mask of
        the frames that hold real audio."""
        features = self.backbone.forward_features(inputs)
        return FeatureMap(self.head(features.values), features.mask)

    def parameter_groups(self) -> list[tuple[str, list[str]]]:
        """The backbone's named groups (prefixed ``backbone.``: ``backbone.feature_encoder``,
        ``backbone.embeddings``, ``backbone.layer.0`` ...) followed by ``head``, input to output."""
        backbone = [(f"backbone.{name}", [f"backbone.{p}" for p in params])
                    for name, params in self.backbone.parameter_groups()]
        return [*backbone, ("head", [f"head.{name}" for name, _ in self.head.named_parameters()])]

    # --- transcripts <-> ids -----------------------------------------------------------------------------------

    def label_ids(self, transcripts: list[str]) -> torch.Tensor:
        """``(B, longest)`` token ids of ``transcripts`` (a space is ``|``; a character outside the vocabulary
        ``<unk>``), padded with `IGNORE_INDEX`."""
        unknown = self.vocabulary[UNKNOWN]
        encoded = [[self.vocabulary.get(WORD_DELIMITER if char == " " else char, unknown) for char in text]
                   for text in transcripts]
        labels = torch.full((len(encoded), max(map(len, encoded), default=0)), IGNORE_INDEX, dtype=torch.long)
        for row, ids in enumerate(encoded):
            labels[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return labels

    def decode(self, outputs: FeatureMap) -> list[str]:
        """Greedy transcripts of per-frame logits ``(B, T, V)``, each read over its real frames only."""
        best = outputs.values.argmax(-1).cpu()
        frames = outputs.lengths.cpu().tolist()
        return [ctc_greedy_decode(row[:length].tolist(), self._tokens, self.vocabulary[BLANK])
                for row, length in zip(best, frames, strict=True)]

    def collate(self, items: list[tuple[np.ndarray, str]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """``(inputs, labels)`` of ``(waveform, transcript)`` pairs: the backbone's padded audio batch and
        `label_ids`."""
        waves, transcripts = zip(*items)
        return self.preprocess.collate(list(waves)), self.label_ids(list(transcripts))

    @torch.inference_mode()
    def batched_outputs(self, data: AudioData, *, batch_size: int = EVAL_BATCH_SIZE, precision: str = "fp32",
                        device: torch.device | None = None) -> Iterator[tuple[range, FeatureMap]]:
        """``(indices, outputs)`` for consecutive batches of whole clips of ``data``, in eval mode (restored after).

        Raises:
            TransferlabError: ``data`` is not audio.
        """
        if not isinstance(data, AudioData):
            raise TransferlabError(f"{data.name} holds {type(data).__name__}, but a speech-recognition model "
                                   f"transcribes audio files ({', '.join(AUDIO_EXTENSIONS)})")
        device = device or next(self.parameters()).device
        was_training = self.training
        self.eval()
        try:
            for start in range(0, len(data), batch_size):
                indices = range(start, min(start + batch_size, len(data)))
                waves = [data.load_waveform(i, self.sampling_rate) for i in indices]
                inputs = to_device(self.preprocess.collate(waves), device)
                with autocast(precision, device):
                    outputs = self(inputs)
                yield indices, FeatureMap(outputs.values.float(), outputs.mask)
        finally:
            self.train(was_training)

    def transcribe(self, data: AudioData, *, batch_size: int = EVAL_BATCH_SIZE, precision: str = "fp32",
                   device: torch.device | None = None) -> list[str]:
        """Greedy transcripts of every clip of ``data`` (whole clips, in order)."""
        options = dict(batch_size=batch_size, precision=precision, device=device)
        return [text for _, outputs in self.batched_outputs(data, **options) for text in self.decode(outputs)]

    # --- the predictor contract ----------------------------------------------------------------------------------

    def load_eval_data(self, spec, options: DataOptions) -> AudioData:
        """The ``path,transcript`` manifest at ``spec``; a reference with characters the model cannot write is an
        error naming the row (`transferlab.data.transcripts.load_transcribed_audio`)."""
        refuse_task(options, "speech recogniser")
        return load_transcribed_audio(spec, transcript_column=self.transcript_column,
                                      skip_bad_files=options.skip_bad_files, vocabulary=self.characters)

    def evaluate(self, data, *, precision="auto", num_workers=None) -> dict:
        """``{"n", "wer", "cer"}`` of the greedy transcripts of ``data`` against its transcripts."""
        if getattr(data, "transcripts", None) is None:
            raise TransferlabError(f"{data.name} has no transcripts; a speech recogniser is evaluated on a "
                                   f"path,{self.transcript_column} manifest")
        hypotheses = self.transcribe(data, **self._inference(precision))
        return {"n": len(data), **error_rates(data.transcripts, hypotheses)}

    def predict(self, data, *, precision="auto", num_workers=None) -> list[dict]:
        """``{"transcript": greedy transcript}`` per clip."""
        return [{"transcript": text} for text in self.transcribe(data, **self._inference(precision))]

    def prediction_table(self, rows):
        return ["transcript"], [[row["transcript"]] for row in rows]

    def metric_lines(self, metrics, *, detail=False):
        summary = f"WER: {metrics['wer']:.4f}  CER: {metrics['cer']:.4f}"
        return [f"clips: {metrics['n']}", summary] if detail else [summary]

    @classmethod
    def headline_metrics(cls, metrics):
        return {"wer": metrics["wer"], "cer": metrics["cer"]}

    def save(self, run_dir: Path) -> None:
        save_weights(run_dir, self)
        self.preprocess.save(run_dir)  # the feature extractor's own files
        write_model_info(run_dir, self.kind, {
            "backbone": self.backbone.spec,
            "num_features": self.backbone.num_features,
            "vocabulary": [self._tokens[index] for index in range(len(self._tokens))],
            "transcript_column": self.transcript_column,
            "preprocess": self.preprocess.to_dict(),
        })

    @classmethod
    def from_run_dir(cls, run_dir, info):
        """The model of a ``ctc`` run directory.

        Raises:
            TransferlabError: a run of transferlab 0.1, which kept a transformers ``AutoModelForCTC`` in a folder
                of its own (``model_dir``) instead of the backbone + head weights every kind writes.
        """
        if "model_dir" in info:
            raise TransferlabError(
                f"{run_dir} is a speech-recognition run written by an older version of transferlab (a transformers "
                f"CTC model in {Path(run_dir) / info['model_dir']}), which this version no longer reads; train it "
                "again with 'transferlab fit --method ctc', or load that folder with transformers' AutoModelForCTC"
            )
        saved = read_info(CTCInfo, run_dir, info)
        vocabulary = {token: index for index, token in enumerate(saved.vocabulary)}
        return rebuild_saved(run_dir, saved, lambda backbone: cls(backbone, vocabulary,
                                                                  transcript_column=saved.transcript_column))

    def _inference(self, precision: str) -> dict:
        device = next(self.parameters()).device
        return {"precision": resolve_precision(precision, device), "device": device}


class CTCInfo(ModelInfo):
    """``model.json`` of a ``ctc`` run: its vocabulary (token of id 0, 1, ...) and transcript column."""

    vocabulary: list[str] = Field(min_length=2, description="the tokens, in id order (the blank first)")
    transcript_column: str = Field("transcript", min_length=1)
