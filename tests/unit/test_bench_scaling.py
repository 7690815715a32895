"""The scaling bench sums each kind of component over its instances."""

from __future__ import annotations

from tools.bench.cpu import CpuCost
from tools.bench.scaling import ScalingRow, _by_component, format_table


def cost(us: float) -> CpuCost:
    return CpuCost(cpu_s=1.0, us_per_message=us, us_per_reading=us / 5)


def test_instances_of_a_kind_are_summed_per_message() -> None:
    costs = {
        "gateway#0": cost(30.0),
        "gateway#1": cost(32.5),
        "processor#0": cost(25.0),
        "processor#1": cost(24.0),
        "processor#2": cost(26.0),
        "kafka#kafka-1": cost(10.0),
        "kafka#kafka-2": cost(9.0),
        "kafka#kafka-3": cost(9.5),
        "postgres": cost(46.0),
        "total": cost(212.0),
    }
    assert _by_component(costs) == {
        "gateway": 62.5,
        "processor": 75.0,
        "kafka": 28.5,
        "postgres": 46.0,
        "total": 212.0,
    }


def test_the_table_has_a_line_per_combination() -> None:
    rows = [
        ScalingRow(1, 1, 3, 20_000, 4_000, {"gateway": 60.0, "total": 200.0}),
        ScalingRow(2, 3, 3, 19_000, 3_800, {"gateway": 64.0, "total": 215.0}),
    ]
    table = format_table(rows).splitlines()
    assert len(table) == 4
    assert table[3].split()[:5] == ["2", "3", "3", "19,000", "3,800"]
    assert table[3].split()[5] == "64.0"
