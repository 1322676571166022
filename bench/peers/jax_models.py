"""The three benchmark models in JAX, reading the PyTorch state_dict (names and layouts as saved
by `prepare`: OIHW convolutions, [out, in] linear layers), batch norms in inference form."""

import jax.numpy as jnp
from jax import lax

BN_EPS = 1e-5


def conv(x, w, b=None, stride=1, pad=0):
    y = lax.conv_general_dilated(
        x, w, window_strides=(stride, stride), padding=((pad, pad), (pad, pad)),
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
    )
    return y if b is None else y + b[None, :, None, None]


def max_pool(x, k, stride, pad=0):
    return lax.reduce_window(
        x, -jnp.inf, lax.max, (1, 1, k, k), (1, 1, stride, stride), ((0, 0), (0, 0), (pad, pad), (pad, pad)),
    )


def relu(x):
    return jnp.maximum(x, 0)


def linear(x, p, name):
    return x @ p[f"{name}.weight"].T + p[f"{name}.bias"]


def batch_norm(x, p, name):
    scale = p[f"{name}.weight"] * lax.rsqrt(p[f"{name}.running_var"] + BN_EPS)
    shift = p[f"{name}.bias"] - p[f"{name}.running_mean"] * scale
    return x * scale[None, :, None, None] + shift[None, :, None, None]


def tiny(p, x):
    x = max_pool(relu(conv(x, p["features.0.weight"], p["features.0.bias"], pad=1)), 2, 2)
    x = max_pool(relu(conv(x, p["features.3.weight"], p["features.3.bias"], pad=1)), 2, 2)
    return linear(x.reshape(x.shape[0], -1), p, "classifier")


def small(p, x):
    # features.<i>: convolutions at 0, 2, 5, 7, 10; pools after 2, 7 and 10.
    for i in (0, 2, 5, 7, 10):
        x = relu(conv(x, p[f"features.{i}.weight"], p[f"features.{i}.bias"], pad=1))
        if i in (2, 7, 10):
            x = max_pool(x, 2, 2)
    x = relu(linear(x.reshape(x.shape[0], -1), p, "classifier.0"))
    return linear(x, p, "classifier.2")


def basic_block(p, x, name, stride):
    out = relu(batch_norm(conv(x, p[f"{name}.conv1.weight"], stride=stride, pad=1), p, f"{name}.bn1"))
    out = batch_norm(conv(out, p[f"{name}.conv2.weight"], pad=1), p, f"{name}.bn2")
    if f"{name}.downsample.0.weight" in p:
        x = batch_norm(conv(x, p[f"{name}.downsample.0.weight"], stride=stride), p, f"{name}.downsample.1")
    return relu(out + x)


def medium(p, x):
    x = relu(batch_norm(conv(x, p["conv1.weight"], stride=2, pad=3), p, "bn1"))
    x = max_pool(x, 3, 2, pad=1)
    for layer, stride in ((1, 1), (2, 2), (3, 2), (4, 2)):
        x = basic_block(p, x, f"layer{layer}.0", stride)
        x = basic_block(p, x, f"layer{layer}.1", 1)
    x = jnp.mean(x, axis=(2, 3))
    return linear(x, p, "fc")


MODELS = {"tiny": tiny, "small": small, "medium": medium}
