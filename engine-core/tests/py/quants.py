"""Encodes and decodes buffers with the reference implementations, for the engine's bit-exactness
tests (engine-core/tests/quant_exact.rs).

Usage: quants.py MANIFEST.json

The manifest is {"ggml_lib": PATH or null, "jobs": [JOB, ...]}; each job is
{"op": OP, "type": NAME, "block_size": N, "type_size": N, "input": PATH, "output": PATH} with
NAME a ggml type name (Q4_0, Q6_K, ...), the block geometry as the engine knows it (the package's
table still has the old 40-byte Q8_1 block), and OP one of:

  dequantize        gguf.quants.dequantize of the block bytes in input; writes f32 values
  quantize          gguf.quants.quantize of the f32 values in input; writes the encoded bytes
  ggml_dequantize   the same through ggml's dequantize_row_<type> from the library ggml_lib
  ggml_quantize     the same through ggml's quantize_row_<type>_ref from the library ggml_lib

All files are raw little-endian arrays.
"""

import ctypes
import json
import sys

import numpy as np

import gguf


def c_name(type_name: str) -> str:
    # ggml spells the k-quants with a capital K: q4_K.
    return type_name[0].lower() + type_name[1:]


def ggml_fn(lib, name):
    fn = getattr(lib, name)
    fn.restype = None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    return fn


def main() -> None:
    with open(sys.argv[1]) as f:
        manifest = json.load(f)
    lib = None
    for job in manifest["jobs"]:
        qtype = gguf.GGMLQuantizationType[job["type"]]
        block_size, type_size = job["block_size"], job["type_size"]
        raw = np.fromfile(job["input"], dtype=np.uint8)
        op = job["op"]
        if op == "dequantize":
            out = np.asarray(gguf.quants.dequantize(raw, qtype), dtype=np.float32)
        elif op == "quantize":
            out = np.asarray(gguf.quants.quantize(raw.view(np.float32), qtype))
        elif op in ("ggml_quantize", "ggml_dequantize"):
            if lib is None:
                lib = ctypes.CDLL(manifest["ggml_lib"])
            if op == "ggml_quantize":
                src = np.ascontiguousarray(raw.view(np.float32))
                n = src.size
                out = np.zeros(n // block_size * type_size, dtype=np.uint8)
                fn = ggml_fn(lib, f"quantize_row_{c_name(job['type'])}_ref")
            else:
                src = np.ascontiguousarray(raw)
                n = src.size // type_size * block_size
                out = np.zeros(n, dtype=np.float32)
                fn = ggml_fn(lib, f"dequantize_row_{c_name(job['type'])}")
            fn(src.ctypes.data, out.ctypes.data, n)
        else:
            raise SystemExit(f"unknown op {op!r}")
        out.tofile(job["output"])


if __name__ == "__main__":
    main()
