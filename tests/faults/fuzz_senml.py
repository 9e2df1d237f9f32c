"""atheris entry point: coverage-guided fuzzing of the SenML decoder. Any exception is a
crash: the decoder must turn every input into readings or rejections."""

from __future__ import annotations

import sys

import atheris

from wattline.senml import Limits, bridge_from_topic, decode_pack

# The project is installed editable (a custom loader), which instrument_imports() misses.
atheris.instrument_func(decode_pack)
atheris.instrument_all()

NOW = 1_800_000_000.0


def one(data: bytes) -> None:
    out = decode_pack(data, Limits(NOW))
    for r in out.rejections:
        assert r.reason, r
    fdp = atheris.FuzzedDataProvider(data)
    bridge_from_topic(fdp.ConsumeUnicodeNoSurrogates(200))


if __name__ == "__main__":
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()
