"""The SenML decoder: RFC 8428 rules, our naming, and a clear rejection for anything else."""

from __future__ import annotations

import base64
import math
import time

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from wattline import senml
from wattline.senml import DecodedPack, Limits, Reason, bridge_from_topic, decode_pack, encode_pack

NOW = 1_790_000_000.0
REASONS = {v for k, v in vars(Reason).items() if k.isupper()}


def decode(records: object) -> DecodedPack:
    return decode_pack(orjson.dumps(records), Limits(NOW))


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_never_crash(payload: bytes) -> None:
    out = decode_pack(payload, Limits(NOW))
    assert len(out) > 0 or out.rejections
    assert {r.reason for r in out.rejections} <= REASONS


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20)
field_values = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=False),
                         st.text(max_size=30), st.sampled_from(["urn:dev:wl:CT1:", "current", "A", "V", "/"]),
                         json_values)


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["bn", "bt", "bu", "bver", "n", "u", "v", "t", "vs", "s", "x_"]),
                                field_values, max_size=6), max_size=8))
def test_structured_garbage_is_rejected_with_reasons(records: list[dict[str, object]]) -> None:
    out = decode_pack(orjson.dumps(records), Limits(NOW))
    assert {r.reason for r in out.rejections} <= REASONS
    for current in out.current:
        assert 0 <= current <= 10_000 and math.isfinite(current)


# Records of a bridge's sweep, now and then wrong in one way: so that most packs take the
# common path and the rest are handed, whole, to the full path.
UNITS = {"current": "A", "voltage": "V", "power_factor": "/", "rssi": "dBW", "kwh": "kWh"}


def rarely(common: object, *odd: object) -> st.SearchStrategy[object]:
    """`common` nineteen times in twenty, else one of `odd`."""
    return st.sampled_from([common] * 19 * len(odd) + list(odd))


@st.composite
def sweep_records(draw: st.DrawFn) -> dict[str, object]:
    measurement = draw(rarely("current", "voltage", "power_factor", "rssi", "kwh", "current"))
    record: dict[str, object] = {"n": measurement}
    base = draw(rarely("same", "none", "bad"))
    if base != "none":
        names = ["urn:dev:wl:CT1:", "urn:dev:wl:CT2:", "urn:dev:wl:CT3:"] if base == "same" else [
            "urn:dev:wl:", "urn:dev:wl:C T:", "urn:x:CT1:"]
        record["bn"] = draw(st.sampled_from(names))
    unit = draw(rarely("right", "none", "wrong"))
    if unit != "none":
        record["u"] = UNITS[measurement] if unit == "right" else "W"
    value = draw(rarely("good", "missing", "out"))
    if value != "missing":
        in_range = {"current": [0.0, 12.5], "voltage": [230.0], "power_factor": [0.93, 1.0], "rssi": [-70.0],
                    "kwh": [1.0]}[measurement]
        record["v"] = draw(st.sampled_from(in_range if value == "good" else [-1.0, 1e5, -400.0]))
    for key, choices in (("t", [0.0, 5.0, -10.0]), ("bt", [NOW - 20, 0.0, NOW + 3600, NOW - 1e9]),
                         ("bu", ["A", "V"]), ("bver", [10, 11])):
        if draw(rarely(False, True)):
            record[key] = draw(st.sampled_from(choices))
    return record


@settings(max_examples=3000, deadline=None)
@given(st.lists(sweep_records(), min_size=1, max_size=10))
@example([{"bn": "urn:dev:wl:CT1:", "bt": NOW - 20, "n": "current", "v": 1.0}, {"n": "rssi", "v": -70.0},
          {"n": "rssi", "v": -71.0}])  # a second RSSI for one reading
@example([{"bn": "urn:dev:wl:CT1:", "bt": NOW - 20, "n": "rssi", "v": -70.0}])  # RSSI without a current
def test_common_path_decodes_as_the_full_path_does(records: list[dict[str, object]]) -> None:
    payload = orjson.dumps(records)
    fast = decode_pack(payload, Limits(NOW))
    full = DecodedPack()
    senml._resolve(senml._fast_decoder.decode(payload), Limits(NOW), full, typed=True)

    def rows(d: DecodedPack) -> set[tuple[object, ...]]:
        return {(s, t, c, *(None if math.isnan(x) else x for x in extra))
                for s, t, c, *extra in zip(d.serials, d.ts, d.current, d.voltage, d.power_factor, d.rssi, strict=True)}

    assert rows(fast) == rows(full) and len(fast) == len(full)
    assert [(r.reason, r.sensor_serial) for r in fast.rejections] == [(r.reason, r.sensor_serial)
                                                                       for r in full.rejections]


@st.composite
def sweeps(draw: st.DrawFn) -> list[dict[str, object]]:
    """A bridge's sweep, now and then bent in one record: a repeated or malformed name, a
    unit, a value out of range, a second base time, a time of its own, a voltage."""
    rows = draw(st.integers(1, 60))
    serials = draw(st.permutations([f"CT{i}" for i in range(80)]))[:rows]
    records: list[dict[str, object]] = [{"bn": f"urn:dev:wl:{serial}:", "n": "current", "u": "A", "v": 1.5 * k}
                                        for k, serial in enumerate(serials)]
    records[0]["bt"] = draw(rarely(NOW - 20, 3.0, NOW + 3600))
    if draw(st.booleans()):
        for record in records:
            del record["u"]
    at = draw(st.integers(0, rows - 1))
    bend = draw(rarely("none", "repeat", "malformed", "unit", "low", "high", "bt", "t", "voltage"))
    changes: dict[str, dict[str, object]] = {
        "repeat": {"bn": records[0]["bn"] if at else "urn:dev:wl:CT99:"}, "malformed": {"bn": "urn:dev:wl:C T:"},
        "unit": {"u": "V"}, "low": {"v": -0.5}, "high": {"v": 10_000.5}, "bt": {"bt": NOW - 30}, "t": {"t": 1.0}}
    if bend == "voltage":
        records.insert(at + 1, {"n": "voltage", "u": "V", "v": 230.0})
    elif bend != "none":
        records[at] |= changes[bend]
    return records


@settings(max_examples=2000, deadline=None)
@given(sweeps())
def test_sweep_path_decodes_as_the_full_path_does(records: list[dict[str, object]]) -> None:
    payload = orjson.dumps(records)
    decode_pack(payload, Limits(NOW))  # the general path learns the names first
    swept = DecodedPack()
    took = senml._decode_sweep(payload, Limits(NOW), swept)
    fast = decode_pack(payload, Limits(NOW))
    full = DecodedPack()
    senml._resolve(senml._fast_decoder.decode(payload), Limits(NOW), full, typed=True)
    assert (fast.serials, fast.ts, fast.current) == (full.serials, full.ts, full.current)
    assert [(r.reason, r.sensor_serial) for r in fast.rejections] == [(r.reason, r.sensor_serial)
                                                                       for r in full.rejections]
    if took:
        assert (swept.serials, swept.ts, swept.current) == (full.serials, full.ts, full.current)
        assert not full.rejections and not swept.measured_extra
    clean = len({r.get("bn") for r in records}) == len(records) and records[0]["bt"] != NOW + 3600 and all(
        r.get("u", "A") == "A" and 0 <= r["v"] <= 10_000 and "t" not in r  # type: ignore[operator]
        and ("bt" in r) == (k == 0) and r["n"] == "current" and " " not in str(r.get("bn"))
        for k, r in enumerate(records))
    assert took == clean


def test_common_path_takes_a_bridge_sweep() -> None:
    """The pack every bridge sends is decoded by the common path, not the full one."""
    payload = encode_pack([(f"CT{i}", NOW - 10, 1.5 * i) for i in range(50)], extra={"CT3": {"rssi": -70.0}})
    out = DecodedPack()
    assert senml._resolve_common(senml._fast_decoder.decode(payload), Limits(NOW), out)
    assert len(out) == 50 and out.rssi[3] == -70.0 and not out.rejections


def test_round_trip_with_optional_measurements() -> None:
    payload = encode_pack([("CT1", NOW - 5, 12.5), ("CT2", NOW - 5, 0.0)],
                          extra={"CT1": {"voltage": 231.0, "power_factor": 0.93, "rssi": -71.0}})
    out = decode_pack(payload, Limits(NOW))
    assert out.serials == ["CT1", "CT2"] and out.current == [12.5, 0.0]
    assert out.voltage[0] == 231.0 and out.power_factor[0] == 0.93 and out.rssi[0] == -71.0
    assert math.isnan(out.voltage[1]) and not out.rejections


def test_relative_time_and_base_fields() -> None:
    out = decode([{"bn": "urn:dev:wl:CT1:", "bt": -10, "bu": "A", "n": "current", "v": 3},
                  {"n": "current", "t": 5, "v": 4}])
    assert out.ts == [NOW - 10, NOW - 5] and out.current == [3.0, 4.0]


@pytest.mark.parametrize(("records", "reason"), [
    ({"bn": "x"}, Reason.NOT_A_PACK),
    ([], Reason.NOT_A_PACK),
    ([{"bn": "urn:dev:wl:CT1:", "bver": 99, "n": "current", "v": 1}], Reason.VERSION),
    ([{"bn": "urn:dev:wl:CT1:", "n": "current", "v": 1, "zz_": 1}], Reason.MUST_UNDERSTAND),
    ([{"bn": "urn:dev:wl:CT1:", "n": "current", "v": "1"}], Reason.FIELD_TYPE),
    ([{"bn": "urn:dev:other:CT1:", "n": "current", "v": 1}], Reason.NAME),
    ([{"bn": "urn:dev:wl:bad serial:", "n": "current", "v": 1}], Reason.NAME),
    ([{"bn": "urn:dev:wl:CT1:", "n": "temperature", "v": 1}], Reason.UNKNOWN_MEASUREMENT),
    ([{"bn": "urn:dev:wl:CT1:", "n": "current", "u": "mA", "v": 1}], Reason.UNIT),
    ([{"bn": "urn:dev:wl:CT1:", "n": "current", "vs": "1"}], Reason.NO_VALUE),
    ([{"bn": "urn:dev:wl:CT1:", "n": "current", "v": -2}], Reason.NEGATIVE),
    ([{"bn": "urn:dev:wl:CT1:", "n": "current", "v": 5e6}], Reason.OUT_OF_RANGE),
    ([{"bn": "urn:dev:wl:CT1:", "n": "power_factor", "v": 1.5}, {"n": "current", "v": 1}], Reason.OUT_OF_RANGE),
    ([{"bn": "urn:dev:wl:CT1:", "bt": NOW + 3600, "n": "current", "v": 1}], Reason.FUTURE),
    ([{"bn": "urn:dev:wl:CT1:", "bt": 1e9, "n": "current", "v": 1}], Reason.ANCIENT),
    ([{"bn": "urn:dev:wl:CT1:", "n": "voltage", "v": 230}], Reason.MISSING_CURRENT),
    ([{"bn": "urn:dev:wl:CT1:", "n": "current", "v": 1}, {"n": "current", "v": 2}], Reason.DUPLICATE_IN_PACK),
])
def test_each_rule_has_its_reason(records: object, reason: str) -> None:
    out = decode(records)
    assert reason in {r.reason for r in out.rejections}


def test_bad_record_does_not_sink_its_neighbours() -> None:
    out = decode([{"bn": "urn:dev:wl:CT1:", "n": "current", "v": 1},
                  {"bn": "urn:dev:wl:CT2:", "n": "current", "v": -1},
                  {"bn": "urn:dev:wl:CT3:", "n": "current", "v": None},
                  {"bn": "urn:dev:wl:CT4:", "n": "current", "v": 4}])
    assert out.serials == ["CT1", "CT4"]
    assert [r.sensor_serial for r in out.rejections] == ["CT2", "CT3"]


def test_overflowing_number_is_not_finite() -> None:
    out = decode_pack(b'[{"bn": "urn:dev:wl:CT1:", "n": "current", "v": 1e400}]', Limits(NOW))
    assert [r.reason for r in out.rejections] in ([Reason.NOT_FINITE], [Reason.JSON])


def test_invalid_json_and_oversized_packs() -> None:
    assert decode_pack(b'[{"bn": "urn:dev:wl:CT1:", "v": NaN}]', Limits(NOW)).rejections[0].reason == Reason.JSON
    big = b"[" + b",".join([b'{"n":"x"}'] * 120_000) + b"]"
    assert decode_pack(big, Limits(NOW)).rejections[0].reason == Reason.TOO_LARGE


def test_deep_nesting_is_rejected_not_crashing() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    out = decode_pack(deep, Limits(NOW))
    assert out.rejections and out.rejections[0].reason in (Reason.JSON, Reason.TOO_LARGE, Reason.FIELD_TYPE)


@pytest.mark.parametrize(("topic", "bridge"), [
    ("wattline/v1/bridges/BR-1/senml", "BR-1"),
    ("wattline/v1/bridges/BR-1/status", "BR-1"),
    ("wattline/v1/bridges/BR-1/other", None),
    ("wattline/v1/bridges/BR 1/senml", None),
    ("wattline/v1/bridges/+/senml", None),
    ("wattline/v1/bridges/a/b/senml", None),
    ("other/v1/bridges/BR-1/senml", None),
])
def test_topics(topic: str, bridge: str | None) -> None:
    assert bridge_from_topic(topic) == bridge


def test_decoder_throughput_is_sane() -> None:
    """Guards against an accidental slow path (not a benchmark: that lives in bench/)."""
    payload = encode_pack([(f"CT{i}", NOW - 5, 1.5) for i in range(5000)])
    started = time.perf_counter()
    assert len(decode_pack(payload, Limits(NOW))) == 5000
    assert time.perf_counter() - started < 1.0


def test_invalid_utf8_inside_a_record_is_invalid_json() -> None:
    """Found by atheris (tests/faults/fuzz_senml.py): msgspec raised UnicodeDecodeError."""
    payload = base64.b64decode("W3siYm4iOiJ1cm46ZGV2OndsOkNUMDoiLCJuIjoiOTk5OTk5MC6BfSx7ImJuIjoidXJuOmRldjp3bDpD"
                               "VDI6IiwibiI6ImN1cnJlbnQiLCJ1dXJuOmRldjp3bDpDVDI6IiwibiI6ImN1cnJlbnQiLCJ1IjoiQSIs"
                               "IordOjMuMH1d")
    out = decode_pack(payload, Limits(NOW))
    assert [r.reason for r in out.rejections] == [Reason.JSON] and len(out) == 0
