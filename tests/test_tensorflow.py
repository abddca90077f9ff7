"""fastensors.tensorflow against the reference's safetensors.tensorflow on the
same files (tests/framework_checks.py). tensorflow copies every tensor into
its own buffer; the test of that claim fails if it ever shares the mapping."""

from __future__ import annotations

import numpy as np
import pytest

import framework_checks as fc

tf = fc.import_alone("tensorflow", ("paddle",))

import fastensors.tensorflow as ftf  # noqa: E402
from fastensors.format.frameworks import TensorflowFramework  # noqa: E402

ref = pytest.importorskip("safetensors.tensorflow")

H = fc.Hooks("tf", ftf, ref, lambda t: t.numpy(), TensorflowFramework.codes)


@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_every_dtype_loads_bit_exact(tmp_path, backend):
    fc.check_every_dtype_loads_bit_exact(H, tmp_path, backend)


def test_matches_the_reference(tmp_path):
    fc.check_matches_the_reference(H, tmp_path)


def test_save_is_byte_identical(tmp_path):
    arrays = {"w": tf.reshape(tf.range(12, dtype=tf.float32), (3, 4)), "h": tf.ones((2, 2), tf.bfloat16),
              "i": tf.range(5, dtype=tf.int64), "c": tf.zeros(3, tf.complex64)}
    fc.check_save_is_byte_identical(H, tmp_path, arrays)


def test_scalars_and_empty_tensors_round_trip(tmp_path):
    """(The reference cannot save a 0-d tensor: its ``.numpy()`` is a numpy
    scalar.) The bytes are those numpy's writer makes of the same values."""
    arrays = {"s": tf.constant(3.5), "e": tf.zeros((2, 0)), "b": tf.constant(1.0, tf.bfloat16)}
    blob = ftf.save(arrays)
    assert blob == fc.fnp.save({k: np.asarray(v.numpy()) for k, v in arrays.items()})
    back = ftf.load(blob)
    assert {k: (tuple(v.shape), v.dtype) for k, v in back.items()} == \
        {k: (tuple(v.shape), v.dtype) for k, v in arrays.items()}
    assert float(back["s"]) == 3.5 and float(back["b"]) == 1.0


def test_variables_save_like_their_values(tmp_path):
    v = tf.Variable(tf.ones((2, 3)))
    assert ftf.save({"v": v}) == ftf.save({"v": tf.ones((2, 3))})


def test_safe_open_and_slices(tmp_path):
    fc.check_safe_open_and_slices(H, tmp_path)


def test_unsupported_dtypes_raise(tmp_path):
    fc.check_unsupported_dtypes_raise(H, tmp_path)


def test_bad_arguments_raise(tmp_path):
    fc.check_bad_arguments_raise(H, tmp_path, np.zeros(3))


def test_tensors_are_copies(tmp_path):
    assert not fc.shares_the_mapping(H, tmp_path, aligned=True)
    assert not fc.shares_the_mapping(H, tmp_path, aligned=False)


def test_layout_round_trip(tmp_path):
    fc.check_round_trip_through_the_layout(H, tmp_path, "keras")


def test_keras_layer_takes_the_converted_weights(tmp_path):
    """A Keras Dense layer given the keras-layout kernel computes what the
    PyTorch linear (y = x W^T + b) computes."""
    keras = pytest.importorskip("keras")
    from fastensors import layout

    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    fc.fnp.save_file({"fc.weight": w, "fc.bias": b}, tmp_path / "pt.safetensors")
    p = layout.load(tmp_path / "pt.safetensors", "keras", framework="tf")
    dense = keras.layers.Dense(3)
    dense.build((None, 4))
    dense.set_weights([p["fc.kernel"].numpy(), p["fc.bias"].numpy()])
    x = rng.standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(dense(x)), x @ w.T + b, rtol=1e-5, atol=1e-5)
