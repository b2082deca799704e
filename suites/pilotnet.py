"""A PilotNet-like Keras regression CNN trained on scikit-learn's bundled digits.

PilotNet (NVIDIA's end-to-end driving network) maps a 66x200 camera frame to one continuous
steering value through five convolutions and a dense head: about 1.6 M parameters, most of them in
the first dense layer. Here the frame is a digit image upscaled to 66x200 and the continuous target
is the digit's value, scored by mean squared error: a real regression task on bundled data (no
download), with PilotNet's shape, so the TFLite table reads like seed 003's.

TensorFlow is imported inside functions only (see ``pytest_modelopt.spec.load_tensorflow``), and
the trained weights are cached in pytest's cache directory, keyed by everything that shapes them.
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from pytest_modelopt import ModelSpec
from pytest_modelopt.spec import load_tensorflow

SEED = 0
EPOCHS = 12
HEIGHT, WIDTH = 66, 200


def pilotnet() -> Any:
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input((HEIGHT, WIDTH, 1)),
            layers.Conv2D(24, 5, strides=2, activation="relu"),
            layers.Conv2D(36, 5, strides=2, activation="relu"),
            layers.Conv2D(48, 5, strides=2, activation="relu"),
            layers.Conv2D(64, 3, activation="relu"),
            layers.Conv2D(64, 3, activation="relu"),
            layers.Flatten(),
            layers.Dense(1164, activation="relu"),
            layers.Dense(100, activation="relu"),
            layers.Dense(50, activation="relu"),
            layers.Dense(10, activation="relu"),
            layers.Dense(1),
        ],
        name="pilotnet",
    )


def digits_frames() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and test frames (N, 66, 200, 1) in [0, 1], and the digit values as float targets."""
    from scipy.ndimage import zoom

    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)
    frames = zoom(images, (1, HEIGHT / 8, WIDTH / 8), order=1)[..., None].astype(np.float32)
    targets = data.target.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        frames, targets, test_size=0.2, random_state=SEED, stratify=data.target
    )
    return x_train, x_test, y_train, y_test


def train(model: Any, x: np.ndarray, y: np.ndarray) -> Any:
    import keras

    keras.utils.set_random_seed(SEED)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.fit(x, y, batch_size=32, epochs=EPOCHS, verbose=0, shuffle=True)
    return model


def trained_pilotnet(cache_dir: Path) -> Any:
    import keras

    tf = load_tensorflow()
    key = hashlib.sha256(
        (inspect.getsource(pilotnet) + inspect.getsource(train) + f"{SEED}-{EPOCHS}").encode()
        + f"{tf.__version__}-{keras.__version__}".encode()
    ).hexdigest()[:12]
    path = cache_dir / f"pilotnet-{key}.weights.h5"
    keras.utils.set_random_seed(SEED)
    model = pilotnet()
    if path.is_file():
        model.load_weights(path)
        return model
    x_train, _, y_train, _ = digits_frames()
    train(model, x_train, y_train)
    shipped = pilotnet()  # uncompiled: no optimizer state in the cache or the reference
    shipped.set_weights(model.get_weights())
    tmp = path.with_name("tmp-" + path.name)
    shipped.save_weights(tmp)
    tmp.replace(path)
    return shipped


def pilotnet_spec(cache_dir: Path) -> ModelSpec:
    x_train, x_test, _, y_test = digits_frames()
    return ModelSpec.from_keras(
        "pilotnet",
        lambda: trained_pilotnet(cache_dir),
        example_input=x_test[:1],
        calibration_data=np.array_split(x_train[:256], 8),
        eval_data=[
            (x, y)
            for x, y in zip(np.array_split(x_test, 6), np.array_split(y_test, 6), strict=True)
        ],
        description="PilotNet-like regression CNN on digits upscaled to 66x200, MSE on test",
    )
