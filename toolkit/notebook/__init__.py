"""The notebooks' surfaces: the tuner (widgets over token budget and documents per call, predicted
against measured speedups) and the entity viewer (a document alone and in its batch, against gold)."""

from toolkit.notebook._tuning import Setting, Tuner
from toolkit.notebook._viewer import EntityViewer, document_score, legend, order

__all__ = ["EntityViewer", "Setting", "Tuner", "document_score", "legend", "order"]
