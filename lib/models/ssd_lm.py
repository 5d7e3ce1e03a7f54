"""A small Mamba-2-style character LM whose state can follow a draft tree (07.6).

One block, pre-norm with a residual (the mixer of Mamba-2, Dao & Gu, arXiv 2405.21060)::

    z, v, dt_raw = split(W_in · RMSNorm(u))       v = [x ; B ; C] (d_inner + 2N channels)
    v  = SiLU(causal_conv_W(v))                   depthwise, width W = 4
    dt = softplus(dt_raw + dt_bias)  (per head)   log a = −exp(A_log) · dt
    y  = SSD(x · dt, log a, B, C) + D ⊙ x         lib.recurrent.ssd, one scalar decay per head
    out = W_out · (RMSNorm(y ⊙ SiLU(z)))          the gated norm of Mamba-2

followed, as in the hybrid models STree accelerates, by a position-wise MLP. The LM ties its head
to the embedding. Three ways to run it, all computing the same function:

* ``model(ids, cache=None)`` — the parallel chain form (training, prompts); with a cache it starts
  from the cache's state and leaves the state after the last token there;
* ``model.step(ids, cache)`` — one token per sequence with the recurrence (autoregressive decoding);
* ``model.tree_forward(ids, tree, cache)`` → logits of every node of a draft tree in one call, and
  ``model.commit(cache, tree_pass, leaf)`` moves the cache to the end of the accepted path.

The cache holds, per layer, the convolution window (the last W − 1 inputs of the convolution)
and the SSM state (H, N, P): a fixed size whatever the length of the text.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from lib.recurrent.ssd import causal_conv, ssd_chain, ssd_step
from lib.recurrent.ssd_tree import Tree, accepted_state, ssd_tree, tree_conv
from lib.validation import check_dtype, check_ndim, check_positive_int, check_tensor

__all__ = ["SSDCache", "SSDLM", "SSDLMConfig", "TreePass"]

INIT_STD = 0.02


@dataclass(frozen=True)
class SSDLMConfig:
    """The model's shape. d_inner = expand · d_model is split into n_heads heads of P = d_inner / n_heads."""

    vocab_size: int
    d_model: int = 128
    n_layers: int = 2
    d_state: int = 16
    n_heads: int = 4
    expand: int = 2
    d_conv: int = 4
    mlp_ratio: int = 2
    max_seq_len: int = 4096

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "d_state", "n_heads", "expand", "d_conv", "max_seq_len"):
            check_positive_int(f"SSDLMConfig.{name}", getattr(self, name))
        if isinstance(self.mlp_ratio, bool) or not isinstance(self.mlp_ratio, int) or self.mlp_ratio < 0:
            raise ValueError(f"SSDLMConfig.mlp_ratio: expected an int ≥ 0 (0: no MLP), got {self.mlp_ratio!r}")
        if self.d_inner % self.n_heads:
            raise ValueError(
                f"SSDLMConfig.n_heads: expected a divisor of d_inner = {self.d_inner}, got {self.n_heads}"
            )

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def head_dim(self) -> int:
        return self.d_inner // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SSDCache:
    """Per layer: ``conv`` (b, W − 1, d_inner + 2N) and ``ssm`` (b, H, N, P); ``length`` tokens consumed."""

    conv: list[torch.Tensor]
    ssm: list[torch.Tensor]
    length: int = 0


@dataclass
class TreePass:
    """What a tree call keeps per layer to commit a path: the tree, the SSM inputs and cum, the conv inputs."""

    tree: Tree
    layers: list[dict[str, torch.Tensor]] = field(default_factory=list)


class Mamba2Mixer(nn.Module):
    """The SSD mixer of one block (see the module docstring); every run mode shares its pieces."""

    def __init__(self, c: SSDLMConfig) -> None:
        super().__init__()
        self.c = c
        self.conv_dim = c.d_inner + 2 * c.d_state
        self.in_proj = nn.Linear(c.d_model, c.d_inner + self.conv_dim + c.n_heads, bias=False)
        self.conv_weight = nn.Parameter(torch.randn(self.conv_dim, c.d_conv) / math.sqrt(c.d_conv))
        self.conv_bias = nn.Parameter(torch.zeros(self.conv_dim))
        dt = torch.exp(torch.linspace(math.log(1e-3), math.log(1e-1), c.n_heads))  # Mamba-2's dt range
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹(dt)
        self.A_log = nn.Parameter(torch.log(torch.linspace(1.0, 16.0, c.n_heads)))
        self.D = nn.Parameter(torch.ones(c.n_heads))
        self.norm = nn.RMSNorm(c.d_inner, eps=1e-5)
        self.out_proj = nn.Linear(c.d_inner, c.d_model, bias=False)

    def project(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """u (b, T, d) → z (b, T, d_inner), conv input v (b, T, conv_dim), dt_raw (b, T, H)."""
        return self.in_proj(u).split([self.c.d_inner, self.conv_dim, self.c.n_heads], dim=-1)

    def ssm_inputs(self, v: torch.Tensor, dt_raw: torch.Tensor) -> dict[str, torch.Tensor]:
        """Convolved v and dt → x (b, T, H, P), x·dt, log a (b, T, H), B, C (b, T, N)."""
        c = self.c
        x, B, C = F.silu(v).split([c.d_inner, c.d_state, c.d_state], dim=-1)
        x = x.unflatten(-1, (c.n_heads, c.head_dim))
        dt = F.softplus(dt_raw + self.dt_bias)
        return {"x": x, "xdt": x * dt[..., None], "log_a": -self.A_log.exp() * dt, "B": B, "C": C}

    def output(self, y: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """y (…, H, P) + D x, gated by SiLU(z), normalised, projected back to d_model."""
        y = (y + self.D[:, None] * x).flatten(-2)
        return self.out_proj(self.norm(y * F.silu(z)))

    def forward(self, u: torch.Tensor, conv_state: torch.Tensor, h0: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """The chain: u (b, T, d) → (out, new conv state, last SSM state)."""
        z, v, dt_raw = self.project(u)
        s = self.ssm_inputs(causal_conv(v, self.conv_weight, self.conv_bias, conv_state), dt_raw)
        y, h = ssd_chain(s["xdt"], s["log_a"], s["B"], s["C"], h0)
        window = torch.cat([conv_state, v], dim=1)[:, -(self.c.d_conv - 1) :]
        return self.output(y, s["x"], z), window, h

    def step(self, u: torch.Tensor, conv_state: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One token: u (b, d) → (out (b, d), new conv state, new SSM state), by the recurrence."""
        z, v, dt_raw = self.project(u)
        window = torch.cat([conv_state, v[:, None]], dim=1)  # (b, W, conv_dim)
        conv = torch.einsum("bwd,dw->bd", window, self.conv_weight) + self.conv_bias
        s = self.ssm_inputs(conv, dt_raw)
        y, h = ssd_step(s["xdt"], s["log_a"], s["B"], s["C"], h)
        return self.output(y, s["x"], z), window[:, 1:], h

    def tree(self, u: torch.Tensor, tree: Tree, conv_state: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """A draft tree: u (1, n, d) → (out (1, n, d), what :meth:`SSDLM.commit` needs)."""
        z, v, dt_raw = self.project(u)
        s = self.ssm_inputs(tree_conv(v, tree, conv_state, self.conv_weight, self.conv_bias), dt_raw)
        y, cum = ssd_tree(s["xdt"], s["log_a"], s["B"], s["C"], tree, h0)
        keep = {"xdt": s["xdt"], "B": s["B"], "cum": cum, "window": torch.cat([conv_state, v], dim=1), "h0": h0}
        return self.output(y, s["x"], z), keep


class Block(nn.Module):
    """RMSNorm → mixer → residual, then RMSNorm → MLP (GELU) → residual when mlp_ratio > 0."""

    def __init__(self, c: SSDLMConfig) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(c.d_model, eps=1e-5)
        self.mixer = Mamba2Mixer(c)
        self.mlp = None
        if c.mlp_ratio:
            self.mlp_norm = nn.RMSNorm(c.d_model, eps=1e-5)
            self.mlp = nn.Sequential(
                nn.Linear(c.d_model, c.mlp_ratio * c.d_model, bias=False), nn.GELU(),
                nn.Linear(c.mlp_ratio * c.d_model, c.d_model, bias=False),
            )

    def finish(self, u: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
        u = u + mixed
        return u if self.mlp is None else u + self.mlp(self.mlp_norm(u))


class SSDLM(nn.Module):
    """The character LM (see the module docstring): ids (b, T) → logits (b, T, V)."""

    def __init__(self, config: SSDLMConfig) -> None:
        super().__init__()
        if not isinstance(config, SSDLMConfig):
            raise TypeError(f"config: expected an SSDLMConfig, got {type(config).__name__}")
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm_f = nn.RMSNorm(config.d_model, eps=1e-5)
        self._init_weights()

    def _init_weights(self) -> None:
        """N(0, 0.02²) matrices; the two that write into the residual stream get 0.02/√(2·n_layers)."""
        residual_std = INIT_STD / math.sqrt(2 * self.config.n_layers)
        for name, p in self.named_parameters():
            if p.dim() == 2 and not name.endswith("conv_weight"):
                std = residual_std if name.endswith(("out_proj.weight", "mlp.2.weight")) else INIT_STD
                nn.init.normal_(p, mean=0.0, std=std)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def new_cache(self, batch_size: int) -> SSDCache:
        """The state before any text: zero convolution windows and zero SSM states."""
        check_positive_int("batch_size", batch_size)
        c, mixer, dtype = self.config, self.blocks[0].mixer, self.tok_emb.weight.dtype
        conv = [torch.zeros(batch_size, c.d_conv - 1, mixer.conv_dim, dtype=dtype) for _ in self.blocks]
        ssm = [torch.zeros(batch_size, c.n_heads, c.d_state, c.head_dim, dtype=dtype) for _ in self.blocks]
        return SSDCache(conv, ssm)

    def _logits(self, u: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm_f(u), self.tok_emb.weight)

    def _check_ids(self, ids: Any, ndim_layout: str) -> None:
        check_tensor("ids", ids)
        check_dtype("ids", ids, (torch.long, torch.int32))
        check_ndim("ids", ids, ndim_layout)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.config.vocab_size):
            raise ValueError(f"ids: expected token ids in [0, {self.config.vocab_size}), got [{int(ids.min())}, {int(ids.max())}]")

    def forward(self, ids: torch.Tensor, cache: SSDCache | None = None) -> torch.Tensor:
        """Logits (b, T, V) of ids (b, T ≥ 1) in one parallel pass; continues from and updates ``cache``."""
        self._check_ids(ids, "batch, tokens")
        if ids.shape[1] == 0:
            raise ValueError("ids: expected at least one token, got shape (b, 0)")
        fresh = cache if cache is not None else self.new_cache(ids.shape[0])
        u = self.tok_emb(ids)
        for i, block in enumerate(self.blocks):
            h0 = fresh.ssm[i] if cache is not None else None
            mixed, fresh.conv[i], fresh.ssm[i] = block.mixer(block.norm(u), fresh.conv[i], h0)
            u = block.finish(u, mixed)
        fresh.length += ids.shape[1]
        return self._logits(u)

    def step(self, ids: torch.Tensor, cache: SSDCache) -> torch.Tensor:
        """Logits (b, V) of one new token per sequence, ids (b,), by the recurrence; updates ``cache``."""
        self._check_ids(ids, "batch")
        u = self.tok_emb(ids)
        for i, block in enumerate(self.blocks):
            mixed, cache.conv[i], cache.ssm[i] = block.mixer.step(block.norm(u), cache.conv[i], cache.ssm[i])
            u = block.finish(u, mixed)
        cache.length += 1
        return self._logits(u)

    def tree_forward(self, ids: torch.Tensor, tree: Tree, cache: SSDCache) -> tuple[torch.Tensor, TreePass]:
        """Logits (n, V) of every node of a draft tree, ids (n,), scored against the committed ``cache``.

        The cache is not changed: :meth:`commit` moves it to the end of the accepted path.
        """
        self._check_ids(ids, "nodes")
        if not isinstance(tree, Tree) or tree.size != ids.shape[0]:
            got = f"a Tree of {tree.size} nodes" if isinstance(tree, Tree) else type(tree).__name__
            raise ValueError(f"tree: expected a Tree of {ids.shape[0]} nodes (one per id), got {got}")
        if cache.conv[0].shape[0] != 1:
            raise ValueError(f"cache: expected a batch-1 cache for a tree, got batch {cache.conv[0].shape[0]}")
        u, tree_pass = self.tok_emb(ids[None]), TreePass(tree)
        for i, block in enumerate(self.blocks):
            mixed, keep = block.mixer.tree(block.norm(u), tree, cache.conv[i], cache.ssm[i])
            tree_pass.layers.append(keep)
            u = block.finish(u, mixed)
        return self._logits(u)[0], tree_pass

    def commit(self, cache: SSDCache, tree_pass: TreePass, leaf: int) -> None:
        """Move ``cache`` to the state after the root path of ``leaf``, formed directly (no re-run)."""
        tree = tree_pass.tree
        if isinstance(leaf, bool) or not isinstance(leaf, int) or not 0 <= leaf < tree.size:
            raise ValueError(f"leaf: expected a node index in [0, {tree.size}), got {leaf!r}")
        for i, keep in enumerate(tree_pass.layers):
            cache.ssm[i] = accepted_state(keep["xdt"], keep["cum"], keep["B"], tree, leaf, keep["h0"])
            cache.conv[i] = keep["window"][:, tree.conv_table[leaf, 1:]]
        cache.length += int(tree.depth[leaf]) + 1

    @classmethod
    def from_state(cls, config: SSDLMConfig | Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]) -> SSDLM:
        """A model of ``config`` (or its dict) carrying ``state_dict``; a missing or extra key is named."""
        config = config if isinstance(config, SSDLMConfig) else SSDLMConfig(**config)
        model = cls(config)
        expected = model.state_dict()
        missing, unexpected = sorted(set(expected) - set(state_dict)), sorted(set(state_dict) - set(expected))
        if missing or unexpected:
            raise ValueError(f"state_dict: missing {missing[:1]} / unexpected {unexpected[:1]} tensors for this config")
        model.load_state_dict(state_dict)
        return model
