"""`python -m runner.predict --model runs:/<run id>/model IMAGE_OR_FOLDER ...`

Classifies image files with a model the runner logged to MLflow: prints the top labels with
their probabilities, and writes each image with its top label and probability drawn on it
(`--out`, default `outputs/predictions/`). Class names come from the logged model's metadata.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from runner.data.images import decode_files, is_image_name  # noqa: E402
from runner.report import default_tracking_uri  # noqa: E402


def image_files(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.is_file() and is_image_name(p))
        elif item.is_file():
            files.append(item)
        else:
            raise SystemExit(f"error: {item} is neither an image file nor a folder.")
    if not files:
        raise SystemExit("error: no image files to classify.")
    return files


def label_probabilities(probabilities: np.ndarray, class_names: list[str]) -> np.ndarray:
    """Per-class probabilities; a binary model's single sigmoid becomes two columns."""
    if probabilities.shape[1] == 1 and len(class_names) == 2:
        return np.concatenate([1 - probabilities, probabilities], axis=1)
    return probabilities


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m runner.predict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="+", help="image files or folders of images")
    parser.add_argument("--model", required=True, help="MLflow model URI: runs:/<run id>/model")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="default: $MLFLOW_TRACKING_URI, else ./mlruns/mlflow.db",
    )
    parser.add_argument("--top", type=int, default=3, help="labels to print per image")
    parser.add_argument("--out", type=Path, default=Path("outputs/predictions"))
    args = parser.parse_args(argv)

    import mlflow
    from PIL import Image, ImageDraw

    mlflow.set_tracking_uri(args.tracking_uri or default_tracking_uri())
    class_names = list(mlflow.models.get_model_info(args.model).metadata["class_names"])
    model = mlflow.keras.load_model(args.model)  # Keras safe mode underneath
    height, width, channels = model.input_shape[1:]
    files = image_files(args.images)
    images, kept, skipped = decode_files(files, size=(height, width), channels=channels)
    for item in skipped:
        print(f"{item.path}: skipped, {item.reason}")
    probabilities = label_probabilities(np.asarray(model.predict(images, verbose=0)), class_names)
    args.out.mkdir(parents=True, exist_ok=True)
    for index, scores in zip(kept, probabilities, strict=True):
        path = files[index]
        order = np.argsort(scores)[::-1][: args.top]
        ranked = ", ".join(f"{class_names[i]} {scores[i]:.1%}" for i in order)
        print(f"{path}: {ranked}")
        annotated = Image.open(path).convert("RGB")
        annotated.thumbnail((512, 512))
        draw = ImageDraw.Draw(annotated)
        text = f"{class_names[order[0]]}: {scores[order[0]]:.1%}"
        draw.rectangle((0, 0, 8 + 7 * len(text), 18), fill=(0, 0, 0))
        draw.text((4, 3), text, fill=(0, 255, 0))
        annotated.save(args.out / f"{path.stem}.png")
    print(f"[runner.predict] annotated images in {args.out.resolve()}")


if __name__ == "__main__":
    main()
