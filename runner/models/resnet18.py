"""ResNet-18 in its CIFAR form (the stem a 3x3 conv at stride 1 and no max pool, as in
kuangliu/pytorch-cifar, reaching ~95% on CIFAR-10): four stages of two basic blocks at
64, 128, 256 and 512 filters (`model.width` scales them), stride 2 from the second stage on;
global average pooling, the head. 11,183,562 parameters on CIFAR-10 at width 64."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from runner.config.registry import MODELS
from runner.config.rules import at_least
from runner.config.schema import ModelConfig
from runner.core.lazy import keras
from runner.models.heads import classifier_head, image_input
from runner.models.resnet import basic_block, conv_bn

if TYPE_CHECKING:
    from runner.data.base import DataInfo


@dataclass
class ResNet18Config(ModelConfig):
    width: int = 64  # filters of the first stage; the others have 2x, 4x, 8x

    def check(self, at: str) -> None:
        at_least(f"{at}.width", self.width, 1)


@MODELS.register("resnet18", ResNet18Config)
def build(info: DataInfo, cfg: ResNet18Config) -> keras.Model:
    inputs, x = image_input(info)
    x = keras.layers.ReLU(name="stem_relu")(conv_bn(x, cfg.width, 1, "stem"))
    for stage in range(4):
        for block in range(2):
            strides = 2 if stage > 0 and block == 0 else 1
            name = f"stage{stage + 1}_block{block + 1}"
            x = basic_block(x, cfg.width * 2**stage, strides, name)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, classifier_head(x, info), name="resnet18")
