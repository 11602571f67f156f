"""A fast CIFAR-10 net after Keller Jordan's airbench94 (94% in seconds on one GPU): a 2x2
conv stem with GELU, then three groups of conv 3x3 - max pool 2 - BN - GELU - conv 3x3 - BN -
GELU at 64, 256 and 256 filters, a 3x3 max pool, and a linear head whose logits are scaled by
1/9 before the softmax. airbench fixes its stem to a whitening of the training patches; here
the stem is learned, so the recipe (runner's experiment=cifar10_tuned) leans on more epochs.
1,975,096 parameters on CIFAR-10 (the default `widths`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from runner.config.registry import MODELS
from runner.config.rules import at_least, positive
from runner.config.schema import ModelConfig
from runner.core.lazy import keras
from runner.models.heads import image_input

if TYPE_CHECKING:
    from runner.data.base import DataInfo


@dataclass
class AirbenchConfig(ModelConfig):
    widths: list[int] = field(default_factory=lambda: [64, 256, 256])  # of the three groups
    stem_width: int = 24
    logit_scale: float = 1.0 / 9.0  # airbench's temperature on the logits
    batchnorm_momentum: float = 0.6  # Keras' convention (PyTorch's 0.4)

    def check(self, at: str) -> None:
        at_least(f"{at}.stem_width", self.stem_width, 1)
        for width in self.widths:
            at_least(f"{at}.widths", width, 1)
        positive(f"{at}.logit_scale", self.logit_scale)


def conv_group(x: keras.KerasTensor, width: int, momentum: float, name: str) -> keras.KerasTensor:
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    x = keras.layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    x = keras.layers.BatchNormalization(momentum=momentum, name=f"{name}_bn1")(x)
    x = keras.layers.Activation("gelu", name=f"{name}_gelu1")(x)
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv2")(x)
    x = keras.layers.BatchNormalization(momentum=momentum, name=f"{name}_bn2")(x)
    return keras.layers.Activation("gelu", name=f"{name}_gelu2")(x)


@MODELS.register("airbench", AirbenchConfig)
def build(info: DataInfo, cfg: AirbenchConfig) -> keras.Model:
    inputs, x = image_input(info)
    x = keras.layers.Conv2D(cfg.stem_width, 2, name="stem_conv")(x)
    x = keras.layers.Activation("gelu", name="stem_gelu")(x)
    for number, width in enumerate(cfg.widths, start=1):
        x = conv_group(x, width, cfg.batchnorm_momentum, f"group{number}")
    x = keras.layers.MaxPooling2D(3, padding="same", name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    logits = keras.layers.Dense(info.num_classes, use_bias=False, name="logits")(x)
    logits = keras.layers.Rescaling(cfg.logit_scale, name="logit_scale")(logits)
    # float32 whatever the mixed-precision policy, as every head here.
    outputs = keras.layers.Activation("softmax", dtype="float32", name="predictions")(logits)
    return keras.Model(inputs, outputs, name="airbench")
