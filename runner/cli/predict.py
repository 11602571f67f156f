"""`python -m runner.predict --model MODEL IMAGES...`: classify image files with a trained model.
`python -m runner.predict --pretrained vgg16 IMAGES...`: zero-shot, with an ImageNet network.

MODEL is an MLflow model URI (`runs:/<run id>/model`, `models:/<name>@champion`,
`models:/<name>/<version>`, `models:/m-<model id>`) or a `.keras` file the runner saved (its job
folder's `checkpoints/best.keras`; the class names come from `classes.json` beside it). IMAGES
are files, folders (searched recursively) and glob patterns (`'photos/**/*.jpg'`).

For each image it prints the top labels with their probabilities (multi-label models: every
label at or above the threshold), writes a copy with the answer drawn in a caption band
(`--out`, default `outputs/predictions/`), and writes `predictions.csv` and `predictions.json`
there: path, labels, probabilities, and for an input that could not be used, why. The model
applies the training preprocessing itself: it takes images as they are read.

ImageNet mode (`--pretrained`): weights and ImageNet's class index are fetched and cached like
the training weights (RUNNER_WEIGHTS_MIRROR, RUNNER_DATA_DIR). Every problem is one line on
stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.cli.app import run_command
from runner.config.schema import TTA
from runner.core.errors import RunnerError
from runner.data.images import decode_files, display, is_image_name
from runner.evaluation.classifiers import (
    answers,
    imagenet_classifier,
    label_probabilities,
    logged_classifier,
)
from runner.evaluation.model_files import TRUST_HELP
from runner.evaluation.tta import tta_mean


@dataclass
class Inputs:
    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def collect_inputs(items: list[str]) -> Inputs:
    """Files, folders (recursive) and globs; what is not an image is listed with the reason."""
    found = Inputs()
    for item in items:
        matches = sorted(glob.glob(item, recursive=True)) if glob.has_magic(item) else [item]
        if not matches:
            found.skipped.append((item, "no file matches this pattern"))
        for match in map(Path, matches):
            if match.is_dir():
                for path in sorted(p for p in match.rglob("*") if p.is_file()):
                    if is_image_name(path):
                        found.files.append(path)
                    else:
                        found.skipped.append((display(path), "not an image file name"))
            elif match.is_file():
                found.files.append(match)
            else:
                found.skipped.append((display(match), "no such file or folder"))
    return found


# --------------------------------------------------------------------------------- output


def annotate(path: Path, lines: list[str], out: Path) -> None:
    """The image, enlarged to at least 320 px wide, above a caption band that fits the text."""
    from PIL import Image, ImageDraw, ImageFont

    with Image.open(path) as opened:
        image = opened.convert("RGB")
    scale = 320 / image.width
    if scale > 1.0:  # a 28x28 digit: enlarged, pixels kept sharp
        image = image.resize((320, round(image.height * scale)), Image.NEAREST)
    else:
        image.thumbnail((768, 768))
    font = ImageFont.load_default(size=max(14, image.width // 22))
    line_height = font.getbbox("Ag")[3] + 6
    canvas = Image.new("RGB", (image.width, image.height + line_height * len(lines) + 8), "black")
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for index, line in enumerate(lines):
        text = line
        while draw.textlength(text, font=font) > image.width - 12 and len(text) > 4:
            text = text[:-2]
        draw.text((6, image.height + 4 + index * line_height), text, fill=(80, 255, 80), font=font)
    canvas.save(out)


def unique_name(path: Path, taken: set[str]) -> str:
    """`name.png`; `name-2.png`, ... when another input has the same stem (Cat/1, Dog/1)."""
    stem = display(path.stem)  # written in predictions.csv/json as UTF-8
    name, count = f"{stem}.png", 1
    while name in taken:
        count += 1
        name = f"{stem}-{count}.png"
    taken.add(name)
    return name


def write_tables(rows: list[dict[str, Any]], out: Path) -> None:
    (out / "predictions.json").write_text(json.dumps(rows, indent=2))
    with (out / "predictions.csv").open("w", newline="") as stream:
        writer = csv.DictWriter(stream, ["path", "labels", "probabilities", "skipped", "image"])
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    **row,
                    "labels": ";".join(row["labels"]),
                    "probabilities": ";".join(f"{p:.6f}" for p in row["probabilities"]),
                }
            )


# ----------------------------------------------------------------------------------- main


def positive_int(text: str) -> int:
    """argparse's type for counts: a whole number of at least 1, or a one-line usage error."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"should be a whole number >= 1. Received: {text!r}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m runner.predict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="+", help="image files, folders or glob patterns")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model", help="runs:/<id>/model, models:/<name>@<alias>, or a .keras file"
    )
    source.add_argument(
        "--pretrained",
        metavar="BACKBONE",
        help="a keras.applications network with its ImageNet head: vgg16, vgg19, resnet50, "
        "inception_v3, inception_resnet_v2, xception, mobilenet, mobilenet_v2, efficientnet_b0",
    )
    parser.add_argument(
        "--weights-mirror",
        default=os.environ.get("RUNNER_WEIGHTS_MIRROR", "https://storage.googleapis.com"),
        help="(--pretrained) where the weights and the class index are fetched from",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("RUNNER_DATA_DIR", "~/.cache/runner")),
        help="(--pretrained) the cache; files go to <data-dir>/keras-applications/",
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="(--pretrained) accept cached or mirrored files whose md5 differs from Keras' own",
    )
    parser.add_argument("--trust-model", action="store_true", help=f"(--model) {TRUST_HELP}")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="default: $MLFLOW_TRACKING_URI, else mlruns/mlflow.db under $RUNNER_ROOT or here",
    )
    parser.add_argument(
        "--top",
        type=positive_int,
        default=None,
        help="labels to print per image (3; 5 with --pretrained)",
    )
    parser.add_argument(
        "--tta",
        choices=[mode.value for mode in TTA],
        default="none",
        help="test-time augmentation (for mirror-symmetric classes): flip averages each "
        "image's probabilities with its mirror's; flip_translate also with both shifted by a "
        "pixel (six views)",
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/predictions"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))


def run(args: argparse.Namespace) -> None:
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunnerError(
            f"--out {args.out} cannot be created ({error.strerror}): pick a folder you can write."
        ) from None
    inputs = collect_inputs(args.images)
    if not inputs.files:
        reasons = "; ".join(f"{p}: {r}" for p, r in inputs.skipped[:3])
        raise RunnerError(f"No image files to classify ({reasons or 'nothing given'}).")
    if args.pretrained:
        classifier = imagenet_classifier(
            args.pretrained,
            mirror=args.weights_mirror,
            data_dir=args.data_dir.expanduser(),
            verify=not args.no_verify,
        )
    else:
        classifier = logged_classifier(args.model, args.tracking_uri, trust=args.trust_model)
    top = args.top or (5 if args.pretrained else 3)
    height, width, channels = classifier.input_shape
    images, kept, undecodable = decode_files(inputs.files, size=(height, width), channels=channels)
    skipped = inputs.skipped + [(item.path, item.reason) for item in undecodable]
    if not len(kept):
        raise RunnerError(
            f"None of the {len(inputs.files)} input file(s) could be decoded as an image "
            f"(e.g. {skipped[0][0]}: {skipped[0][1]})."
        )
    raw = tta_mean(classifier.classify, images, args.tta)
    probabilities = label_probabilities(raw, classifier.class_names)
    rows: list[dict[str, Any]] = []
    taken: set[str] = set()
    for index, scores in zip(kept, probabilities, strict=True):
        path = inputs.files[index]
        ranked = answers(scores, classifier, top)
        text = ", ".join(f"{label} {p:.1%}" for label, p in ranked) or "no label over the threshold"
        print(f"{display(path)}: {text}")
        name = unique_name(path, taken)
        caption = [f"{label}: {p:.1%}" for label, p in ranked[:3]] or ["(no label)"]
        annotate(path, caption, args.out / name)
        labels, chances = [label for label, _ in ranked], [p for _, p in ranked]
        rows.append(
            {
                "path": display(path),
                "labels": labels,
                "probabilities": chances,
                "skipped": "",
                "image": name,
            }
        )
    for path, reason in skipped:
        print(f"{path}: skipped, {reason}")
        rows.append(
            {"path": path, "labels": [], "probabilities": [], "skipped": reason, "image": ""}
        )
    write_tables(rows, args.out)
    print(
        f"[runner.predict] {len(kept)} image(s) classified, {len(skipped)} skipped; annotated "
        f"images, predictions.csv and predictions.json in {args.out.resolve()}"
    )


def entry() -> None:
    run_command(main)
