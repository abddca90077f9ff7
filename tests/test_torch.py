"""The torch adapter against ``safetensors.torch``."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import safetensors  # noqa: E402
import safetensors.torch as ref_pt  # noqa: E402

import fastensors  # noqa: E402
import fastensors.torch as fst_pt  # noqa: E402
from conftest import BACKENDS, TORCH_DTYPES, same_tensor, torch_sample  # noqa: E402


@pytest.mark.parametrize("name", list(TORCH_DTYPES))
@pytest.mark.parametrize("backend", BACKENDS)
def test_round_trip_every_dtype(tmp_path, name, backend):
    shapes = [(3, 4), (0, 2), (1,), (2, 1, 2)]
    if name != "float4_e2m1fn_x2":
        shapes.append(())
    tensors = {f"t{i}": torch_sample(name, s, seed=i) for i, s in enumerate(shapes)}
    p = tmp_path / "rt.safetensors"
    fst_pt.save_file(tensors, p, metadata={"format": "pt"})
    loaded = fst_pt.load_file(p, backend=backend)
    assert set(loaded) == set(tensors)
    for k, v in tensors.items():
        assert same_tensor(loaded[k], v), k
    # the reference reads what we wrote
    ref_loaded = ref_pt.load_file(p)
    for k, v in tensors.items():
        assert same_tensor(ref_loaded[k], v), k
    with safetensors.safe_open(p, "pt") as f:
        assert f.metadata() == {"format": "pt"}


def test_save_load_bytes_round_trip():
    tensors = {n: torch_sample(n, (2, 2), seed=i) for i, n in enumerate(TORCH_DTYPES)}
    data = fst_pt.save(tensors)
    loaded = fst_pt.load(data)
    for k, v in tensors.items():
        assert same_tensor(loaded[k], v), k


def test_load_file_device_argument(tmp_path):
    p = tmp_path / "d.safetensors"
    fst_pt.save_file({"a": torch.ones(3)}, p)
    for device in ("cpu", torch.device("cpu")):
        t = fst_pt.load_file(p, device=device)["a"]
        assert t.device.type == "cpu"
        assert torch.equal(t, torch.ones(3))


# -- shared tensors helpers --------------------------------------------------------


def _cases():
    base = torch.arange(24, dtype=torch.float32)
    other = torch.arange(6, dtype=torch.int64)
    emb = torch.nn.Embedding(5, 3)
    return {
        "tied": {"a": base, "b": base},
        "view": {"full": base, "view": base.view(4, 6), "part": base[2:5]},
        "disjoint-slices": {"lo": base[:12], "hi": base[12:]},
        "overlap": {"x": base[:16], "y": base[8:]},
        "incomplete-overlap": {"x": base[1:9], "y": base[4:12]},
        "distinct": {"p": torch.zeros(3), "q": torch.zeros(3), "r": other},
        "zero-size": {"e1": torch.empty(0), "e2": torch.empty(0, 3)},
        "tied-embedding": {"emb": emb.weight, "head": emb.weight, "other": other},
        "mixed": {"a": base, "b": base.view(2, 12), "c": other, "d": other[:3], "e": torch.ones(2)},
        "meta": {"m1": torch.empty(3, device="meta"), "m2": torch.empty(3, device="meta")},
        "transposed": {"w": base.view(4, 6), "wt": base.view(4, 6).t()},
    }


@pytest.mark.parametrize("case", list(_cases()))
def test_shared_helpers_match_reference(case):
    sd = _cases()[case]
    assert _outcome(fst_pt._find_shared_tensors, sd) == _outcome(ref_pt._find_shared_tensors, sd)
    for name, t in sd.items():
        assert fst_pt.storage_ptr(t) == ref_pt.storage_ptr(t), name
        assert fst_pt.storage_size(t) == ref_pt.storage_size(t), name
        assert fst_pt._is_complete(t) == ref_pt._is_complete(t), name
        if t.device.type != "meta" and t.is_contiguous():
            assert fst_pt._end_ptr(t) == ref_pt._end_ptr(t), name
    names = sorted(sd)
    for kwargs in ({}, {"preferred_names": names[-1:]}, {"discard_names": names[:1]},
                   {"preferred_names": names, "discard_names": names}):
        expected = _outcome(ref_pt._remove_duplicate_names, sd, **kwargs)
        assert _outcome(fst_pt._remove_duplicate_names, sd, **kwargs) == expected


def _outcome(fn, *args, **kwargs):
    """fn's result (dicts made plain), or the type of the exception it raised."""
    try:
        out = fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - the type is compared with the reference's
        return type(e)
    return dict(out) if isinstance(out, dict) else out


def test_shared_tensors_rejected_by_save_file(tmp_path):
    base = torch.zeros(10)
    for sd in ({"a": base, "b": base}, {"a": base, "b": base[:5]}, {"a": base[2:8], "b": base[4:]}):
        with pytest.raises(RuntimeError, match="share memory"):
            fst_pt.save_file(sd, tmp_path / "x.safetensors")
        with pytest.raises(RuntimeError):
            ref_pt.save_file(sd, tmp_path / "y.safetensors")
        with pytest.raises(RuntimeError):
            fst_pt.save(sd)
    assert not (tmp_path / "x.safetensors").exists()
    # disjoint slices of one storage do not overlap: both writers accept them
    sd = {"lo": base[:5], "hi": base[5:]}
    assert fst_pt.save(sd) == ref_pt.save(sd)


def test_non_contiguous_rejected():
    t = torch.arange(12.0).reshape(3, 4).t()
    with pytest.raises(ValueError, match="non contiguous"):
        fst_pt.save({"t": t})
    with pytest.raises(ValueError):
        ref_pt.save({"t": t})
    with pytest.raises(ValueError):
        fst_pt.save({"t": torch.arange(10.0)[::2]})


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support")
def test_sparse_rejected(tmp_path):
    sparse = torch.eye(3).to_sparse()
    with pytest.raises(ValueError, match="sparse"):
        fst_pt.save_file({"s": sparse}, tmp_path / "s.safetensors")
    with pytest.raises(ValueError):
        ref_pt.save_file({"s": sparse}, tmp_path / "r.safetensors")
    with pytest.raises(ValueError, match="sparse"):
        fst_pt.save({"s": torch.eye(3).to_sparse_csr()})


def test_non_tensor_and_non_dict_rejected():
    with pytest.raises(ValueError):
        fst_pt.save({"a": [1, 2]})
    with pytest.raises(ValueError):
        ref_pt.save({"a": [1, 2]})
    with pytest.raises(ValueError):
        fst_pt.save([torch.ones(1)])


def test_meta_tensors_like_reference(tmp_path):
    meta = torch.empty(2, 3, device="meta")
    with pytest.raises(Exception) as ref_exc:
        ref_pt.save({"m": meta})
    with pytest.raises(Exception) as ours:
        fst_pt.save({"m": meta})
    # same exception family as the reference (NotImplementedError)
    assert isinstance(ours.value, type(ref_exc.value))
    with pytest.raises(type(ref_exc.value)):
        fst_pt.save_file({"m": meta}, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()
    # meta tensors never count as shared
    assert fst_pt._find_shared_tensors({"a": meta, "b": meta}) == []


def test_zero_size_tensors(tmp_path):
    tensors = {"e": torch.empty(0), "e2": torch.empty(4, 0, dtype=torch.bfloat16), "x": torch.ones(2)}
    assert fst_pt.save(tensors) == ref_pt.save(tensors)
    p = tmp_path / "z.safetensors"
    fst_pt.save_file(tensors, p)
    for backend in BACKENDS:
        loaded = fst_pt.load_file(p, backend=backend)
        for k, v in tensors.items():
            assert same_tensor(loaded[k], v)


# -- save_model / load_model ---------------------------------------------------------


class Tied(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(7, 4)
        self.norm = torch.nn.LayerNorm(4)
        self.head = torch.nn.Linear(4, 7, bias=False)
        self.head.weight = self.emb.weight  # tied
        self.register_buffer("steps", torch.tensor(3, dtype=torch.int64))


def _model(seed):
    torch.manual_seed(seed)
    return Tied()


def test_save_model_identical_to_reference(tmp_path):
    model = _model(0)
    fst_pt.save_model(model, tmp_path / "ours.safetensors")
    ref_pt.save_model(model, tmp_path / "ref.safetensors")
    assert (tmp_path / "ours.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()
    fst_pt.save_model(model, tmp_path / "ours_m.safetensors", metadata={"format": "pt"})
    ref_pt.save_model(model, tmp_path / "ref_m.safetensors", metadata={"format": "pt"})
    with fastensors.safe_open(tmp_path / "ours_m.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt", "head.weight": "emb.weight"}
        assert "head.weight" not in f.keys()
    with safetensors.safe_open(tmp_path / "ref_m.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt", "head.weight": "emb.weight"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_load_model_round_trip(tmp_path, backend):
    src = _model(1)
    p = tmp_path / "m.safetensors"
    fst_pt.save_model(src, p)
    for loader, writer in ((fst_pt, fst_pt), (ref_pt, fst_pt), (fst_pt, ref_pt)):
        writer.save_model(src, p)
        dst = _model(2)
        assert not torch.equal(dst.emb.weight, src.emb.weight)
        kwargs = {"backend": backend} if loader is fst_pt else {}
        missing, unexpected = loader.load_model(dst, p, **kwargs)
        assert not missing and not unexpected
        for (k, a), (_, b) in zip(src.state_dict().items(), dst.state_dict().items()):
            assert torch.equal(a, b), k
        assert dst.head.weight is dst.emb.weight  # still tied


def test_load_model_strict_reports_like_reference(tmp_path):
    p = tmp_path / "partial.safetensors"
    fst_pt.save_file({"emb.weight": torch.zeros(7, 4), "extra": torch.ones(1)}, p)
    with pytest.raises(RuntimeError) as ours:
        fst_pt.load_model(_model(0), p)
    with pytest.raises(RuntimeError) as ref:
        ref_pt.load_model(_model(0), p)
    assert str(ours.value) == str(ref.value)
    m1, u1 = fst_pt.load_model(_model(0), p, strict=False)
    m2, u2 = ref_pt.load_model(_model(0), p, strict=False)
    assert set(m1) == set(m2) and sorted(u1) == sorted(u2)


def test_save_model_non_contiguous_without_force(tmp_path):
    model = torch.nn.Linear(3, 4)
    model.weight = torch.nn.Parameter(torch.randn(3, 4).t())
    with pytest.raises(ValueError, match="force_contiguous"):
        fst_pt.save_model(model, tmp_path / "a.safetensors", force_contiguous=False)
    with pytest.raises(ValueError):
        ref_pt.save_model(model, tmp_path / "b.safetensors", force_contiguous=False)
    fst_pt.save_model(model, tmp_path / "a.safetensors")
    ref_pt.save_model(model, tmp_path / "b.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


def test_storage_helpers_public():
    t = torch.arange(10, dtype=torch.int16)
    assert fst_pt.storage_ptr(t[3:]) == ref_pt.storage_ptr(t[3:]) == t.data_ptr()
    assert fst_pt.storage_size(t[3:]) == ref_pt.storage_size(t[3:]) == 20


def test_f4_with_odd_last_dim_is_a_typed_error(make_file):
    # 6 F4 values fill 3 bytes, but [2, 3] cannot be float4_e2m1fn_x2 pairs
    path = make_file({"f": {"dtype": "F4", "shape": [2, 3], "data_offsets": [0, 3]}}, b"\x01\x23\x45")
    for backend in BACKENDS:
        with fastensors.safe_open(path, "pt", backend=backend) as f:
            with pytest.raises(fastensors.SafetensorError, match="even last dimension"):
                f.get_tensor("f")
        with fastensors.safe_open(path, "np", backend=backend) as f:
            # numpy reads it, low nibble first
            assert f.get_tensor("f").view("uint8").tolist() == [[1, 0, 3], [2, 5, 4]]
    with safetensors.safe_open(path, "pt") as r:
        with pytest.raises(safetensors.SafetensorError):
            r.get_tensor("f")


def test_numpy_f4_matches_torch_float4_x2(tmp_path):
    import ml_dtypes
    import numpy as np

    import fastensors.numpy as fst_np

    packed = torch.tensor([[0x21, 0x43, 0x65], [0x87, 0xA9, 0xCB]], dtype=torch.uint8)
    codes = np.array([[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]], np.uint8)
    as_numpy = codes.view(ml_dtypes.float4_e2m1fn)
    assert fst_np.save({"f": as_numpy}) == ref_pt.save({"f": packed.view(torch.float4_e2m1fn_x2)})
