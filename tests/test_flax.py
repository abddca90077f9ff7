"""fastensors.flax against the reference's safetensors.flax on the same files
(tests/framework_checks.py), plus what is jax's own: XLA shares a buffer
only at 64-byte alignment, and 64-bit types narrow without jax_enable_x64."""

from __future__ import annotations

import numpy as np
import pytest

import framework_checks as fc

jax = fc.import_alone("jax", ())
import jax.numpy as jnp  # noqa: E402

import fastensors  # noqa: E402
import fastensors.flax as fflax  # noqa: E402
from fastensors.format.frameworks import JaxFramework  # noqa: E402

ref = pytest.importorskip("safetensors.flax")

H = fc.Hooks("flax", fflax, ref, np.asarray, JaxFramework.codes,
             narrowed={} if jax.config.jax_enable_x64 else {"I64": np.int32, "U64": np.uint32, "F64": np.float32})


@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_every_dtype_loads_bit_exact(tmp_path, backend):
    fc.check_every_dtype_loads_bit_exact(H, tmp_path, backend)


def test_64_bit_types_narrow_as_jax_does(tmp_path):
    if jax.config.jax_enable_x64:
        pytest.skip("jax_enable_x64 is on: nothing narrows")
    tensors = fc.write_all(tmp_path / "w.safetensors", ["I64", "F64"])
    got = fflax.load_file(tmp_path / "w.safetensors")
    for name, want in tensors.items():
        np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(jnp.asarray(want)))


def test_matches_the_reference(tmp_path):
    fc.check_matches_the_reference(H, tmp_path)


def test_save_is_byte_identical(tmp_path):
    arrays = {"w": jnp.arange(12, dtype=jnp.float32).reshape(3, 4), "h": jnp.ones((2, 2), jnp.bfloat16),
              "i": jnp.arange(5, dtype=jnp.int32), "c": jnp.zeros(3, jnp.complex64)}
    fc.check_save_is_byte_identical(H, tmp_path, arrays)


def test_safe_open_and_slices(tmp_path):
    fc.check_safe_open_and_slices(H, tmp_path)


def test_unsupported_dtypes_raise(tmp_path):
    fc.check_unsupported_dtypes_raise(H, tmp_path)


def test_bad_arguments_raise(tmp_path):
    fc.check_bad_arguments_raise(H, tmp_path, np.zeros(3))


def test_aligned_tensors_share_the_mapping_others_are_copied(tmp_path):
    assert fc.shares_the_mapping(H, tmp_path, aligned=True)
    assert not fc.shares_the_mapping(H, tmp_path, aligned=False)


def test_shared_arrays_outlive_the_handle(tmp_path):
    path = tmp_path / "a.safetensors"
    want = np.arange(4096, dtype=np.float32)
    fastensors.numpy.save_file({"t": want}, path)
    with fastensors.safe_open(path, "flax") as f:
        t = f.get_tensor("t")
    import gc

    gc.collect()
    np.testing.assert_array_equal(np.asarray(t + 1), want + 1)


def test_layout_round_trip(tmp_path):
    fc.check_round_trip_through_the_layout(H, tmp_path, "flax")


def test_flax_msgpack_and_nested_params(tmp_path):
    """What flax users do next: unflatten the names and serialize with flax."""
    traverse = pytest.importorskip("flax.traverse_util")
    serialization = pytest.importorskip("flax.serialization")
    fastensors.numpy.save_file({"dense.kernel": np.ones((2, 3), np.float32), "dense.bias": np.zeros(3, np.float32)},
                               tmp_path / "p.safetensors")
    params = traverse.unflatten_dict(fflax.load_file(tmp_path / "p.safetensors"), sep=".")
    back = serialization.msgpack_restore(serialization.msgpack_serialize(params))
    np.testing.assert_array_equal(back["dense"]["kernel"], np.ones((2, 3), np.float32))
