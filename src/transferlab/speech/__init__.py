"""Speech recognition: a pretrained speech encoder with a CTC head fine-tuned on transcribed audio
(``--method ctc``); transcript manifests, the character vocabulary, WER/CER, and the saved recogniser.

The method itself (`transferlab.speech.ctc`) registers with `transferlab.methods`; this package's top level only
holds what loading and running a trained recogniser needs.
"""

from transferlab.speech.metrics import error_rates
from transferlab.speech.recognizer import (
    SpeechRecognizer,
    build_recognizer,
    ctc_greedy_decode,
    load_recognizer,
    save_recognizer,
)
from transferlab.speech.transcripts import (
    build_vocabulary,
    load_transcribed_audio,
    normalize_transcript,
)

__all__ = [
    "SpeechRecognizer",
    "build_recognizer",
    "build_vocabulary",
    "ctc_greedy_decode",
    "error_rates",
    "load_recognizer",
    "load_transcribed_audio",
    "normalize_transcript",
    "save_recognizer",
]
