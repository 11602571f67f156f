"""ResNet for 32x32 images (He et al. 2016, section 4.2, "option A" shortcuts replaced by 1x1
projections as Keras' examples do): a 3x3 conv, then three stages of `(depth - 2) / 6` basic
blocks (two 3x3 convs with batch norm and a shortcut) at `filters`, 2x and 4x filters, the
second and third stage starting with stride 2; global average pooling, the head.
ResNet-20 (the default) has 274,042 parameters on CIFAR-10."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from runner.config.registry import MODELS
from runner.config.rules import at_least
from runner.config.schema import ModelConfig
from runner.core.errors import RunnerError
from runner.core.lazy import keras
from runner.models.heads import classifier_head, image_input

if TYPE_CHECKING:
    from runner.data.base import DataInfo


@dataclass
class ResNetConfig(ModelConfig):
    depth: int = 20  # 6n + 2: 20, 32, 44, 56, 110
    filters: int = 16  # of the first stage; the second and third have 2x and 4x

    def check(self, at: str) -> None:
        at_least(f"{at}.filters", self.filters, 1)
        if self.depth < 8 or (self.depth - 2) % 6:
            raise RunnerError(
                f"{at}.depth should be 6n + 2 with n >= 1 (8, 14, 20, 32, 44, 56, 110). "
                f"Received: {self.depth}"
            )


def conv_bn(x: keras.KerasTensor, filters: int, strides: int, name: str) -> keras.KerasTensor:
    x = keras.layers.Conv2D(
        filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    return keras.layers.BatchNormalization(name=f"{name}_bn")(x)


def basic_block(x: keras.KerasTensor, filters: int, strides: int, name: str) -> keras.KerasTensor:
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:  # the shortcut meets the block's output shape
        shortcut = keras.layers.Conv2D(
            filters, 1, strides=strides, use_bias=False, name=f"{name}_shortcut_conv"
        )(x)
        shortcut = keras.layers.BatchNormalization(name=f"{name}_shortcut_bn")(shortcut)
    x = keras.layers.ReLU(name=f"{name}_relu1")(conv_bn(x, filters, strides, f"{name}_1"))
    x = conv_bn(x, filters, 1, f"{name}_2")
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.ReLU(name=f"{name}_out")(x)


@MODELS.register("resnet", ResNetConfig)
def build(info: DataInfo, cfg: ResNetConfig) -> keras.Model:
    inputs, x = image_input(info)
    x = keras.layers.ReLU(name="stem_relu")(conv_bn(x, cfg.filters, 1, "stem"))
    blocks = (cfg.depth - 2) // 6
    for stage in range(3):
        filters = cfg.filters * 2**stage
        for block in range(blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            x = basic_block(x, filters, strides, f"stage{stage + 1}_block{block + 1}")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, classifier_head(x, info), name=f"resnet{cfg.depth}")
