"""A fast CIFAR-10 net after Keller Jordan's airbench94 (94% in seconds on one GPU): a 2x2
conv stem with GELU, then three groups of conv 3x3 - max pool 2 - BN - GELU - conv 3x3 - BN -
GELU at 64, 256 and 256 filters, a 3x3 max pool, and a linear head whose logits are scaled by
1/9 before the softmax.

As in airbench, by default the stem is fixed before training to a whitening of 2x2 patches of
the training images (`initialize`, below: their principal directions, each scaled to unit
variance, and their negatives, so 24 filters for RGB), the BatchNorm layers learn a shift but
no scale, and each conv starts as an identity on its first input channels (an implicit
residual). The whitening stem's bias still learns, as a shift (`optimizer.norm_bias_lr_scale`
speeds it up with the BatchNorm shifts), unless `train_whitening_bias=false`.
`stem=learned` trains the stem like any conv instead. 1,973,944 parameters on CIFAR-10 (the
default `widths`), 288 of them the fixed stem kernel."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

import numpy as np

from runner.config.registry import MODELS
from runner.config.rules import at_least, positive
from runner.config.schema import ModelConfig
from runner.core.lazy import keras
from runner.core.shifts import mark_shift
from runner.models.heads import image_input

if TYPE_CHECKING:
    from runner.data.base import DataInfo, Split

STEM_KERNEL = 2  # the stem's patches are 2x2
WHITENING_CHUNK = 500  # images per pass while the patches' moments are summed


class Stem(Enum):
    whitening = "whitening"  # fixed from the training images before training (airbench)
    learned = "learned"  # an ordinary trainable conv


@dataclass
class AirbenchConfig(ModelConfig):
    widths: list[int] = field(default_factory=lambda: [64, 256, 256])  # of the three groups
    stem: Stem = Stem.whitening
    # learned stem: its filters; the whitening stem has 2 x (2 * 2 * channels) (24 for RGB).
    stem_width: int = 24
    whitening_images: int = 5000  # training images the whitening is computed from (airbench)
    whitening_epsilon: float = 5e-4  # added to each variance before the square root
    # airbench learns the whitening stem's bias (from the patches' centring here); false: fixed
    train_whitening_bias: bool = True
    logit_scale: float = 1.0 / 9.0  # airbench's temperature on the logits
    batchnorm_momentum: float = 0.6  # Keras' convention (PyTorch's 0.4)
    batchnorm_scale: bool = False  # airbench trains only the BatchNorm shifts
    batchnorm_epsilon: float = 1e-12
    identity_init: bool = True  # each conv starts as an identity on its first input channels

    def check(self, at: str) -> None:
        at_least(f"{at}.stem_width", self.stem_width, 1)
        at_least(f"{at}.whitening_images", self.whitening_images, 1)
        positive(f"{at}.whitening_epsilon", self.whitening_epsilon)
        for width in self.widths:
            at_least(f"{at}.widths", width, 1)
        positive(f"{at}.logit_scale", self.logit_scale)
        positive(f"{at}.batchnorm_epsilon", self.batchnorm_epsilon)


def conv_group(
    x: keras.KerasTensor, width: int, cfg: AirbenchConfig, name: str
) -> keras.KerasTensor:
    def norm(suffix: str) -> keras.layers.Layer:
        return keras.layers.BatchNormalization(
            momentum=cfg.batchnorm_momentum,
            epsilon=cfg.batchnorm_epsilon,
            scale=cfg.batchnorm_scale,
            name=f"{name}_{suffix}",
        )

    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    x = keras.layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    x = norm("bn1")(x)
    x = keras.layers.Activation("gelu", name=f"{name}_gelu1")(x)
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv2")(x)
    x = norm("bn2")(x)
    return keras.layers.Activation("gelu", name=f"{name}_gelu2")(x)


@MODELS.register("airbench", AirbenchConfig)
def build(info: DataInfo, cfg: AirbenchConfig) -> keras.Model:
    inputs, x = image_input(info)
    whitening = Stem(cfg.stem) is Stem.whitening
    stem_width = (
        2 * STEM_KERNEL * STEM_KERNEL * info.input_shape[-1] if whitening else cfg.stem_width
    )
    stem = keras.layers.Conv2D(stem_width, STEM_KERNEL, name="stem_conv")
    x = stem(x)
    if whitening:  # set by `initialize`; the kernel is never trained, the bias is a shift
        stem.kernel.trainable = False
        stem.bias.trainable = cfg.train_whitening_bias
        mark_shift(stem.bias)
    x = keras.layers.Activation("gelu", name="stem_gelu")(x)
    for number, width in enumerate(cfg.widths, start=1):
        x = conv_group(x, width, cfg, f"group{number}")
    x = keras.layers.MaxPooling2D(3, padding="same", name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    logits = keras.layers.Dense(info.num_classes, use_bias=False, name="logits")(x)
    logits = keras.layers.Rescaling(cfg.logit_scale, name="logit_scale")(logits)
    # float32 whatever the mixed-precision policy, as every head here.
    outputs = keras.layers.Activation("softmax", dtype="float32", name="predictions")(logits)
    model = keras.Model(inputs, outputs, name="airbench")
    if cfg.identity_init:
        for layer in model.layers:
            if layer.name.startswith("group") and isinstance(layer, keras.layers.Conv2D):
                kernel = keras.ops.convert_to_numpy(layer.kernel)
                layer.kernel.assign(identity_on_first_channels(kernel))
    return model


def identity_on_first_channels(kernel: np.ndarray) -> np.ndarray:
    """A conv kernel (h, w, in, out) whose first min(in, out) filters pass their own input
    channel through unchanged (PyTorch's `dirac_`); the other filters keep their init."""
    kernel = kernel.copy()
    height, width, channels_in, channels_out = kernel.shape
    count = min(channels_in, channels_out)
    kernel[..., :count] = 0.0
    kernel[height // 2, width // 2, np.arange(count), np.arange(count)] = 1.0
    return kernel


def initialize(model: keras.Model, cfg: AirbenchConfig, train: Split) -> None:
    """The whitening stem, from the first `whitening_images` training images as the stem sees
    them (rescaled and normalized as the model does), read in chunks: memory stays small."""
    if Stem(cfg.stem) is not Stem.whitening:
        return
    stem = model.get_layer("stem_conv")
    seen = keras.Model(model.input, stem.input)
    moments = PatchMoments()
    count = min(cfg.whitening_images, len(train))
    for start in range(0, count, WHITENING_CHUNK):
        indices = np.arange(start, min(count, start + WHITENING_CHUNK))
        images = train.images(indices).astype("float32")
        moments.add(keras.ops.convert_to_numpy(seen(images, training=False)))
    stem.set_weights(moments.whitening(cfg.whitening_epsilon))


class PatchMoments:
    """The mean and covariance of the 2x2 patches of images added chunk by chunk."""

    def __init__(self) -> None:
        self.count, self.total, self.products = 0, 0.0, 0.0

    def add(self, images: np.ndarray) -> None:
        windows = np.lib.stride_tricks.sliding_window_view(
            images.astype(np.float64), (STEM_KERNEL, STEM_KERNEL), axis=(1, 2)
        )  # (N, H-1, W-1, C, kh, kw) -> rows in the kernel's (kh, kw, C) order
        patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, STEM_KERNEL**2 * images.shape[-1])
        self.count += len(patches)
        self.total = self.total + patches.sum(0)
        self.products = self.products + patches.T @ patches

    def whitening(self, epsilon: float) -> list[np.ndarray]:
        """The kernel (2, 2, C, 8C) and bias of a conv whose outputs are the patches, centred,
        projected on each principal direction and divided by its standard deviation: each
        direction and its negative (so the GELU after it keeps both signs)."""
        mean = self.total / self.count
        covariance = self.products / self.count - np.outer(mean, mean)
        variances, directions = np.linalg.eigh(covariance)
        order = np.argsort(variances)[::-1]  # the strongest direction first
        scaled = directions[:, order] / np.sqrt(np.maximum(variances[order], 0.0) + epsilon)
        filters = np.concatenate([scaled, -scaled], axis=1)
        kernel = filters.reshape(STEM_KERNEL, STEM_KERNEL, -1, filters.shape[1])
        return [kernel.astype("float32"), (-mean @ filters).astype("float32")]
