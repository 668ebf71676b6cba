"""The notebooks' surfaces: the tuner (widgets over token budget and documents per call, predicted
against measured speedups), the entity viewer (a document alone and in its batch, against gold), and
what the notebooks show as tested functions (a gold sample, the measured frontier, committed runs)."""

from toolkit.notebook._tuning import Setting, Tuner, TunerModel, default_profile
from toolkit.notebook._viewer import EntityViewer, document_score, legend, order
from toolkit.notebook._views import (
    GoldSample,
    bench_frame,
    bench_headline,
    committed_results,
    eval_frame,
    quality_frontier,
)

__all__ = ["EntityViewer", "GoldSample", "Setting", "Tuner", "TunerModel", "bench_frame", "bench_headline",
           "committed_results", "default_profile", "document_score", "eval_frame", "legend", "order",
           "quality_frontier"]
