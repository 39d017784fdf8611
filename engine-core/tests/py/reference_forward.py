"""Float64 forward pass of a Llama-family GGUF (llama, qwen2, phi3), written from the model
definitions independently of the engine: dequantizes every tensor with the `gguf` package and runs
the transformer in numpy. Prints the logits of every position of the given token ids as JSON.

usage: reference_forward.py MODEL.gguf ID [ID ...]
"""

import json
import math
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    v = f.contents()
    return v


def tensor(reader, name):
    for t in reader.tensors:
        if t.name == name:
            # Shape (rows, cols) for matrices, (n,) for vectors.
            return dequantize(t.data, t.tensor_type).astype(np.float64)
    return None


def rope_angles(pos, n_dims, base, freq_scale, ext_factor, attn_factor, corr, factors):
    """(cos, sin) per rotated pair, following the GGML rope definition (YaRN when ext_factor != 0)."""
    out = []
    for i in range(n_dims // 2):
        theta_extrap = pos * base ** (-2.0 * i / n_dims)
        if factors is not None:
            theta_extrap /= factors[i]
        theta_interp = freq_scale * theta_extrap
        theta = theta_interp
        mscale = attn_factor
        if ext_factor != 0.0:
            y = (i - corr[0]) / max(0.001, corr[1] - corr[0])
            ramp = (1.0 - min(1.0, max(0.0, y))) * ext_factor
            theta = theta_interp * (1 - ramp) + theta_extrap * ramp
            mscale *= 1.0 + 0.1 * math.log(1.0 / freq_scale)
        out.append((math.cos(theta) * mscale, math.sin(theta) * mscale))
    return out


def rotate(x, angles, neox):
    x = x.copy()
    n = 2 * len(angles)
    for i, (c, s) in enumerate(angles):
        a, b = (i, i + n // 2) if neox else (2 * i, 2 * i + 1)
        x0, x1 = x[a], x[b]
        x[a] = x0 * c - x1 * s
        x[b] = x0 * s + x1 * c
    return x


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x) + eps) * w


def main():
    path = sys.argv[1]
    ids = [int(a) for a in sys.argv[2:]]
    r = GGUFReader(path)
    arch = field(r, "general.architecture")
    p = lambda k, d=None: field(r, f"{arch}.{k}", d)
    n_layers = p("block_count")
    d_model = p("embedding_length")
    n_heads = p("attention.head_count")
    n_kv = p("attention.head_count_kv", n_heads)
    head_dim = p("attention.key_length", d_model // n_heads)
    ffn = p("feed_forward_length")
    eps = p("attention.layer_norm_rms_epsilon", 1e-5)
    n_rot = p("rope.dimension_count", head_dim)
    base = p("rope.freq_base", 10000.0)
    scaling = p("rope.scaling.type", "linear")
    factor = p("rope.scaling.factor", 1.0) or 1.0
    attn_factor = p("rope.scaling.attn_factor", 1.0)
    neox = arch in ("qwen2", "phi3")
    freq_scale, ext_factor, corr = 1.0, 0.0, (0.0, 0.0)
    if scaling == "linear":
        freq_scale = 1.0 / factor
    elif scaling == "yarn":
        freq_scale = 1.0 / factor
        ext_factor = p("rope.scaling.yarn_ext_factor", 1.0)
        n_orig = p("rope.scaling.original_context_length", p("context_length"))
        def corr_dim(n_r):
            return n_rot * math.log(n_orig / (n_r * 2 * math.pi)) / (2 * math.log(base))
        corr = (max(0.0, math.floor(corr_dim(32.0))), min(n_rot - 1.0, math.ceil(corr_dim(1.0))))
        # The net magnitude scale of YaRN is 1 + 0.1 ln(factor) (times attn_factor), applied in rotate.
    factors = None
    t = tensor(r, "rope_freqs.weight")
    if t is not None:
        factors = t.reshape(-1)

    emb = tensor(r, "token_embd.weight")
    out_w = tensor(r, "output.weight")
    if out_w is None:
        out_w = emb
    x = np.stack([emb[i] for i in ids])  # (T, d)
    T = len(ids)
    angles = [rope_angles(pos, n_rot, base, freq_scale, ext_factor, attn_factor, corr, factors) for pos in range(T)]
    q_dim, kv_dim = n_heads * head_dim, n_kv * head_dim
    for l in range(n_layers):
        g = lambda n: tensor(r, f"blk.{l}.{n}")
        h = np.stack([rms_norm(row, g("attn_norm.weight"), eps) for row in x])
        if arch == "phi3":
            qkv = h @ g("attn_qkv.weight").T
            q, k, v = qkv[:, :q_dim], qkv[:, q_dim:q_dim + kv_dim], qkv[:, q_dim + kv_dim:]
        else:
            q, k, v = h @ g("attn_q.weight").T, h @ g("attn_k.weight").T, h @ g("attn_v.weight").T
        if g("attn_q.bias") is not None:
            q, k, v = q + g("attn_q.bias"), k + g("attn_k.bias"), v + g("attn_v.bias")
        q = q.reshape(T, n_heads, head_dim).copy()
        k = k.reshape(T, n_kv, head_dim).copy()
        v = v.reshape(T, n_kv, head_dim)
        for pos in range(T):
            for hh in range(n_heads):
                q[pos, hh, :n_rot] = rotate(q[pos, hh, :n_rot], angles[pos], neox)
            for hh in range(n_kv):
                k[pos, hh, :n_rot] = rotate(k[pos, hh, :n_rot], angles[pos], neox)
        att = np.zeros((T, n_heads, head_dim))
        group = n_heads // n_kv
        for hh in range(n_heads):
            kv = hh // group
            s = q[:, hh, :] @ k[:, kv, :].T / math.sqrt(head_dim)
            s = s + np.triu(np.full((T, T), -np.inf), 1)
            s = np.exp(s - s.max(axis=1, keepdims=True))
            s /= s.sum(axis=1, keepdims=True)
            att[:, hh, :] = s @ v[:, kv, :]
        x = x + att.reshape(T, q_dim) @ g("attn_output.weight").T
        h = np.stack([rms_norm(row, g("ffn_norm.weight"), eps) for row in x])
        if arch == "phi3" and g("ffn_gate.weight") is None:
            gu = h @ g("ffn_up.weight").T
            gate, up = gu[:, :ffn], gu[:, ffn:]
        else:
            gate, up = h @ g("ffn_gate.weight").T, h @ g("ffn_up.weight").T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ g("ffn_down.weight").T
    x = np.stack([rms_norm(row, tensor(r, "output_norm.weight"), eps) for row in x])
    logits = x @ out_w.T
    json.dump(logits.tolist(), sys.stdout)


if __name__ == "__main__":
    main()
