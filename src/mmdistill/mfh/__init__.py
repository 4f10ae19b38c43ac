"""The Modality Focusing Hypothesis (Xue et al., ICLR 2023): the modality Venn diagram
generator (:mod:`.venn`), a vectorised trainer for sweeps of tiny models (:mod:`.ensemble`)
and the paper's synthetic studies (:mod:`.studies`)."""

from .venn import VennDraw, VennSample, VennSpec, draw, preset_settings, preset_spec, spec_from_ratios

__all__ = ["VennDraw", "VennSample", "VennSpec", "draw", "preset_settings", "preset_spec", "spec_from_ratios"]
