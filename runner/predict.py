"""`python -m runner.predict --model runs:/<run id>/model IMAGE_OR_FOLDER ...`
`python -m runner.predict --pretrained vgg16 IMAGE_OR_FOLDER ...`

Classifies image files with a model the runner logged to MLflow, or with a keras.applications
network and its ImageNet head (zero-shot, as in the tutorial): prints the top labels with their
probabilities, and writes each image with its top label and probability drawn on it (`--out`,
default `outputs/predictions/`). Class names come from the logged model's metadata, or from
ImageNet's class index, fetched and cached like the weights (RUNNER_WEIGHTS_MIRROR,
RUNNER_DATA_DIR).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from runner.data.images import decode_files, is_image_name  # noqa: E402
from runner.store import default_tracking_uri  # noqa: E402


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


def logged_classifier(args: argparse.Namespace):
    """A model the runner logged: it takes raw pixels and knows its class names."""
    import mlflow

    mlflow.set_tracking_uri(args.tracking_uri or default_tracking_uri())
    class_names = list(mlflow.models.get_model_info(args.model).metadata["class_names"])
    model = mlflow.keras.load_model(args.model)  # Keras safe mode underneath
    return (lambda images: model.predict(images, verbose=0)), class_names, model.input_shape[1:]


def imagenet_classifier(args: argparse.Namespace):
    """keras.applications' network with its 1000-class head, weights fetched into the cache."""
    import json

    from runner.models import backbones

    name = args.pretrained
    spec = backbones.spec_of(name)
    where = dict(
        mirror=args.weights_mirror, data_dir=args.data_dir.expanduser(), verify=not args.no_verify
    )
    model = backbones.build_backbone(name, None, top=True)
    weights = backbones.fetch_file(spec.top.spec(), **where)
    backbones.load_weights(model, weights, f"the ImageNet weights of {name}")
    index = json.loads(backbones.fetch_file(backbones.CLASS_INDEX, **where).read_text())
    class_names = [index[str(i)][1] for i in range(len(index))]
    size = spec.default_size

    def classify(images: np.ndarray) -> np.ndarray:
        inputs = backbones.preprocess_input(name, images.astype("float32"))
        return model.predict(inputs, verbose=0)

    return classify, class_names, (size, size, 3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m runner.predict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="+", help="image files or folders of images")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="MLflow model URI: runs:/<run id>/model")
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
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="default: $MLFLOW_TRACKING_URI, else ./mlruns/mlflow.db",
    )
    parser.add_argument(
        "--top", type=int, default=None, help="labels to print per image (3; 5 with --pretrained)"
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/predictions"))
    args = parser.parse_args(argv)

    from PIL import Image, ImageDraw

    from runner.errors import RunnerError

    files = image_files(args.images)
    try:
        if args.pretrained:
            classify, class_names, (height, width, channels) = imagenet_classifier(args)
        else:
            classify, class_names, (height, width, channels) = logged_classifier(args)
    except RunnerError as error:
        raise SystemExit(f"error: {error}") from None
    top = args.top or (5 if args.pretrained else 3)
    images, kept, skipped = decode_files(files, size=(height, width), channels=channels)
    for item in skipped:
        print(f"{item.path}: skipped, {item.reason}")
    if not len(kept):
        raise SystemExit("error: none of the inputs could be decoded as an image.")
    probabilities = label_probabilities(np.asarray(classify(images)), class_names)
    args.out.mkdir(parents=True, exist_ok=True)
    for index, scores in zip(kept, probabilities, strict=True):
        path = files[index]
        order = np.argsort(scores)[::-1][:top]
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
