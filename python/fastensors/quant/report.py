"""What a whole-model quantization did and the quality it kept: the
``QuantizationReport`` returned by ``quantize_model``, and its JSON, HTML and
PNG renderings (the plot needs matplotlib, the ``plot`` extra)."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

from ..errors import InvalidArgument


@dataclass
class TensorReport:
    """One source tensor: how it was stored and, when measured, its error."""

    name: str
    shape: List[int]
    dtype: str
    scheme: str  # "dense" when kept as is
    bytes_in: int
    bytes_out: int
    reason: Optional[str] = None  # why a tensor was kept dense
    cosine: Optional[float] = None
    sqnr_db: Optional[float] = None
    rmse: Optional[float] = None
    max_abs_err: Optional[float] = None

    @property
    def compression_ratio(self) -> float:
        return self.bytes_in / self.bytes_out if self.bytes_out else math.inf


@dataclass
class QuantizationReport:
    """Returned by :func:`fastensors.quantize_model`."""

    src: str
    dst: str
    format: str
    scheme: str
    group_size: Optional[int]
    symmetric: Optional[bool]
    tensors: List[TensorReport] = field(default_factory=list)
    files: List[str] = field(default_factory=list)  # written into dst
    copied_files: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    seconds: float = 0.0
    # edge profile with min_cosine: the worst cosine each candidate reached
    candidates: Dict[str, float] = field(default_factory=dict)

    @property
    def quantized(self) -> List[TensorReport]:
        return [t for t in self.tensors if t.scheme != "dense"]

    @property
    def dense(self) -> List[TensorReport]:
        return [t for t in self.tensors if t.scheme == "dense"]

    @property
    def bytes_in(self) -> int:
        return sum(t.bytes_in for t in self.tensors)

    @property
    def bytes_out(self) -> int:
        return sum(t.bytes_out for t in self.tensors)

    @property
    def compression_ratio(self) -> float:
        return self.bytes_in / self.bytes_out if self.bytes_out else math.inf

    @property
    def validated(self) -> bool:
        return any(t.cosine is not None for t in self.quantized)

    def summary(self) -> Dict[str, object]:
        """Overall figures: compression of all tensors and of the quantized
        ones, and the quality of the quantized ones (worst cosine, mean and
        worst SQNR, worst max abs error), None where not measured."""
        q = [t for t in self.quantized if t.cosine is not None]
        qin = sum(t.bytes_in for t in self.quantized)
        qout = sum(t.bytes_out for t in self.quantized)
        out: Dict[str, object] = {
            "tensors": len(self.tensors), "quantized": len(self.quantized), "dense": len(self.dense),
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
            "compression_ratio": _num(self.compression_ratio),
            "quantized_compression_ratio": _num(qin / qout if qout else math.inf),
            "min_cosine": None, "mean_sqnr_db": None, "min_sqnr_db": None, "max_abs_err": None,
        }
        if q:
            finite = [t.sqnr_db for t in q if math.isfinite(t.sqnr_db)]
            out["min_cosine"] = min(t.cosine for t in q)
            out["mean_sqnr_db"] = sum(finite) / len(finite) if finite else None
            out["min_sqnr_db"] = _num(min(t.sqnr_db for t in q))
            out["max_abs_err"] = max(t.max_abs_err for t in q)
            out["worst"] = [t.name for t in self.worst(5)]
        return out

    def worst(self, n: int = 5) -> List[TensorReport]:
        """The ``n`` measured tensors with the lowest cosine."""
        q = [t for t in self.quantized if t.cosine is not None]
        return sorted(q, key=lambda t: t.cosine)[:n]

    def to_dict(self) -> Dict[str, object]:
        tensors = []
        for t in self.tensors:
            d = asdict(t)
            d["compression_ratio"] = _num(t.compression_ratio)
            d["sqnr_db"] = _num(t.sqnr_db)
            tensors.append(d)
        return {
            "src": self.src, "dst": self.dst, "format": self.format, "scheme": self.scheme,
            "group_size": self.group_size, "symmetric": self.symmetric, "seconds": self.seconds,
            "summary": self.summary(), "candidates": self.candidates, "warnings": list(self.warnings),
            "files": list(self.files), "copied_files": list(self.copied_files), "tensors": tensors,
        }

    def write(self, path) -> str:
        """Write the report: ``.json`` (everything), ``.html`` (a table and
        the plot) or ``.png`` (the plot). Written atomically."""
        path = os.fspath(path)
        ext = os.path.splitext(path)[1].lower()
        if ext == ".json":
            data = (json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n").encode()
        elif ext == ".png":
            data = plot_png(self)
        elif ext in (".html", ".htm"):
            data = to_html(self).encode()
        else:
            raise InvalidArgument(f"report {path!r}: the name must end in .json, .html or .png")
        _write_atomic(path, data)
        return path


def _num(x: Optional[float]):
    """JSON has no infinities: +inf (an exact tensor) is written as null."""
    if x is None or not math.isfinite(x):
        return None
    return x


def _write_atomic(path: str, data: bytes) -> None:
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def plot_png(report: QuantizationReport) -> bytes:
    """Per-layer SQNR and compression ratio of the quantized tensors, as PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InvalidArgument("plotting a report needs matplotlib (pip install 'fastensors[plot]')") from None
    q = report.quantized
    names = [t.name for t in q]
    x = list(range(len(q)))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(6.0, 0.18 * len(q) + 2), 6.5), sharex=True)
    sqnr = [t.sqnr_db if t.sqnr_db is not None and math.isfinite(t.sqnr_db) else float("nan") for t in q]
    ax1.plot(x, sqnr, marker=".", linestyle="-")
    ax1.set_ylabel("SQNR (dB)")
    title = f"{report.scheme} ({report.format}): {report.compression_ratio:.2f}x overall"
    if not report.validated:
        title += " (quality not measured: run with validate)"
    ax1.set_title(title)
    ax1.grid(True, alpha=0.3)
    ax2.bar(x, [t.compression_ratio for t in q])
    ax2.set_ylabel("compression ratio")
    ax2.grid(True, axis="y", alpha=0.3)
    ax2.set_xticks(x)
    ax2.set_xticklabels(names, rotation=90, fontsize=6)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.{digits}g}"
    return html.escape(str(v))


def to_html(report: QuantizationReport) -> str:
    """A self-contained page: summary, the plot (when matplotlib is
    installed) and one table row per tensor."""
    try:
        img = base64.b64encode(plot_png(report)).decode()
        plot = f'<img alt="per-layer SQNR and compression" src="data:image/png;base64,{img}">'
    except InvalidArgument as e:
        plot = f"<p>{html.escape(str(e))}</p>"
    summary = "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in report.summary().items())
    cols = ("name", "shape", "dtype", "scheme", "bytes_in", "bytes_out", "compression_ratio", "cosine", "sqnr_db",
            "rmse", "max_abs_err", "reason")
    head = "".join(f"<th>{c}</th>" for c in cols)
    rows = []
    for t in report.tensors:
        vals = [t.name, "x".join(map(str, t.shape)), t.dtype, t.scheme, t.bytes_in, t.bytes_out,
                t.compression_ratio, t.cosine, t.sqnr_db, t.rmse, t.max_abs_err, t.reason]
        rows.append("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in vals) + "</tr>")
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>fastensors quantization report</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:2px 6px;font-size:12px}</style></head><body>"
        f"<h1>{html.escape(report.src)} &rarr; {html.escape(report.dst)}</h1>"
        f"<table>{summary}</table>{plot}<table><tr>{head}</tr>{''.join(rows)}</table></body></html>\n"
    )
