"""Whether a checkpoint file is worth keeping: it loads (Keras' safe mode) and its weights are
finite. A diverged run's NaN weights or a file cut off by a full disk are never logged as the
run's model."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any


def check_checkpoint(path: Path) -> str | None:
    """None when the checkpoint is good, else why it is not."""
    return load_checkpoint(path)[1]


def load_checkpoint(path: Path) -> tuple[Any, str | None]:
    """The checkpoint's model (Keras' safe mode, uncompiled) and None when it is good, else no
    model and why it is not."""
    import keras
    import numpy as np

    if not zipfile.is_zipfile(path):
        return None, "not a complete .keras file (cut off? the disk may be full)"
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as error:
        return None, f"does not load ({type(error).__name__}: {str(error).splitlines()[0][:200]})"
    for weights in model.get_weights():
        if not np.all(np.isfinite(weights)):
            return None, "its weights are not finite (the training diverged)"
    return model, None
