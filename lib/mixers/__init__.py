"""Sequence mixers other than attention (section 01.6 and the attention-free controls of later chapters).

* :mod:`lib.mixers.causal_activation` — the parameter-free causal min/max/mean activation with an
  optional running-mean context (Hilsenbek, arXiv 2406.10906), its NumPy references and the
  PyTorch module the decoder plugs in with ``DecoderConfig(mixer="causal_act")`` or
  ``DecoderConfig(mlp="causal_act")``.
"""

from lib.mixers.causal_activation import (
    MODES,
    CausalActivation,
    PairSelect,
    Past,
    causal_activation_np,
    causal_mean,
    causal_mean_np,
    causal_pair_reduce,
    causal_pair_reduce_np,
)

__all__ = [
    "MODES",
    "CausalActivation",
    "PairSelect",
    "Past",
    "causal_activation_np",
    "causal_mean",
    "causal_mean_np",
    "causal_pair_reduce",
    "causal_pair_reduce_np",
]
