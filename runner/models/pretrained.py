"""`model=pretrained`: a `keras.applications` backbone under a new head sized from the data.

    image (raw 0-255) -> [resize] -> [gray -> RGB] -> preprocess_input -> backbone(training=False)
      -> pooling ("features") -> [Dense ReLU] -> [Dropout] -> predictions

The backbone always runs in inference mode (`training=False`), so its BatchNorm statistics stay
ImageNet's even while its top layers are fine-tuned, as in Keras' transfer-learning guide.

Transfer modes (`model.transfer`; `model.strategy` before):
  feature_extraction  the backbone is frozen; only the head trains. Without augmentation the
                      backbone's features are computed once per image (`cached_features`).
  fine_tune           the head trains first (`trainer.epochs`), then the top of the backbone is
                      unfrozen (`model.fine_tune`) and trains on at a lower rate, same run.
  full                every layer trains from the first epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.config.registry import MODELS
from runner.config.rules import at_least, in_range
from runner.config.schema import ModelConfig
from runner.core.errors import RunnerError
from runner.core.lazy import keras
from runner.models import backbones
from runner.models.heads import classifier_head
from runner.models.phases import Phase, PhaseNote

if TYPE_CHECKING:
    from runner.data.base import DataInfo

FEATURES = "features"  # the pooling layer: the backbone's output as the head sees it
NORMALIZATION_CONFLICT = (
    "model.backbone={name} brings its own input preprocessing (preprocess_input); turn off "
    "augmentation.featurewise_center, featurewise_std_normalization, samplewise_normalization "
    "and zca_whitening."
)


class Backbone(Enum):
    """`keras.applications` networks usable as pretrained backbones (runner/models/backbones.py)."""

    vgg16 = "vgg16"
    vgg19 = "vgg19"
    resnet50 = "resnet50"
    inception_v3 = "inception_v3"
    inception_resnet_v2 = "inception_resnet_v2"
    xception = "xception"
    mobilenet = "mobilenet"
    mobilenet_v2 = "mobilenet_v2"
    efficientnet_b0 = "efficientnet_b0"


class Transfer(Enum):
    feature_extraction = "feature_extraction"  # backbone frozen, only the new head trains
    fine_tune = "fine_tune"  # the head first, then the top of the backbone at a lower rate
    full = "full"  # every layer trains from the first epoch


class Pooling(Enum):
    avg = "avg"
    max = "max"
    flatten = "flatten"


@dataclass
class FineTuneConfig:
    """The second phase of `transfer=fine_tune`, after `trainer.epochs` epochs of the head."""

    epochs: int = 10
    lr: float = 1e-5
    # The top `unfreeze_layers` layers of the backbone train, or every layer from the one named
    # `unfreeze_from` (e.g. block5_conv1 for VGG16) when set. BatchNorm layers stay frozen.
    unfreeze_layers: int = 4
    unfreeze_from: str | None = None


@dataclass
class PretrainedConfig(ModelConfig):
    backbone: Backbone = Backbone.vgg16
    # imagenet (fetched like a dataset file), null (random initialisation) or a weights file.
    weights: str | None = "imagenet"
    weights_mirror: str = "https://storage.googleapis.com"
    # Checksum of the fetched weights file; null: the md5 Keras publishes for it.
    weights_hash: str | None = None
    input_size: list[int] | None = None  # null: the backbone's default (224, or 299)
    transfer: Transfer = Transfer.feature_extraction
    # How the backbone's feature map meets the head.
    pooling: Pooling = Pooling.avg
    dense_units: int = 0  # a hidden ReLU layer in the head; 0: none
    dropout: float = 0.0  # before the output layer
    # feature_extraction without augmentation: run the frozen backbone once per image.
    cache_features: bool = True
    fine_tune: FineTuneConfig = field(default_factory=FineTuneConfig)

    def check(self, at: str) -> None:
        backbones.check_input_size(backbone_name(self), input_size(self))
        in_range(f"{at}.dropout", self.dropout, 0, 1)
        at_least(f"{at}.dense_units", self.dense_units, 0)
        if Transfer(self.transfer) is Transfer.fine_tune:
            tune = self.fine_tune
            if tune.epochs < 1 or tune.unfreeze_layers < 1 or not tune.lr > 0:
                raise RunnerError(
                    f"{at}.fine_tune needs epochs >= 1, unfreeze_layers >= 1 and lr > 0. "
                    f"Received: epochs={tune.epochs}, unfreeze_layers={tune.unfreeze_layers}, "
                    f"lr={tune.lr}"
                )
        weights = self.weights
        if weights not in (None, "imagenet") and not Path(weights).expanduser().is_file():
            raise RunnerError(
                f"{at}.weights should be imagenet, null or a weights file. "
                f"Received: {weights!r}, which is not a file."
            )


def backbone_name(cfg: Any) -> str:
    return Backbone(cfg.backbone).value


def input_size(cfg: Any) -> tuple[int, int]:
    if cfg.input_size:
        return int(cfg.input_size[0]), int(cfg.input_size[1])
    side = backbones.spec_of(backbone_name(cfg)).default_size
    return side, side


def validate(cfg: Any, *, normalizing: bool = False) -> None:
    """What the model's keys alone cannot tell (PretrainedConfig.check has those): a backbone
    brings its own input normalization."""
    if normalizing:
        raise RunnerError(NORMALIZATION_CONFLICT.format(name=backbone_name(cfg)))


def weights_file(cfg: Any, data_dir: Path) -> Path | None:
    """The weights to start from, fetched into the cache when they are ImageNet's."""
    if cfg.weights is None:
        return None
    if cfg.weights != "imagenet":
        return Path(cfg.weights).expanduser()
    return backbones.fetch_weights(
        backbone_name(cfg),
        top=False,
        mirror=cfg.weights_mirror,
        data_dir=data_dir,
        file_hash=cfg.weights_hash,
    )


@MODELS.register("pretrained", PretrainedConfig)
def build(info: DataInfo, cfg: Any, weights: Path | None = None) -> keras.Model:
    name = backbone_name(cfg)
    if info.preprocessing:
        raise RunnerError(NORMALIZATION_CONFLICT.format(name=name))
    height, width = input_size(cfg)
    inputs = keras.Input(shape=info.input_shape, name="image")
    x = inputs
    if tuple(info.input_shape[:2]) != (height, width):  # arrays (MNIST, CIFAR) keep their size
        x = keras.layers.Resizing(height, width, name="resize")(x)
    if info.input_shape[2] == 1:
        x = keras.layers.Concatenate(name="gray_to_rgb")([x, x, x])
    for layer in backbones.preprocessing_layers(name):
        x = layer(x)
    backbone = backbones.build_backbone(name, (height, width, 3))
    if weights is not None:
        backbones.load_weights(backbone, weights, f"model.weights for {name}")
    x = backbone(x, training=False)
    pooling = {
        Pooling.avg: keras.layers.GlobalAveragePooling2D,
        Pooling.max: keras.layers.GlobalMaxPooling2D,
        Pooling.flatten: keras.layers.Flatten,
    }[Pooling(cfg.pooling)]
    x = pooling(name=FEATURES)(x)
    if cfg.dense_units:
        x = keras.layers.Dense(cfg.dense_units, activation="relu", name="head_dense")(x)
    if cfg.dropout:
        x = keras.layers.Dropout(cfg.dropout, name="head_dropout")(x)
    model = keras.Model(inputs, classifier_head(x, info), name=f"{name}_transfer")
    backbone.trainable = Transfer(cfg.transfer) is Transfer.full
    return model


def find_backbone(model: keras.Model) -> keras.Model:
    """The backbone inside a (possibly augmentation-wrapped) transfer model."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            if layer.name.endswith("_transfer"):
                return find_backbone(layer)
            return layer
    raise RunnerError(f"{model.name} has no pretrained backbone")


def unfreeze_top(model: keras.Model, cfg: Any) -> list[str]:
    """Make the top of the backbone trainable (BatchNorm stays frozen); returns the layer names."""
    backbone = find_backbone(model)
    backbone.trainable = True
    names = [layer.name for layer in backbone.layers]
    tune = cfg.fine_tune
    if tune.unfreeze_from:
        if tune.unfreeze_from not in names:
            raise RunnerError(
                f"model.fine_tune.unfreeze_from={tune.unfreeze_from!r} is not a layer of "
                f"{backbone.name}; its last layers are {names[-8:]}."
            )
        start = names.index(tune.unfreeze_from)
    else:
        start = max(0, len(names) - tune.unfreeze_layers)
    unfrozen = []
    for index, layer in enumerate(backbone.layers):
        trainable = index >= start and not isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = trainable
        if trainable and layer.weights:
            unfrozen.append(layer.name)
    return unfrozen


def split_at_features(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """(extractor: image -> features, head: features -> predictions), sharing the keras.layers."""
    features = model.get_layer(FEATURES)
    extractor = keras.Model(model.inputs, features.output, name="extractor")
    head_input = keras.Input(shape=features.output.shape[1:], name=FEATURES)
    x = head_input
    after = model.layers[model.layers.index(features) + 1 :]
    for layer in after:
        x = layer(x)
    return extractor, keras.Model(head_input, x, name="head")


def training_phases(cfg: Any, *, epochs: int, augmented: bool) -> list[Phase]:
    """`feature_extraction` and `full`: one phase. `fine_tune`: the head for `epochs`, then
    the top of the backbone for `model.fine_tune.epochs` at `model.fine_tune.lr`. A frozen
    backbone sees each image the same way every epoch unless it is augmented: its features are
    computed once (`model.cache_features`)."""
    transfer = Transfer(cfg.transfer)
    frozen = transfer in (Transfer.feature_extraction, Transfer.fine_tune)
    cached = frozen and cfg.cache_features and not augmented
    first = Phase(epochs, cached_features=split_at_features if cached else None)
    if transfer is not Transfer.fine_tune:
        return [first]

    def unfreeze(model: keras.Model) -> PhaseNote:
        unfrozen = unfreeze_top(model, cfg)
        return PhaseNote(
            f"fine-tuning: {len(unfrozen)} layers of the backbone unfrozen "
            f"({unfrozen[0]} ... {unfrozen[-1]})",
            "model/fine_tuned_layers.json",
            unfrozen,
        )

    return [first, Phase(cfg.fine_tune.epochs, lr=cfg.fine_tune.lr, prepare=unfreeze)]
