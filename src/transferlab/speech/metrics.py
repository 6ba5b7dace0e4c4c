"""Word and character error rates of transcripts, computed with jiwer over a whole corpus.

WER = (S + D + I) / N over words and CER the same over characters, where S, D and I are the substitutions,
deletions and insertions of the minimal alignment of hypothesis to reference and N is the number of reference
words (characters). Both are totals over the corpus (not means of per-clip rates) and can exceed 1 when the
hypotheses insert much.
"""

from __future__ import annotations

__all__ = ["error_rates"]


def error_rates(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """``{"wer": ..., "cer": ...}`` of ``hypotheses`` against ``references`` (same length, non-empty references).

    Raises:
        ValueError: the lists differ in length, are empty, or a reference is empty.
    """
    import jiwer  # imported here: only speech recognition needs it

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references:
        raise ValueError("no transcripts to score")
    if not all(reference.strip() for reference in references):
        raise ValueError("a reference transcript is empty; WER and CER need non-empty references")
    return {"wer": float(jiwer.wer(references, hypotheses)), "cer": float(jiwer.cer(references, hypotheses))}
