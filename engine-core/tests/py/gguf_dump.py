"""Prints a GGUF file as the `gguf` package's GGUFReader sees it, as JSON, for the engine's
interoperability tests (engine-core/tests/gguf_roundtrip.rs).

Usage: gguf_dump.py FILE

Output: {"version", "alignment", "data_offset", "kv": [[key, value], ...], "tensors": [...]}.
Values are tagged: {"type": "u32", "value": 7}, {"type": "f32", "bits": <IEEE bits>},
{"type": "string", "value": "..."}, {"type": "array", "elem": "string", "items": [...]}.
Arrays are decoded from the reader's raw parts, so nested and empty arrays keep their structure.
Each tensor is {"name", "dims" (ggml order), "type" (id), "offset" (relative to the data
section), "n_bytes", "data" (hex)}.
"""

import json
import sys

import numpy as np

from gguf import GGUFReader, GGUFValueType

NAMES = {
    GGUFValueType.UINT8: "u8",
    GGUFValueType.INT8: "i8",
    GGUFValueType.UINT16: "u16",
    GGUFValueType.INT16: "i16",
    GGUFValueType.UINT32: "u32",
    GGUFValueType.INT32: "i32",
    GGUFValueType.FLOAT32: "f32",
    GGUFValueType.BOOL: "bool",
    GGUFValueType.STRING: "string",
    GGUFValueType.ARRAY: "array",
    GGUFValueType.UINT64: "u64",
    GGUFValueType.INT64: "i64",
    GGUFValueType.FLOAT64: "f64",
}


def decode(parts, i, vtype):
    """Decodes the value of type vtype starting at parts[i]; returns it and the next index."""
    if vtype == GGUFValueType.STRING:
        return {"type": "string", "value": bytes(parts[i + 1]).decode("utf-8")}, i + 2
    if vtype == GGUFValueType.ARRAY:
        elem = GGUFValueType(int(parts[i][0]))
        n = int(parts[i + 1][0])
        i += 2
        items = []
        for _ in range(n):
            item, i = decode(parts, i, elem)
            items.append(item)
        return {"type": "array", "elem": NAMES[elem], "items": items}, i
    part = parts[i]
    name = NAMES[vtype]
    if vtype == GGUFValueType.FLOAT32:
        return {"type": name, "bits": int(part.view(np.uint32)[0])}, i + 1
    if vtype == GGUFValueType.FLOAT64:
        return {"type": name, "bits": int(part.view(np.uint64)[0])}, i + 1
    if vtype == GGUFValueType.BOOL:
        return {"type": name, "value": bool(part[0])}, i + 1
    return {"type": name, "value": int(part[0])}, i + 1


def main() -> None:
    reader = GGUFReader(sys.argv[1])
    kv = []
    version = None
    for key, field in reader.fields.items():
        if key == "GGUF.version":
            version = int(field.parts[0][0])
        if key.startswith("GGUF."):
            continue
        # parts: key length, key bytes, value type, then the value's own parts.
        value, end = decode(field.parts, 3, GGUFValueType(int(field.parts[2][0])))
        assert end == len(field.parts), key
        kv.append([key, value])
    tensors = []
    for t in reader.tensors:
        tensors.append(
            {
                "name": t.name,
                "dims": [int(d) for d in t.shape],
                "type": int(t.tensor_type),
                "offset": int(t.field.parts[5][0]),
                "n_bytes": int(t.n_bytes),
                "data": t.data.tobytes().hex(),
            }
        )
    json.dump(
        {
            "version": version,
            "alignment": int(reader.alignment),
            "data_offset": int(reader.data_offset),
            "kv": kv,
            "tensors": tensors,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
