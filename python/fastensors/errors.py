"""The exception types. ``SafetensorError`` is the reference package's name;
each broken rule has its own subclass (docs/format.md lists the rules)."""

from __future__ import annotations

import errno as _errno

from . import _core


class SafetensorError(Exception):
    """Base class of every error fastensors raises about files and tensors."""

    tensor: str | None = None
    path: str | None = None


class SafetensorIOError(SafetensorError, OSError):
    """An operating-system call failed while reading or writing."""


class FileNotFound(SafetensorError, FileNotFoundError):
    """The file does not exist (also a ``FileNotFoundError``). ``str()`` is the
    reference's text, ``No such file or directory: <name>``; ``errno``,
    ``filename`` and ``path`` say the same for programs."""

    def __str__(self) -> str:
        if self.filename is not None:
            return f"No such file or directory: {self.filename}"
        return super().__str__()


class SafetensorPermissionError(SafetensorIOError, PermissionError):
    """Permission denied (also a ``PermissionError``)."""


class SafetensorIsADirectoryError(SafetensorIOError, IsADirectoryError):
    """A directory where a file was expected (also an ``IsADirectoryError``)."""


class SafetensorNotADirectoryError(SafetensorIOError, NotADirectoryError):
    """A file where a directory was expected (also a ``NotADirectoryError``)."""


# errno -> the class raised, so `except PermissionError` works as with open().
_IO_BY_ERRNO = {
    _errno.EACCES: SafetensorPermissionError,
    _errno.EPERM: SafetensorPermissionError,
    _errno.EISDIR: SafetensorIsADirectoryError,
    _errno.ENOTDIR: SafetensorNotADirectoryError,
}


def with_context(cls, message: str, *, tensor=None, path=None) -> SafetensorError:
    """An error of class ``cls`` carrying the tensor and the file it is about."""
    err = cls(message)
    err.tensor = tensor
    err.path = path
    return err


def _io_error(errno, message=None, filename=None) -> SafetensorIOError:
    """Build the OSError subclass for a failed system call. The core passes
    only a message for I/O errors without an errno (a short write)."""
    if message is None:
        return SafetensorIOError(errno)
    return _IO_BY_ERRNO.get(errno, SafetensorIOError)(errno, message, filename)


class HeaderTooSmall(SafetensorError):
    """The file is shorter than the 8-byte header length."""


class HeaderTooLarge(SafetensorError):
    """The header length is over the 100,000,000-byte limit."""


class InvalidHeaderLength(SafetensorError):
    """The header length runs past the end of the file."""


class InvalidUtf8(SafetensorError):
    """The header bytes are not UTF-8."""


class InvalidJson(SafetensorError):
    """The header is not JSON."""


class InvalidHeader(SafetensorError):
    """The header is JSON but not a safetensors header."""


class NestingTooDeep(SafetensorError):
    """The header's JSON nests 128 or more levels deep (as the reference, at most 127)."""


class DuplicateKey(SafetensorError):
    """A tensor name, tensor field or metadata key appears twice."""


class UnknownDtype(SafetensorError):
    """A dtype name outside the safetensors dtype table."""


class InvalidShape(SafetensorError):
    """A shape that is not a list of non-negative integers."""


class InvalidOffset(SafetensorError):
    """data_offsets that are malformed or do not tile the data section."""


class OffsetsBackwards(InvalidOffset):
    """data_offsets end before they begin."""


class OffsetsGap(InvalidOffset):
    """A hole before a tensor (the first tensor must start at 0)."""


class OffsetsOverlap(InvalidOffset):
    """A tensor starts before the previous one ends."""


class SizeOverflow(SafetensorError):
    """Shape times element size does not fit in 64 bits."""


class SizeMismatch(SafetensorError):
    """Byte length differs from dtype bits x elements / 8."""


class MisalignedSubByte(SafetensorError):
    """A sub-byte tensor does not end on a byte boundary."""


class TrailingBytes(SafetensorError):
    """Bytes follow the last tensor."""


class TruncatedData(SafetensorError):
    """The file ends before the last tensor does."""


class InvalidMetadata(SafetensorError):
    """``__metadata__`` is not an object whose values are strings."""


class TensorNotFound(SafetensorError):
    """No tensor of that name."""


class InvalidSliceIndex(SafetensorError, IndexError):
    """An integer index outside its dimension in ``get_slice(...)[...]``
    (also an ``IndexError``, as numpy raises)."""


class InvalidArgument(SafetensorError, ValueError):
    """A caller error: bad arguments to a reader or writer."""


class UnsupportedConversion(SafetensorError, TypeError):
    """No conversion between these two dtypes (docs/dtypes.md lists the pairs)."""


class UnsupportedIsa(SafetensorError, RuntimeError):
    """``FASTENSORS_ISA`` names an instruction-set level that is unknown or
    that this CPU or build cannot run. Raised by the first conversion (and by
    ``fastensors.isa()``), never silently replaced by another level."""


class FileChanged(SafetensorError, OSError):
    """The file shrank (was truncated, or rewritten in place) while it was open:
    a read, conversion or quantization from its mapping found bytes missing.
    The result is discarded; reopen the file. See docs/security.md."""


# Raised by the Python layer only (no C++ error code).


class UnknownDtypeName(UnknownDtype, ValueError):
    """A dtype argument (name, numpy or torch dtype) with no safetensors dtype."""


class InvalidOutput(InvalidArgument):
    """An ``out=`` array of the wrong type, dtype, shape or layout, or read-only."""


_PYTHON_ONLY = (UnknownDtypeName, InvalidOutput, InvalidSliceIndex)

# Error code (C++ fastensors::ErrorCode) -> Python class.
_BY_CODE = {
    "Io": SafetensorIOError,
    "FileNotFound": FileNotFound,
    "HeaderTooSmall": HeaderTooSmall,
    "HeaderTooLarge": HeaderTooLarge,
    "InvalidHeaderLength": InvalidHeaderLength,
    "InvalidUtf8": InvalidUtf8,
    "InvalidJson": InvalidJson,
    "InvalidHeader": InvalidHeader,
    "NestingTooDeep": NestingTooDeep,
    "DuplicateKey": DuplicateKey,
    "UnknownDtype": UnknownDtype,
    "InvalidShape": InvalidShape,
    "InvalidOffsets": InvalidOffset,
    "OffsetsBackwards": OffsetsBackwards,
    "OffsetsGap": OffsetsGap,
    "OffsetsOverlap": OffsetsOverlap,
    "Overflow": SizeOverflow,
    "SizeMismatch": SizeMismatch,
    "MisalignedSubByte": MisalignedSubByte,
    "TrailingBytes": TrailingBytes,
    "TruncatedData": TruncatedData,
    "InvalidMetadata": InvalidMetadata,
    "TensorNotFound": TensorNotFound,
    "InvalidArgument": InvalidArgument,
    "UnsupportedConversion": UnsupportedConversion,
    "UnsupportedIsa": UnsupportedIsa,
    "FileChanged": FileChanged,
}

__all__ = ["SafetensorError"] + sorted(
    {c.__name__ for c in [*_BY_CODE.values(), *_IO_BY_ERRNO.values(), *_PYTHON_ONLY]} - {"SafetensorError"}
)


# -- Sharded checkpoints and pickle conversion ---------------------------------
# The checkpoint rules also live in C++ (fastensors/checkpoint.hpp), with the
# same names; pickle conversion is Python only.


class CheckpointError(SafetensorError):
    """A checkpoint (a file, or shards with an index) is not usable as a whole."""


class CheckpointNotFound(CheckpointError, FileNotFoundError):
    """No checkpoint at that path (no weights file or index found)."""


class AmbiguousCheckpoint(CheckpointError):
    """A directory holds several candidate checkpoints and none is preferred."""


class InvalidIndex(CheckpointError):
    """The index JSON is malformed: not JSON, no ``weight_map``, a bad shard name."""


class ShardNotFound(CheckpointError, FileNotFoundError):
    """A shard named by the index does not exist."""


class TensorMissingFromShard(CheckpointError):
    """The index lists a tensor in a shard whose header does not have it."""


class UnlistedTensor(CheckpointError):
    """A shard holds a tensor that the index does not list."""


class TensorInMultipleShards(CheckpointError):
    """A tensor is stored in a shard other than the one the index maps it to."""


class UnsafePickle(CheckpointError):
    """A pickle checkpoint needs more than tensors to load (it would run code)."""


class ConversionMismatch(CheckpointError):
    """Values read back after a conversion differ from the source."""


_BY_CODE.update({
    "CheckpointNotFound": CheckpointNotFound,
    "AmbiguousCheckpoint": AmbiguousCheckpoint,
    "InvalidIndex": InvalidIndex,
    "ShardNotFound": ShardNotFound,
    "TensorMissingFromShard": TensorMissingFromShard,
    "UnlistedTensor": UnlistedTensor,
    "TensorInMultipleShards": TensorInMultipleShards,
})

_missing = set(_core.error_codes()) ^ set(_BY_CODE)
if _missing:  # the two lists are kept in step by hand; fail loudly if they drift
    raise ImportError(f"fastensors error classes out of step with the core: {sorted(_missing)}")
# InvalidOutput: the binding's own check of an output array's size.
_core._set_error_classes({**_BY_CODE, "Io": _io_error, "InvalidOutput": InvalidOutput})

__all__ += [
    "CheckpointError", "CheckpointNotFound", "AmbiguousCheckpoint", "InvalidIndex", "ShardNotFound",
    "TensorMissingFromShard", "UnlistedTensor", "TensorInMultipleShards", "UnsafePickle", "ConversionMismatch",
]


# -- Python-only errors: model surgery and metadata tools ----------------------


class KeyCollision(SafetensorError, ValueError):
    """Two tensor names would become one (a remap, a prefix strip, a layout
    rename). ``sources`` holds both original names, ``target`` the name."""

    sources: tuple = ()
    target: str | None = None


class MetadataKeyNotFound(SafetensorError, LookupError):
    """A metadata key to delete is not in the checkpoint."""


__all__ += ["KeyCollision", "MetadataKeyNotFound"]

# -- Python-only errors: whole-model quantization -------------------------------

class QuantizationError(SafetensorError):
    """A model could not be quantized (or dequantized) as asked."""


class UnsupportedTensorShape(QuantizationError, ValueError):
    """A tensor selected for quantization has a shape the scheme cannot take."""


class DestinationNotEmpty(QuantizationError, FileExistsError):
    """The output directory already holds files and overwriting was not asked for."""


class QualityThresholdNotMet(QuantizationError):
    """A quantized tensor's cosine similarity is below the required minimum."""


class NotAQuantizedModel(QuantizationError):
    """The input to dequantization is not a layout fastensors reads."""


__all__ += ["QuantizationError", "UnsupportedTensorShape", "DestinationNotEmpty", "QualityThresholdNotMet",
            "NotAQuantizedModel"]

# -- Python-only errors: distributed checkpoints --------------------------------

class DistributedError(SafetensorError):
    """A distributed save or load (``fastensors.distributed``) failed."""


class StateDictMismatch(DistributedError, ValueError):
    """The state dict and the checkpoint disagree: a missing or unexpected
    key, another shape, another dtype, or pieces that do not tile a tensor."""


class RankFailed(DistributedError):
    """Another rank of the process group failed (its error is in the
    message); raised on the ranks that did not fail themselves."""


__all__ += ["DistributedError", "StateDictMismatch", "RankFailed"]

# -- Python-only errors: framework adapters ------------------------------------


class FrameworkNotInstalled(SafetensorError, ImportError):
    """The framework an adapter or ``safe_open(framework=...)`` needs is not
    installed; the message names the extra that installs it."""


class DtypeNotInFramework(SafetensorError, TypeError):
    """A tensor's dtype has no equivalent in the framework it is loaded into
    (or a framework array's dtype has none in safetensors)."""


__all__ += ["FrameworkNotInstalled", "DtypeNotInFramework"]

# -- Python-only errors: remote and file-object sources --------------------------


class RemoteError(SafetensorIOError):
    """A remote source (a URL through fsspec) failed: an error the server
    returned, or transient errors that outlasted the retries and the deadline.
    The message names the URL and the byte range."""


class BadRangeResponse(RemoteError):
    """The answer to a range request is not those bytes: the server ignored
    ``Range`` (sent the whole object), or sent more or fewer bytes than asked.
    Nothing of it is returned as data."""


class RemoteTimeout(RemoteError, TimeoutError):
    """A remote read did not finish before its deadline (retries included)."""


__all__ += ["RemoteError", "BadRangeResponse", "RemoteTimeout"]
