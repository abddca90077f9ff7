"""Model surgery: inspecting checkpoints, rewriting headers in place
(renames, metadata edits), and converting between weight layouts."""

from . import layout, metadata
from .inspect import Summary, detect_modality, summary
from .rename import rename_file

__all__ = ["summary", "Summary", "detect_modality", "metadata", "layout", "rename_file"]
