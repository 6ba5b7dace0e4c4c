"""`SpeechRecognizer`: a pretrained speech encoder with a CTC head (any transformers ``AutoModelForCTC``: wav2vec2,
HuBERT, WavLM, data2vec-audio...) and its processor (feature extractor + character tokenizer), with greedy CTC
decoding, batched transcription and saving/loading with ``save_pretrained``.

transformers is imported inside the functions that need it, so ``import transferlab`` stays fast.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from transferlab.data.audio_data import AUDIO_EXTENSIONS, AudioData
from transferlab.engine.precision import autocast
from transferlab.errors import TransferlabError
from transferlab.fileio import read_json, write_json
from transferlab.speech.transcripts import BLANK, UNKNOWN, WORD_DELIMITER, normalize_transcript

__all__ = [
    "IGNORE_INDEX",
    "KIND",
    "SpeechRecognizer",
    "build_recognizer",
    "ctc_greedy_decode",
    "load_recognizer",
    "save_recognizer",
]

log = logging.getLogger("transferlab")

KIND = "ctc"  # model.json "kind" of a speech-recognition run
MODEL_DIR = "ctc"  # run_dir / MODEL_DIR holds the transformers model and processor
IGNORE_INDEX = -100  # label padding that transformers' CTC loss ignores
_LAYER = re.compile(r"\.layers\.(\d+)\.")
_FEATURE_ENCODER = (".feature_extractor.", ".feature_encoder.")


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


class SpeechRecognizer(nn.Module):
    """A transformers CTC model and its processor, trained and run as one module.

    Args:
        model: an ``AutoModelForCTC`` model, e.g. ``Wav2Vec2ForCTC``.
        processor: its ``Wav2Vec2Processor`` (``feature_extractor`` and a ``Wav2Vec2CTCTokenizer``).
        transcript_column: the manifest column of transcripts (what ``evaluate`` reads).
        source: where the pretrained encoder came from (reported in ``model.json``).

    ``forward(inputs)`` takes the feature extractor's batch (``input_values`` ``(B, samples)``, maybe
    ``attention_mask``) and returns CTC logits ``(B, frames, vocab)``.
    """

    def __init__(self, model: nn.Module, processor, *, transcript_column: str = "transcript", source: str = ""):
        super().__init__()
        self.model = model
        self.processor = processor
        self.transcript_column = transcript_column
        self.source = source

    @property
    def sampling_rate(self) -> int:
        return int(self.processor.feature_extractor.sampling_rate)

    @property
    def characters(self) -> set[str]:
        """The characters the model can write (``|`` counted as the space)."""
        tokens = set(self.processor.tokenizer.get_vocab()) - {BLANK, UNKNOWN}
        return {" " if token == WORD_DELIMITER else token for token in tokens if len(token) == 1}

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(**inputs).logits

    def parameter_groups(self) -> list[tuple[str, list[str]]]:
        """Named groups, input to output: ``feature_encoder`` (the convolutions on the waveform),
        ``embeddings`` (feature projection, positional convolution, encoder norms), ``layer.0``... and ``head``
        (the CTC output layer and anything else outside the encoder)."""
        prefix = f"model.{self.model.base_model_prefix}."
        groups: dict[str, list[str]] = {"feature_encoder": [], "embeddings": []}
        layers: dict[int, list[str]] = {}
        head = []
        for name, _ in self.named_parameters():
            layer = _LAYER.search(name)
            if not name.startswith(prefix):
                head.append(name)
            elif any(part in name for part in _FEATURE_ENCODER):
                groups["feature_encoder"].append(name)
            elif layer:
                layers.setdefault(int(layer.group(1)), []).append(name)
            else:
                groups["embeddings"].append(name)
        ordered = [(name, names) for name, names in groups.items() if names]
        ordered += [(f"layer.{index}", layers[index]) for index in sorted(layers)]
        return [*ordered, ("head", head)]

    def featurize(self, waves: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """The feature extractor's padded batch of mono waveforms at `sampling_rate`."""
        batch = self.processor.feature_extractor(
            [np.asarray(wave, dtype=np.float32) for wave in waves], sampling_rate=self.sampling_rate,
            padding="longest", return_tensors="pt",
        )
        return dict(batch)

    def label_ids(self, transcripts: list[str]) -> torch.Tensor:
        """``(B, longest)`` token ids of the transcripts (spaces become ``|``), padded with `IGNORE_INDEX`."""
        encoded = [self.processor.tokenizer(text).input_ids for text in transcripts]
        labels = torch.full((len(encoded), max(map(len, encoded))), IGNORE_INDEX, dtype=torch.long)
        for row, ids in enumerate(encoded):
            labels[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return labels

    def frame_lengths(self, sample_lengths: torch.Tensor) -> torch.Tensor:
        """Output frames of clips of ``sample_lengths`` samples (the encoder's convolutional downsampling)."""
        lengths = self.model._get_feat_extract_output_lengths(sample_lengths)
        return torch.as_tensor(lengths, dtype=torch.long)

    def decode(self, logits: torch.Tensor, sample_lengths: torch.Tensor) -> list[str]:
        """Greedy (argmax) transcripts of ``logits`` ``(B, frames, vocab)``, each cut to its clip's real frames."""
        tokens = {index: token for token, index in self.processor.tokenizer.get_vocab().items()}
        blank = self.processor.tokenizer.pad_token_id
        best = logits.argmax(-1).cpu()
        frames = self.frame_lengths(sample_lengths.cpu()).clamp(max=best.shape[1])
        return [ctc_greedy_decode(row[: int(n)].tolist(), tokens, blank) for row, n in zip(best, frames, strict=True)]

    @torch.inference_mode()
    def transcribe(self, data: AudioData, *, batch_size: int = 8, device: torch.device | None = None,
                   precision: str = "fp32", with_loss: bool = False) -> tuple[list[str], float | None]:
        """Greedy transcripts of every clip of ``data`` (whole clips, in order) and, with ``with_loss``, the mean
        CTC loss against ``data.transcripts``."""
        if not isinstance(data, AudioData):
            raise TransferlabError(f"{data.name} holds {type(data).__name__}, but a speech-recognition model "
                                   f"transcribes audio files ({', '.join(AUDIO_EXTENSIONS)})")
        device = device or next(self.parameters()).device
        was_training = self.training
        self.eval()
        hypotheses, losses, sizes = [], [], []
        for start in range(0, len(data), batch_size):
            indices = range(start, min(start + batch_size, len(data)))
            waves = [data.load_waveform(i, self.sampling_rate) for i in indices]
            inputs = {key: value.to(device) for key, value in self.featurize(waves).items()}
            labels = self.label_ids([data.transcripts[i] for i in indices]).to(device) if with_loss else None
            with autocast(precision, device):
                output = self.model(**inputs, labels=labels)
            hypotheses += self.decode(output.logits.float(), torch.tensor([len(wave) for wave in waves]))
            if with_loss:
                losses.append(float(output.loss) * len(waves))
                sizes.append(len(waves))
        self.train(was_training)
        return hypotheses, (sum(losses) / sum(sizes) if with_loss else None)


# --- building, saving, loading ---------------------------------------------------------------------------------


def build_recognizer(source: str, vocabulary: dict[str, int], *, pretrained: bool = True,
                     transcript_column: str = "transcript") -> SpeechRecognizer:
    """A pretrained encoder from ``source`` with a new CTC head over ``vocabulary`` (see
    `transferlab.speech.transcripts.build_vocabulary`), and its processor.

    Args:
        source: a local directory saved with ``save_pretrained`` (``config.json``, weights, ideally
            ``preprocessor_config.json``) or a Hugging Face hub name (downloaded when online).
        vocabulary: token -> id, ``<pad>`` (the blank) and ``<unk>`` among them.
        pretrained: load the encoder's weights; ``False`` builds the same architecture randomly initialised.
        transcript_column: stored with the model for ``evaluate``.

    Raises:
        TransferlabError: the model cannot be read or downloaded, or its architecture has no CTC head.
    """
    tokenizer = _make_tokenizer(vocabulary)
    model = _load_ctc_model(source, len(vocabulary), tokenizer.pad_token_id, pretrained)
    from transformers import Wav2Vec2Processor

    processor = Wav2Vec2Processor(feature_extractor=_load_feature_extractor(source), tokenizer=tokenizer)
    return SpeechRecognizer(model, processor, transcript_column=transcript_column, source=source)


def _make_tokenizer(vocabulary: dict[str, int]):
    from transformers import Wav2Vec2CTCTokenizer

    with tempfile.TemporaryDirectory() as folder:
        vocab_file = Path(folder) / "vocab.json"
        vocab_file.write_text(json.dumps(vocabulary, ensure_ascii=False), encoding="utf-8")
        return Wav2Vec2CTCTokenizer(str(vocab_file), unk_token=UNKNOWN, pad_token=BLANK,
                                    word_delimiter_token=WORD_DELIMITER, bos_token=None, eos_token=None)


def _load_ctc_model(source: str, vocab_size: int, pad_token_id: int, pretrained: bool) -> nn.Module:
    """``AutoModelForCTC`` from ``source`` with a new ``vocab_size`` head (transformers logs the new weights)."""
    from transformers import AutoConfig, AutoModelForCTC

    settings = dict(vocab_size=vocab_size, pad_token_id=pad_token_id, ctc_loss_reduction="mean",
                    ctc_zero_infinity=True)
    try:
        if pretrained:
            return AutoModelForCTC.from_pretrained(source, ignore_mismatched_sizes=True, **settings)
        return AutoModelForCTC.from_config(AutoConfig.from_pretrained(source, **settings))
    except OSError as exc:  # huggingface_hub's offline, HTTP and missing-file errors are OSErrors
        where = f"directory {source}" if Path(source).is_dir() else "the hub (no internet, or no such model?)"
        raise TransferlabError(
            f"cannot load the speech encoder {source!r} from {where}: {str(exc).rstrip('.')}. --backbone for "
            "--method ctc is a local directory saved with save_pretrained (config.json + weights) or a hub name "
            "such as facebook/wav2vec2-base when online"
        ) from None
    except ValueError as exc:  # a config whose model type has no CTC head
        raise TransferlabError(
            f"{source!r} cannot take a CTC head ({str(exc).splitlines()[0]}); --method ctc needs a speech encoder "
            "such as wav2vec2, HuBERT, WavLM or data2vec-audio"
        ) from None


def _load_feature_extractor(source: str):
    """The encoder's own feature extractor, or wav2vec2's default (16 kHz, normalised) when it has none."""
    from transformers import AutoFeatureExtractor, Wav2Vec2FeatureExtractor

    try:
        return AutoFeatureExtractor.from_pretrained(source)
    except (OSError, ValueError) as exc:
        log.warning("%s has no feature extractor settings (%s); using wav2vec2's default: 16 kHz, normalised "
                    "waveforms", source, str(exc).splitlines()[0])
        return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                        return_attention_mask=True)


def save_recognizer(run_dir: Path, recognizer: SpeechRecognizer) -> None:
    """Write the model and processor with ``save_pretrained`` into ``run_dir/ctc`` and describe them in
    ``run_dir/model.json`` (``"kind": "ctc"``)."""
    from transferlab.artifacts import FORMAT, MODEL_JSON

    run_dir = Path(run_dir)
    recognizer.model.save_pretrained(str(run_dir / MODEL_DIR))
    recognizer.processor.save_pretrained(str(run_dir / MODEL_DIR))
    write_json(run_dir / MODEL_JSON, {
        "format": FORMAT,
        "kind": KIND,
        "model_dir": MODEL_DIR,
        "source": recognizer.source,
        "architecture": type(recognizer.model).__name__,
        "sampling_rate": recognizer.sampling_rate,
        "transcript_column": recognizer.transcript_column,
        "characters": "".join(sorted(recognizer.characters)),
    })


def load_recognizer(run_dir: str | Path) -> SpeechRecognizer:
    """Rebuild the `SpeechRecognizer` of a ``ctc`` run directory (eval mode, CPU) without the training code."""
    from transformers import AutoModelForCTC, Wav2Vec2Processor

    from transferlab.artifacts import MODEL_JSON

    run_dir = Path(run_dir)
    info = read_json(run_dir / MODEL_JSON)
    folder = run_dir / info.get("model_dir", MODEL_DIR)
    if not folder.is_dir():
        raise TransferlabError(f"{run_dir} has no model folder {folder.name!r}: did its fit finish?")
    try:
        model = AutoModelForCTC.from_pretrained(str(folder))
        processor = Wav2Vec2Processor.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise TransferlabError(f"cannot read the speech model in {folder}: {exc}") from None
    recognizer = SpeechRecognizer(model, processor, transcript_column=info.get("transcript_column", "transcript"),
                                  source=info.get("source", ""))
    return recognizer.eval()
