"""An independent reference for the forward pass: the Llama family as transformers'
modeling_llama.py / modeling_qwen2.py / modeling_qwen3.py compute it, in numpy (float64).

    python llama_forward.py MODEL_DIR 1,2,3 [--embed]

prints, as JSON, the logits of every position: [[vocab floats], ...]; with --embed, the mean of
the last hidden states (after the final norm) over the positions, as the original computes an
embedding: [hidden floats]. Reads config.json and the safetensors files (single or sharded) with
nothing but numpy.
"""
import glob
import json
import os
import struct
import sys

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        raw = data[start:end]
        dtype = meta["dtype"]
        if dtype == "F32":
            arr = np.frombuffer(raw, dtype="<f4")
        elif dtype == "F16":
            arr = np.frombuffer(raw, dtype="<f2")
        elif dtype == "BF16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(f"{name}: dtype {dtype}")
        out[name] = arr.astype(np.float64).reshape(meta["shape"])
    return out


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def inv_freq(cfg, head_dim):
    theta = cfg.get("rope_theta", 10000.0)
    base = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    s = cfg.get("rope_scaling")
    if not s or s.get("rope_type", s.get("type")) != "llama3":
        return base
    old = s.get("original_max_position_embeddings", 8192)
    lo, hi, factor = s.get("low_freq_factor", 1.0), s.get("high_freq_factor", 4.0), s["factor"]
    wavelen = 2 * np.pi / base
    smooth = (old / wavelen - lo) / (hi - lo)
    mid = (1 - smooth) * base / factor + smooth * base
    return np.where(wavelen < old / hi, base, np.where(wavelen > old / lo, base / factor, mid))


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def main():
    model_dir, ids = sys.argv[1], [int(t) for t in sys.argv[2].split(",")]
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    w = {}
    for path in sorted(glob.glob(os.path.join(model_dir, "*.safetensors"))):
        w.update(read_safetensors(path))
    h = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads") or nh
    hd = cfg.get("head_dim") or h // nh
    eps = cfg.get("rms_norm_eps", 1e-6)
    t = len(ids)

    freqs = np.outer(np.arange(t, dtype=np.float64), inv_freq(cfg, hd))
    emb = np.concatenate([freqs, freqs], axis=-1)
    cos, sin = np.cos(emb), np.sin(emb)
    mask = np.triu(np.full((t, t), -np.inf), k=1)

    def linear(x, prefix):
        y = x @ w[prefix + ".weight"].T
        if prefix + ".bias" in w:
            y = y + w[prefix + ".bias"]
        return y

    x = w["model.embed_tokens.weight"][ids]
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}"
        r = x
        x_n = rms_norm(x, w[p + ".input_layernorm.weight"], eps)
        q = linear(x_n, p + ".self_attn.q_proj").reshape(t, nh, hd).transpose(1, 0, 2)
        k = linear(x_n, p + ".self_attn.k_proj").reshape(t, nkv, hd).transpose(1, 0, 2)
        v = linear(x_n, p + ".self_attn.v_proj").reshape(t, nkv, hd).transpose(1, 0, 2)
        if p + ".self_attn.q_norm.weight" in w:
            q = rms_norm(q, w[p + ".self_attn.q_norm.weight"], eps)
            k = rms_norm(k, w[p + ".self_attn.k_norm.weight"], eps)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = np.repeat(k, nh // nkv, axis=0)
        v = np.repeat(v, nh // nkv, axis=0)
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + mask
        scores = scores - scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs = probs / probs.sum(axis=-1, keepdims=True)
        y = (probs @ v).transpose(1, 0, 2).reshape(t, nh * hd)
        x = r + linear(y, p + ".self_attn.o_proj")
        r = x
        x_n = rms_norm(x, w[p + ".post_attention_layernorm.weight"], eps)
        gate = linear(x_n, p + ".mlp.gate_proj")
        x = r + linear(gate / (1 + np.exp(-gate)) * linear(x_n, p + ".mlp.up_proj"), p + ".mlp.down_proj")
    x = rms_norm(x, w["model.norm.weight"], eps)
    if "--embed" in sys.argv[3:]:
        json.dump(x.mean(axis=0).tolist(), sys.stdout)
        return
    head = w.get("lm_head.weight")
    if head is None or cfg.get("tie_word_embeddings"):
        head = w["model.embed_tokens.weight"]
    json.dump((x @ head.T).tolist(), sys.stdout)


if __name__ == "__main__":
    main()
