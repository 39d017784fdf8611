"""Writes a GGUF file with the `gguf` package's GGUFWriter, for the engine's interoperability
tests (engine-core/tests/gguf_roundtrip.rs), which check the values listed here.

Usage: gguf_write.py FILE
"""

import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType, GGUFValueType


def main() -> None:
    w = gguf.GGUFWriter(sys.argv[1], arch="tandem-test")
    w.add_custom_alignment(64)
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 0.1)
    w.add_uint64("test.u64", 2**64 - 1)
    w.add_int64("test.i64", -(2**63))
    w.add_float64("test.f64", -1.0e300)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "h\u00e9llo \u2603")
    w.add_array("test.strings", ["a", "", "ccc"])
    w.add_array("test.i32s", [1, -2, 3])
    w.add_key_value("test.u64s", [1, 2**40], GGUFValueType.ARRAY, sub_type=GGUFValueType.UINT64)
    w.add_array("test.f32s", [0.5, -1.25])
    w.add_array("test.nested", [["x", "y"], ["z"]])

    rows = np.arange(24, dtype=np.float32).reshape(3, 8) / 7
    w.add_tensor("f32", rows)
    w.add_tensor("f16", np.linspace(-2, 2, 16, dtype=np.float32).astype(np.float16))
    values = np.sin(np.arange(64, dtype=np.float32)).reshape(2, 32)
    w.add_tensor("q8_0", gguf.quants.quantize(values, GGMLQuantizationType.Q8_0),
                 raw_dtype=GGMLQuantizationType.Q8_0)
    w.add_tensor("bf16", gguf.quants.quantize(values, GGMLQuantizationType.BF16),
                 raw_dtype=GGMLQuantizationType.BF16)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
