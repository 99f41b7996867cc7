"""``actionpp evaluate CHECKPOINT --data ROOT --split val|test [--json] [--save-predictions DIR] [--reestimate-bn N]``.

CHECKPOINT is a ``.pt`` written by ``actionpp train`` or a run directory (its
``best.pt`` or ``last.pt``, following the run's ``eval.select``). ``--reestimate-bn N`` scores the
split as stored, then with BatchNorm's running statistics re-estimated from N unlabelled training
images, and from about N composed as the run's fine-tuning batches (:mod:`actionpp.bnstats`, a
diagnostic; val or train only).
"""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate a trained checkpoint on a split (Dice, Jaccard, HD95, ASD per class per volume)",
        description="Evaluate a checkpoint with the project's protocol (actionpp.evaluate.evaluate).",
    )
    p.add_argument("checkpoint", help="checkpoint file (.pt) or run directory")
    p.add_argument("--data", required=True, help="dataset folder, pack file, 'phantom' or 'shared'")
    p.add_argument("--split", default="val", choices=["val", "test", "train"],
                   help="split to evaluate (ACDC val / test, LA test; train: the training volumes)")
    p.add_argument("--which", choices=["best", "last", "auto"], default="auto",
                   help="with a run directory: best.pt, last.pt or the run's eval.select (auto)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--save-predictions", default=None, metavar="DIR",
                   help="write each predicted volume as NIfTI into DIR (a new or empty folder, or one an earlier "
                        "evaluate wrote)")
    p.add_argument("--overwrite", action="store_true",
                   help="with --save-predictions: replace predictions an earlier evaluate wrote into DIR")
    p.add_argument("--partial", action="store_true",
                   help="score the volumes of the split that are present when some listed ones are absent "
                        "(they are named in the output); without it such a split is refused")
    p.add_argument("--reestimate-bn", type=int, default=None, metavar="N",
                   help="diagnostic (val or train only): also score with BatchNorm's running statistics re-estimated "
                        "from N unlabelled training images of the run's data, and from about N composed as the "
                        "run's fine-tuning batches; the checkpoint is not changed")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from actionpp.cli import UsageError
    from actionpp.evaluate import evaluate_checkpoint

    if args.overwrite and args.save_predictions is None:
        raise UsageError("--overwrite replaces saved predictions: it needs --save-predictions DIR")
    if args.reestimate_bn is not None:
        return _run_bn(args, UsageError)

    report = evaluate_checkpoint(
        args.checkpoint, data=args.data, split=args.split, which=args.which, device=args.device,
        save_predictions=args.save_predictions, partial=args.partial, overwrite=args.overwrite,
    )
    if report["note"]:
        print(f"note: {report['note']}", file=sys.stderr)
    if report["missing"]:
        print(f"warning: partial {args.split} split: {len(report['missing'])} listed volume(s) absent and not "
              f"scored: {', '.join(report['missing'])}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        s = report["summary"]
        print(f"{report['checkpoint']} on {report['data']} [{report['split']}], {report['volumes']} volumes")
        for key, value in s.items():
            print(f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}")
    return 0


def _run_bn(args: argparse.Namespace, usage_error: type[Exception]) -> int:
    """``--reestimate-bn N``: the split as stored and after re-estimating BatchNorm's statistics."""
    from actionpp.bnstats import check_batchnorm

    if args.reestimate_bn < 2:
        raise usage_error(f"--reestimate-bn needs at least 2 images, got {args.reestimate_bn}")
    if args.save_predictions is not None or args.partial:
        raise usage_error("--reestimate-bn scores the whole split without saving predictions: drop "
                          "--save-predictions / --partial")
    if args.split == "test":
        raise usage_error("--reestimate-bn is a diagnostic, and a diagnostic may suggest a change of protocol: "
                          "run it on --split val (the test split is never used for a choice)")
    report = check_batchnorm(args.checkpoint, split=args.split, which=args.which, images=args.reestimate_bn,
                             device=args.device, data=args.data)
    if report["note"]:
        print(f"note: {report['note']}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['checkpoint']} [{report['split']}], BatchNorm statistics as stored and re-estimated "
          f"(training images of {report['data']}, no augmentation, seed {report['seed']}):")
    ways = (("as stored", "stored", "the checkpoint's own"),
            ("unlabelled", "unlabelled", f"{report['images']} unlabelled images, batches of {report['batch']}"),
            ("as in training", "training", report["training_batches"]),
            ("dropout on", "training_dropout", "the same batches, dropout on"))
    for label, key, how in ways:
        s = report[key]
        classes = ", ".join(f"{c} {v:.3f}" for c, v in s["dice_per_class"].items())
        print(f"  {label:>14}: Dice {s['dice']:.3f} ({classes}); missed structures {s['empty']['missed']}  [{how}]")
    return 0
