"""The printed report of ``make bench``, from the dictionary it also writes as JSON."""

from __future__ import annotations

from typing import Any

#: How the CPU table names the components (the stack's are shared with its other users).
_COMPONENTS = {
    "gateway": "gateway (bench's)",
    "processor": "processor (bench's)",
    "kafka": "Kafka (stack's)",
    "mosquitto": "Mosquitto (stack's)",
    "postgres": "PostgreSQL (stack's)",
    "total": "total",
}


def print_report(report: dict[str, Any]) -> None:
    print(f"\nNakhon bench, {report['when']}, {report['machine']['cpus']} CPUs\n")
    _ceilings(report["ceilings"])
    e = report["end_to_end"]
    _end_to_end(e)
    _latency(e)
    idle = report.get("cpu_idle_percent_of_a_core", {})
    if e["throughput"]["cpu"]:
        print("\nCPU per component, flat out (from /proc, utime + stime, with children):")
        _cpu_table(e["throughput"]["cpu"], idle)
    if "fleet" in report:
        _fleet(report["fleet"], idle)
    if "api" in report:
        print("\nAPI (GET /v1/series):")
        for k, v in report["api"].items():
            print(f"  {k:<40} {v}")


def _ceilings(c: dict[str, Any]) -> None:
    print("Raw ceilings of this machine (each stage alone):")
    rows = [
        ("Mosquitto QoS 1, C clients, login", "mosquitto_c_clients_qos1_msgs_per_s", "msg/s"),
        ("... same over TLS", "mosquitto_c_clients_tls_qos1_msgs_per_s", "msg/s"),
        (
            "... open broker, no authentication",
            "mosquitto_c_clients_anonymous_qos1_msgs_per_s",
            "msg/s",
        ),
        ("Mosquitto QoS 1, paho (Python)", "mosquitto_paho_clients_qos1_msgs_per_s", "msg/s"),
        ("Kafka produce (acks=all, lz4)", "kafka_produce_records_per_s", "rec/s"),
        ("COPY + upsert into readings", "copy_rows_per_s", "rows/s"),
    ]
    for label, key, unit in rows:
        print(f"  {label:<36}{c[key]:>10,} {unit}")


def _end_to_end(e: dict[str, Any]) -> None:
    t, s = e["throughput"], e["throughput_tls"]
    print("\nEnd to end (MQTT -> gateway -> Kafka -> processor -> TimescaleDB):")
    print(
        f"  throughput   {t['readings_per_s']:>10,} readings/s  ({e['messages_per_s']:,} msg/s,"
        f" {t['readings']:,} readings in {t['seconds']} s)"
    )
    print(
        f"  over TLS     {s['readings_per_s']:>10,} readings/s  ({s['readings']:,} readings"
        f" in {s['seconds']} s; publishers and gateway on 8883)"
    )
    print(
        f"  ratios       {e['ratio_to_mosquitto_ceiling']:.2f} of Mosquitto"
        f" ({e['ratio_to_paho_ceiling']:.2f} of its paho figure),"
        f" {e['ratio_to_kafka_ceiling']:.2f} of Kafka produce,"
        f" {e['ratio_to_copy_ceiling']:.2f} of COPY"
    )


def _latency(e: dict[str, Any]) -> None:
    target = e["p99_target_ms_at_50_percent"]
    print("\nPublish -> row latency at shares of the flat-out rate (SenML packs of 5):")
    print(
        f"  {'share':>5}  {'msg/s':>7}  {'readings/s':>10}  {'p50':>9}  {'p99':>9}  {'CPU/msg':>10}"
    )
    for row in e["latency_at_share_of_flat_out"]:
        cpu = row["cpu"]["total"]["us_per_message"] if row["cpu"] else None
        verdict = ""
        if row["share_percent"] == 50:
            met = row["latency_p99_ms"] <= target
            verdict = f"  target p99 <= {target:,.0f} ms: {'met' if met else 'NOT met'}"
        print(
            f"  {row['share_percent']:>4} %  {row['offered_messages_per_s']:>7,}"
            f"  {row['offered_readings_per_s']:>10,}  {row['latency_p50_ms']:>6} ms"
            f"  {row['latency_p99_ms']:>6} ms  {_us(cpu):>10}{verdict}"
        )


def _cpu_table(cpu: dict[str, dict[str, Any]], idle: dict[str, float]) -> None:
    """One line a component; "above idle" takes off what it spends when nothing is published."""
    total = cpu["total"]["cpu_s"] or 1.0
    print(
        f"  {'':<22}{'CPU s':>7}  {'µs/msg':>8}  {'µs/reading':>10}  {'above idle':>10}"
        f"  {'idle':>6}  {'share':>6}"
    )
    for name, c in cpu.items():
        idle_pct = sum(idle.values()) if name == "total" else idle.get(name)
        above = c.get("us_per_message_above_idle")
        print(
            f"  {_COMPONENTS.get(name, name):<22}{c['cpu_s']:>7.2f}  {c['us_per_message']:>8,.0f}"
            f"  {c['us_per_reading']:>10,.0f}  {_us(above).replace(' µs', ''):>10}"
            f"  {_pct(idle_pct):>6}  {c['cpu_s'] / total:>6.0%}"
        )
    print(
        "  (µs/msg above idle: less each one's CPU when nothing is published, idle = % of a core)"
    )


def _fleet(f: dict[str, Any], idle: dict[str, float]) -> None:
    formats = ", ".join(f"{n:,} {fmt}" for fmt, n in f["formats"].items())
    print(
        f"\nFleet: {f['sensors']:,} sensors in {f['cities']} cities ({formats}),"
        f" one message each every {f['interval_s']:g} s, for {f['publish_seconds']:g} s:"
    )
    print(
        f"  offered      {f['offered_messages_per_s']:,} msg/s,"
        f" {f['offered_readings_per_s']:,} readings/s"
    )
    print(
        f"  stored       {f['stored_readings']:,} of {f['expected_readings']:,} readings"
        f" ({f['readings_per_s']:,} readings/s), {f['stored_positions']:,} of"
        f" {f['expected_positions']:,} positions; last row {f['drain_seconds']} s after"
        " the last publish"
    )
    print(f"  latency      p50 {f['latency_p50_ms']} ms, p99 {f['latency_p99_ms']} ms")
    if f["cpu"]:
        print("  CPU per component:")
        _cpu_table(f["cpu"], idle)


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} µs"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"
