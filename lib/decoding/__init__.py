"""Faster decoding (chapter 07): emit several tokens per call of the expensive model.

* :mod:`lib.decoding.sampling` — ``sampling_transform``: logits → the probabilities a sampler
  draws from (temperature, top-k, top-p), shared by every decoder of the chapter;
* :mod:`lib.decoding.reference` — NumPy float64 references of speculative decoding (07.1): the
  rejection rule, the exact law of its output, α, expected tokens per call, speed-up, best γ;
* :mod:`lib.decoding.speculative` — ``speculative_step`` (the rule on torch rows, RNG-free) and
  ``speculative_generate`` (draft → one target call → verify → O(1) cache rollback), ``SpecStats``;
* :mod:`lib.decoding.drafts` — count models (n-gram, unigram) as drafts with the Decoder protocol;
* :mod:`lib.decoding.toy` — Markov-chain LMs with exact joints, the broken rules of the mutation
  tests, the acceptance-length law (07.2); :mod:`lib.stats` holds the chi-square and t tests;
* :mod:`lib.decoding.benchmark` — ``benchmark_speculative``: ms/char, calls/char, α̂ and c (07.2);
* :mod:`lib.decoding.jacobi` — greedy decoding as Jacobi fixed-point iteration, the settle map (07.3);
* :mod:`lib.decoding.lookahead` and :mod:`lib.decoding.masks` — lookahead decoding: Jacobi
  trajectories as an n-gram pool verified in the same pass, with explicit masks and positions (07.4);
* :mod:`lib.decoding.hybrid` — a CTC fast pass drafts the whole output, the encoder–decoder
  verifies it in one teacher-forced call and corrects where they disagree, with re-sync; ``HybridStats``
  and the character error rate (07.5; the model is :mod:`lib.models.seq2seq`, the data
  :mod:`lib.data.acoustics`);
* :mod:`lib.decoding.dmtd` — Direct Multi-Token Decoding: late layers emit the in-cycle tokens,
  cyclical refilling of the early layers' cache, the teacher-forced training flow (07.7).

Tree verification for state-space models (07.6) lives with the recurrent mixers, in
:mod:`lib.recurrent.tree_decoding`.
"""
