"""Recurrent sequence mixers: Mamba-2's scalar-decay state-space duality (SSD) on chains and trees.

* :mod:`lib.recurrent.ssd` — the chain: the sequential scan and the "masked attention" form
  (NumPy references), the mask form in torch shared by chains and trees, one recurrent step,
  the causal width-4 convolution;
* :mod:`lib.recurrent.ssd_tree` — the tree (STree, arXiv 2505.14969): ancestor masks, cumulative
  log-decays along parents, the tree mask form, the accepted path's state formed directly, the
  convolution read along the ancestor chain (07.6);
* :mod:`lib.recurrent.tree_decoding` — greedy speculative decoding of :class:`lib.models.ssd_lm.SSDLM`
  with static draft trees filled by the n-gram count model (a chain is the tree 1-1-…-1), the
  naive unrolled tree as a baseline, autoregressive greedy decoding with the recurrent step.
"""
