"""Qwen3 decoder layers with fewer, larger ops, for the batched step engine.

At decode time a layer is a handful of matrix-vector products; in eager PyTorch the cost
of HF's module graph (~45 small ops and module calls per layer: RMSNorm in 6 ops, three
separate projections, rotary in 8) exceeds the math for small models and still shows at
real sizes on CPU. This runs the same math in ~15 ops per layer: fused RMSNorm, one
q/k/v projection and one gate/up projection (the loaded modules' weights are re-pointed
into the fused tensors, so no memory is duplicated and qwen-tts's own modules keep working),
SDPA with grouped-query heads. Results equal qwen-tts's layers up to float rounding
(tests compare logits within 1e-4).

Positions: the talker uses interleaved multimodal rope, but for speech all three position
components are equal, which makes it ordinary rope with the first component's angles.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def _fuse(linears: list[torch.nn.Linear]) -> tuple[Tensor, Tensor | None]:
    """One weight (and bias) for several linears over the same input; the modules' own
    parameters become views of it."""
    weight = torch.cat([m.weight.data for m in linears])
    bias = None
    if linears[0].bias is not None:
        bias = torch.cat([m.bias.data for m in linears])
    row = 0
    for m in linears:
        n = m.weight.shape[0]
        m.weight.data = weight[row:row + n]
        if bias is not None:
            m.bias.data = bias[row:row + n]
        row += n
    return weight, bias


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class LeanLayer:
    def __init__(self, layer: Any) -> None:
        a, mlp = layer.self_attn, layer.mlp
        self.index = a.layer_idx
        self.head_dim = a.head_dim
        self.n_q = a.q_proj.weight.shape[0] // a.head_dim
        self.n_kv = a.k_proj.weight.shape[0] // a.head_dim
        self.scaling = a.scaling
        self.qkv_w, self.qkv_b = _fuse([a.q_proj, a.k_proj, a.v_proj])
        self.o_proj = a.o_proj
        self.gate_up_w, self.gate_up_b = _fuse([mlp.gate_proj, mlp.up_proj])
        self.down = mlp.down_proj
        self.act = mlp.act_fn
        self.ln1, self.ln2 = layer.input_layernorm, layer.post_attention_layernorm
        self.q_norm, self.k_norm = a.q_norm, a.k_norm

    @staticmethod
    def _norm(x: Tensor, m: Any) -> Tensor:
        return F.rms_norm(x, (x.shape[-1],), m.weight, m.variance_epsilon)

    def __call__(self, x: Tensor, cos: Tensor, sin: Tensor, cache: Any, mask: Tensor | None) -> Tensor:
        """x (B, T, D); cos/sin (B or 1, T, head_dim); ``cache.update(k, v, layer)``
        returns the keys/values to attend to; ``mask`` (B, 1, T, S) bool or None (causal)."""
        b, t, _ = x.shape
        hd = self.head_dim
        h = self._norm(x, self.ln1)
        qkv = F.linear(h, self.qkv_w, self.qkv_b).view(b, t, self.n_q + 2 * self.n_kv, hd)
        q = self._norm(qkv[:, :, : self.n_q], self.q_norm).transpose(1, 2)
        k = self._norm(qkv[:, :, self.n_q: self.n_q + self.n_kv], self.k_norm).transpose(1, 2)
        v = qkv[:, :, self.n_q + self.n_kv:].transpose(1, 2)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        k, v = cache.update(k, v, self.index)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling,
                                             is_causal=mask is None and t > 1,
                                             enable_gqa=self.n_q != self.n_kv)
        x = x + self.o_proj(out.transpose(1, 2).reshape(b, t, -1))
        gate, up = F.linear(self._norm(x, self.ln2), self.gate_up_w, self.gate_up_b).chunk(2, dim=-1)
        return x + self.down(self.act(gate) * up)


def lean_layers(layers: Any) -> list[LeanLayer]:
    return [LeanLayer(layer) for layer in layers]
