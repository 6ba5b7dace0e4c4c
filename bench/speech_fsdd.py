"""Benchmark: speech transfer on the Free Spoken Digit Dataset with Resemblyzer's pretrained speaker encoder
(GE2E, 3-layer LSTM, trained on 16 kHz speech; FSDD's 8 kHz clips are resampled to 16 kHz, so the band above
4 kHz that the encoder saw in training is empty here).

Data (/work/shared/data/fsdd): 3,000 clips ``{digit}_{speaker}_{index}.wav``, six speakers x ten digits x 50;
the dataset's own split puts index 0-4 in test and 5-49 in train.

(a) Speaker identification from 5 clips per speaker (label = speaker, 6 classes). Per seed, ``--shots`` clips per
    speaker are drawn from the train split (any digit), ``--val-per-speaker`` further ones validate; test = the
    whole test split (50 clips per speaker, all digits). ``features``: the frozen pretrained encoder embeds each clip
    (cached), logistic regression on top (C picked on validation). ``scratch``: the same LSTM encoder + linear head,
    randomly initialised, trained end to end (``--scratch-epochs``, batch 8, AdamW, ``--scratch-lr``, cosine; best
    validation epoch kept).
(b) Spoken digits across speakers (label = digit, 10 classes): train on four speakers (their train split, 1,800
    clips), validate on the same four speakers' test split (200 clips), test on the two unseen ``--test-speakers``
    (all their 1,000 clips; default george, Greek accent, and nicolas, Belgian French: accents that no training
    speaker has). ``finetune`` (pretrained encoder, head-only first epoch, then layer-wise learning rates from
    ``--finetune-lr``) vs ``scratch`` (same architecture, random init, ``--scratch-lr``), both ``--digit-epochs``
    epochs of batch 32; ``features`` (frozen encoder + logistic regression) as a cheap reference.

``scratch-cnn`` (both parts): the small log-mel CNN ``audio-cnn`` trained from scratch with the ``scratch`` settings:
a from-scratch baseline that can learn (the randomly initialised LSTM cannot: its 1.6 s windows zero-pad FSDD's
sub-second clips, and a random LSTM's final state forgets the speech before the padding, so every clip embeds alike).

Seeds draw the clips of (a), head/encoder initialisation and batch order. The logistic regression fit is
deterministic, so ``features`` in (b) gives the same number for every seed.

How this differs from published setups: FSDD results are usually reported on the dataset's own split, where every
test speaker also speaks in training (MFCC + CNN models reach the high 90s there); (b) holds out speakers, which is
harder. Resemblyzer's speaker verification results (VoxCeleb/LibriSpeech, 16 kHz, seconds-long utterances) are not
comparable with 6-way identification from sub-second 8 kHz digits.

Usage:  python bench/speech_fsdd.py [--seeds 0 1 2] [--parts speakers digits] [--shots 5] [--scratch-epochs 30]
            [--digit-epochs 10] [--test-speakers george nicolas] [--json results.json] [--out-dir DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from _common import (
    DATA,
    machine_line,
    markdown_table,
    mean_std,
    percent,
    taken_by,
    write_manifest,
)

from transferlab.api import fit


class Clip(NamedTuple):
    path: Path
    digit: str
    speaker: str
    index: int


def read_clips(root: Path) -> list[Clip]:
    clips = []
    for path in sorted((root / "recordings").glob("*.wav")):
        digit, speaker, index = path.stem.split("_")
        clips.append(Clip(path, digit, speaker, int(index)))
    return clips


def speakers_of(root: Path) -> dict[str, dict]:
    return {name: info for name, info in json.loads((root / "speakers.json").read_text()).items()
            if not name.startswith("_")}


def thin(clips: list[Clip], size: int | None, seed: int) -> list[Clip]:
    """A seeded random subset of ``size`` clips (quick mode), or all of them."""
    return clips if size is None or size >= len(clips) else sorted(random.Random(seed).sample(clips, size))


def speaker_data(clips: list[Clip], seed: int, args, tmp: Path) -> dict[str, str]:
    """(a): manifests with label = speaker: shots + validation clips per speaker from the train split; test split."""
    rng, train, val = random.Random(seed), [], []
    for speaker in sorted({c.speaker for c in clips}):
        pool = [c for c in clips if c.speaker == speaker and c.index >= 5]
        rng.shuffle(pool)
        train += pool[: args.shots]
        val += pool[args.shots: args.shots + args.val_per_speaker]
    test = thin([c for c in clips if c.index < 5], args.test_size, 0)
    return {role: str(write_manifest(tmp / f"speakers-{role}-{seed}.csv", [(c.path, c.speaker) for c in part]))
            for role, part in (("train", train), ("val", val), ("test", test))}


def digit_data(clips: list[Clip], args, tmp: Path) -> dict[str, str]:
    """(b): manifests with label = digit; train/val from the training speakers, test = the unseen speakers."""
    seen = [c for c in clips if c.speaker not in args.test_speakers]
    parts = {"train": thin([c for c in seen if c.index >= 5], args.train_size, 0),
             "val": thin([c for c in seen if c.index < 5], args.val_size, 0),
             "test": thin([c for c in clips if c.speaker in args.test_speakers], args.test_size, 0)}
    return {role: str(write_manifest(tmp / f"digits-{role}.csv", [(c.path, c.digit) for c in part]))
            for role, part in parts.items()}


# row name -> (method, backbone): the pretrained speaker encoder, its architecture from scratch, and the small
# log-mel CNN that trains well from scratch
ROWS = {"features": ("features", "resemblyzer"), "finetune": ("finetune", "resemblyzer"),
        "scratch": ("scratch", "resemblyzer"), "scratch-cnn": ("scratch", "audio-cnn")}


def settings(part: str, row: str, data: dict, seed: int, args, out: Path) -> dict:
    method, backbone = ROWS[row]
    common = {**data, "method": method, "backbone": backbone, "seed": seed, "out": out,
              "precision": args.precision, **taken_by(method, args.quick_overrides)}
    if method == "features":
        return {**common, "head": "logistic"}
    if part == "speakers":  # scratch on 5 clips per speaker: small batches for more steps
        return {**common, "epochs": args.scratch_epochs, "batch_size": 8, "lr": args.scratch_lr}
    return {**common, "epochs": args.digit_epochs, "batch_size": 32,
            "lr": args.finetune_lr if method == "finetune" else args.scratch_lr}


def run(part: str, method: str, data: dict, seed: int, args, tmp: Path) -> dict:
    started = time.perf_counter()
    out = tmp / "runs" / f"{part}-{method}-{seed}"
    metrics = fit(settings(part, method, data, seed, args, out), progress=False).metrics
    row = {"part": part, "method": method, "seed": seed, "test_accuracy": metrics["test"]["accuracy"],
           "test_macro_f1": metrics["test"]["macro_f1"], "val_accuracy": metrics["val"]["accuracy"],
           "train_clips": metrics["train_images"], "train_seconds": metrics["train_seconds"],
           "wall_seconds": round(time.perf_counter() - started, 1)}
    print(f"  {part} seed {seed} {method}: test accuracy {row['test_accuracy']:.4f} (val {row['val_accuracy']:.4f}),"
          f" {row['train_clips']} training clips, train {row['train_seconds']:.1f} s, wall {row['wall_seconds']:.0f} s",
          flush=True)
    return row


def report(rows: list[dict], args, wall: float) -> None:
    print(f"\nFSDD with the resemblyzer encoder; accuracy in %, mean ± std over seeds {args.seeds}; wall time "
          f"{wall:.0f} s{' (QUICK MODE: tiny samples, not a result)' if args.quick else ''}")
    titles = {"speakers": f"(a) speaker identification, 6 speakers, {args.shots} clips each; test: the test split",
              "digits": f"(b) spoken digits; test speakers {', '.join(args.test_speakers)} unseen in training"}
    for part in args.parts:
        table = []
        for method in dict.fromkeys(r["method"] for r in rows if r["part"] == part):
            mine = [r for r in rows if r["part"] == part and r["method"] == method]
            table.append([method, percent([r["test_accuracy"] for r in mine]),
                          percent([r["test_macro_f1"] for r in mine]), percent([r["val_accuracy"] for r in mine]),
                          mean_std([r["train_seconds"] for r in mine], 0), mine[0]["train_clips"]])
        print(f"\n{titles[part]}")
        print(markdown_table(["method", "test accuracy", "test macro-F1", "val accuracy", "train time (s)",
                              "training clips"], table))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--parts", nargs="+", choices=["speakers", "digits"], default=["speakers", "digits"])
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS),
                        help="scratch-cnn: the small log-mel CNN 'audio-cnn' from scratch")
    parser.add_argument("--shots", type=int, default=5, help="(a) training clips per speaker")
    parser.add_argument("--val-per-speaker", type=int, default=5, help="(a) validation clips per speaker")
    parser.add_argument("--scratch-epochs", type=int, default=30, help="(a) epochs of the scratch model")
    parser.add_argument("--digit-epochs", type=int, default=10, help="(b) epochs of finetune and scratch")
    parser.add_argument("--finetune-lr", type=float, default=1e-3, help="head lr; the encoder's decays from it")
    parser.add_argument("--scratch-lr", type=float, default=1e-3)
    parser.add_argument("--test-speakers", nargs=2, default=["george", "nicolas"], help="(b) unseen speakers")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    parser.add_argument("--data", type=Path, default=DATA / "fsdd")
    parser.add_argument("--json", type=Path, help="also write every run's numbers here")
    parser.add_argument("--out-dir", type=Path, help="keep the manifests and run directories here")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: seed 0, one epoch (no head-only epoch), tiny subsets")
    args = parser.parse_args()
    args.train_size = args.val_size = args.test_size = None
    args.quick_overrides = {}
    if args.quick:
        args.seeds, args.scratch_epochs, args.digit_epochs, args.val_per_speaker = args.seeds[:1], 1, 1, 2
        args.train_size, args.val_size, args.test_size = 64, 20, 60
        args.quick_overrides = {"head_epochs": 0}
    return args


def main() -> None:
    args = parse_args()
    speakers = speakers_of(args.data)
    unknown = sorted(set(args.test_speakers) - set(speakers))
    if unknown:
        raise SystemExit(f"unknown test speaker(s) {', '.join(unknown)}; FSDD has {', '.join(speakers)}")
    print(machine_line(), flush=True)
    train_speakers = [s for s in speakers if s not in args.test_speakers]
    print("(b) train speakers: " + ", ".join(f"{s} ({speakers[s]['accent']})" for s in train_speakers)
          + "; test speakers: " + ", ".join(f"{s} ({speakers[s]['accent']})" for s in args.test_speakers), flush=True)
    clips, started, rows = read_clips(args.data), time.perf_counter(), []
    with tempfile.TemporaryDirectory(prefix="speech-fsdd-") as tmp:
        work = args.out_dir or Path(tmp)
        if "speakers" in args.parts:
            for seed in args.seeds:
                data = speaker_data(clips, seed, args, work)
                rows += [run("speakers", method, data, seed, args, work) for method in args.rows
                         if method != "finetune"]
        if "digits" in args.parts:
            data = digit_data(clips, args, work)
            rows += [run("digits", method, data, seed, args, work)
                     for method in args.rows for seed in args.seeds]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    report(rows, args, time.perf_counter() - started)


if __name__ == "__main__":
    main()
