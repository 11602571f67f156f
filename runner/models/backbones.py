"""Pretrained `keras.applications` networks: which constructor, which weights file, which input.

The networks themselves are Keras' own (never re-typed here). What Keras keeps inside each
constructor, this table states once so the runner can fetch the weights through a mirror into its
own cache (Keras' `weights="imagenet"` always downloads from Google into `~/.keras`): the file's
path on storage.googleapis.com and the md5 Keras checks it against (MobileNet's files have none).
`tests/test_pretrained.py` checks every name and hash against Keras' source.

Each backbone's `preprocess_input` becomes built-in layers inside the model, so a saved model
takes raw 0-255 images and loads in Keras' safe mode without this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from runner.config.schema import FileSpec
from runner.core.errors import RunnerError
from runner.data.download import ConfigKeys, fetch

# caffe: RGB->BGR, minus the ImageNet mean; tf: scaled to [-1, 1]; none: the model does its own.
PreprocessMode = Literal["caffe", "tf", "none"]

KERAS_APPLICATIONS = "tensorflow/keras-applications"
WEIGHTS_MIRROR_ENV = "RUNNER_WEIGHTS_MIRROR"
CLASS_INDEX = FileSpec(
    name="download.tensorflow.org/data/imagenet_class_index.json",
    md5="c2c37ea517e94d9795004a39431a14cb",
)


@dataclass(frozen=True)
class WeightsFile:
    path: str  # below the mirror's root (https://storage.googleapis.com)
    md5: str | None

    def spec(self, file_hash: str | None = None) -> FileSpec:
        expected = file_hash or self.md5
        if expected and len(expected) == 64:
            return FileSpec(name=self.path, sha256=expected)
        return FileSpec(name=self.path, md5=expected)


@dataclass(frozen=True)
class BackboneSpec:
    constructor: str  # the name in keras.applications
    module: str  # keras.applications.<module>.preprocess_input / decode_predictions
    preprocess: PreprocessMode
    default_size: int
    min_size: int  # Keras' own minimum input side without the top
    notop: WeightsFile
    top: WeightsFile


def _keras_file(
    folder: str,
    stem: str,
    notop_md5: str | None,
    top_md5: str | None,
    notop_suffix: str = "_notop.h5",
    top_suffix: str = ".h5",
) -> dict:
    base = f"{KERAS_APPLICATIONS}/{folder}/{stem}"
    return {
        "notop": WeightsFile(base + notop_suffix, notop_md5),
        "top": WeightsFile(base + top_suffix, top_md5),
    }


_KERNELS = "weights_tf_dim_ordering_tf_kernels"
BACKBONES: dict[str, BackboneSpec] = {
    "vgg16": BackboneSpec(
        "VGG16",
        "vgg16",
        "caffe",
        224,
        32,
        **_keras_file(
            "vgg16",
            f"vgg16_{_KERNELS}",
            "6d6bbae143d832006294945121d1f1fc",
            "64373286793e3c8b2b4e3219cbf3544b",
        ),
    ),
    "vgg19": BackboneSpec(
        "VGG19",
        "vgg19",
        "caffe",
        224,
        32,
        **_keras_file(
            "vgg19",
            f"vgg19_{_KERNELS}",
            "253f8cb515780f3b799900260a226db6",
            "cbe5617147190e668d6c5d5026f83318",
        ),
    ),
    "resnet50": BackboneSpec(
        "ResNet50",
        "resnet50",
        "caffe",
        224,
        32,
        **_keras_file(
            "resnet",
            f"resnet50_{_KERNELS}",
            "4d473c1dd8becc155b73f8504c6f6626",
            "2cb95161c43110f7111970584f804107",
        ),
    ),
    "inception_v3": BackboneSpec(
        "InceptionV3",
        "inception_v3",
        "tf",
        299,
        75,
        **_keras_file(
            "inception_v3",
            f"inception_v3_{_KERNELS}",
            "bcbd6486424b2319ff4ef7d526e38f63",
            "9a0d58056eeedaa3f26cb7ebd46da564",
        ),
    ),
    "inception_resnet_v2": BackboneSpec(
        "InceptionResNetV2",
        "inception_resnet_v2",
        "tf",
        299,
        75,
        **_keras_file(
            "inception_resnet_v2",
            f"inception_resnet_v2_{_KERNELS}",
            "d19885ff4a710c122648d3b5c3b684e4",
            "e693bd0210a403b3192acc6073ad2e96",
        ),
    ),
    "xception": BackboneSpec(
        "Xception",
        "xception",
        "tf",
        299,
        71,
        **_keras_file(
            "xception",
            f"xception_{_KERNELS}",
            "b0042744bf5b25fce3cb969f33bebb97",
            "0a58e3b7378bc2990ea3b43d5981f1f6",
        ),
    ),
    # MobileNets: Keras picks the file by input size; the convolution weights do not depend on
    # it, so the 224 files serve every size.
    "mobilenet": BackboneSpec(
        "MobileNet",
        "mobilenet",
        "tf",
        224,
        32,
        **_keras_file(
            "mobilenet",
            "mobilenet_1_0_224",
            None,
            None,
            notop_suffix="_tf_no_top.h5",
            top_suffix="_tf.h5",
        ),
    ),
    "mobilenet_v2": BackboneSpec(
        "MobileNetV2",
        "mobilenet_v2",
        "tf",
        224,
        32,
        **_keras_file(
            "mobilenet_v2",
            f"mobilenet_v2_{_KERNELS}_1.0_224",
            None,
            None,
            notop_suffix="_no_top.h5",
        ),
    ),
    "efficientnet_b0": BackboneSpec(
        "EfficientNetB0",
        "efficientnet",
        "none",
        224,
        32,
        notop=WeightsFile(
            "keras-applications/efficientnetb0_notop.h5", "50bc09e76180e00e4465e1a485ddc09d"
        ),
        top=WeightsFile("keras-applications/efficientnetb0.h5", "902e53a9f72be733fc0bcb005b3ebbac"),
    ),
}

# ImageNet's mean in BGR order, as `preprocess_input(mode="caffe")` subtracts it.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def spec_of(backbone: str) -> BackboneSpec:
    try:
        return BACKBONES[backbone]
    except KeyError:
        raise RunnerError(
            f"model.backbone should be one of {sorted(BACKBONES)}. Received: {backbone!r}"
        ) from None


def check_input_size(backbone: str, size: tuple[int, int]) -> None:
    minimum = spec_of(backbone).min_size
    if min(size) < minimum:
        raise RunnerError(
            f"model.backbone={backbone} needs inputs of at least {minimum}x{minimum} pixels. "
            f"Received: model.input_size={list(size)}. Set model.input_size to "
            f"[{minimum}, {minimum}] or more (its default is "
            f"{spec_of(backbone).default_size}), or null for the default."
        )


def weights_keys() -> ConfigKeys:
    return ConfigKeys(
        mirror="model.weights_mirror",
        mirror_env=WEIGHTS_MIRROR_ENV,
        checksum="model.weights_hash",
        verify="model.weights_hash",
    )


def fetch_file(spec: FileSpec, *, mirror: str, data_dir: Path, verify: bool = True) -> Path:
    """A published file (weights, class index) in `<data_dir>/keras-applications/`."""
    return fetch(
        spec,
        role="weights",
        mirror=mirror,
        cache_dir=data_dir / "keras-applications",
        verify_checksum=verify and bool(spec.sha256 or spec.md5),
        keys=weights_keys(),
    )


def fetch_weights(
    backbone: str, *, top: bool, mirror: str, data_dir: Path, file_hash: str | None = None
) -> Path:
    spec = spec_of(backbone)
    return fetch_file(
        (spec.top if top else spec.notop).spec(file_hash), mirror=mirror, data_dir=data_dir
    )


def build_backbone(backbone: str, input_shape: tuple[int, int, int], *, top: bool = False):
    """Keras' network with random weights (weights are loaded afterwards, from our cache)."""
    import keras

    constructor = getattr(keras.applications, spec_of(backbone).constructor)
    if top:
        return constructor(weights=None, include_top=True)
    return constructor(weights=None, include_top=False, input_shape=input_shape)


def load_weights(model, path: Path, what: str) -> None:
    try:
        model.load_weights(str(path))
    except Exception as error:  # h5py, shape and layer-count errors alike
        raise RunnerError(
            f"Could not load {what} from {path}: {str(error).splitlines()[0][:300]}. "
            "It should be a Keras weights file for this network (for example the "
            "*_notop.h5 file keras.applications publishes)."
        ) from None


def preprocessing_layers(backbone: str) -> list:
    """The backbone's `preprocess_input` as built-in layers for raw 0-255 float pixels."""
    import numpy as np
    from keras import layers

    mode = spec_of(backbone).preprocess
    if mode == "tf":
        return [layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")]
    if mode == "caffe":
        # One frozen 1x1 convolution: reverses the channels (RGB -> BGR) and subtracts the mean.
        conv = layers.Conv2D(3, 1, trainable=False, name="preprocess")
        kernel = np.zeros((1, 1, 3, 3), dtype=np.float32)
        for rgb in range(3):
            kernel[0, 0, rgb, 2 - rgb] = 1.0
        conv.build((None, None, None, 3))
        conv.set_weights([kernel, -np.asarray(CAFFE_MEAN_BGR, dtype=np.float32)])
        return [conv]
    return []  # EfficientNet rescales and normalizes inside its own graph


def preprocess_input(backbone: str, images):
    """Keras' own function for this backbone (for the ImageNet classifier and the tests)."""
    import importlib

    module = importlib.import_module(f"keras.applications.{spec_of(backbone).module}")
    return module.preprocess_input(images)
