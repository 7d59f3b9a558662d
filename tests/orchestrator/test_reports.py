"""``parcours report``: the numbers a journey designer shows to prove a journey's value —
the funnel, which channel earned each conversion, the experiment against its control
group, and what the owned-first rule saved on paid audiences."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.reports import NO_REACTION, funnel_svg, report_as_dict, report_for
from tests.conftest import write_config
from tests.orchestrator.conftest import Harness, HarnessFactory


def key(h: Harness, user: str, channel: str) -> str:
    return next(d.idempotency_key for d in h.deliveries(user) if d.channel == channel)


def cart_recovery_week(h: Harness) -> None:
    """Five customers abandon a cart at once:

    ann clicks the email and buys; bob ignores the email, clicks the banner and buys; cat
    ignores both, is shown ads and buys; dan ignores everything and expires; eve buys the
    next day without reacting to anything."""
    for user in ("ann", "bob", "cat", "dan", "eve"):
        h.identify(user, email=f"{user}@example.nl")
        h.event(user, "cart_abandoned", cart_id="c1", total=40)
    h.advance(hours=1)
    h.event("ann", "email.clicked", delivery_key=key(h, "ann", "email"))
    h.advance(hours=1)
    h.event("ann", "order_completed")
    h.advance(days=1)
    h.event("eve", "order_completed")
    h.advance(days=1)  # two days in: the banner for bob, cat and dan
    h.advance(hours=1)
    h.event("bob", "site.clicked", delivery_key=key(h, "bob", "site"))
    h.advance(hours=1)
    h.event("bob", "order_completed")
    h.advance(days=3)  # five days in: cat and dan enter the paid audience
    h.advance(days=1)
    h.event("cat", "order_completed")
    h.advance(days=7)  # dan leaves the audience without buying


def test_funnel_attribution_and_paid_savings(make_harness: HarnessFactory) -> None:
    h = make_harness(reports={"cost_per_audience_member": 0.35, "currency": "EUR"})
    cart_recovery_week(h)
    r = report_for(h.rt, "cart-recovery")
    assert (r.enrolled, r.live, r.converted) == (5, 0, 4)
    assert r.exits == {"converted": 4, "no_conversion": 1}
    steps = {s.step: s for s in r.steps}
    assert steps["reminder_email"].entered == 5
    w = steps["wait_email"]
    assert (w.entered, w.reacted, w.timed_out, w.converted) == (5, 1, 3, 1)
    w = steps["wait_site"]
    assert (w.entered, w.reacted, w.timed_out) == (3, 1, 2)
    assert steps["retarget"].paid and steps["retarget"].entered == 2
    assert steps["in_audience"].converted == 1
    assert steps["engaged"].converted == 2
    assert r.conversions_by_channel == {
        "email": 1,
        "site": 1,
        "retargeting": 1,
        NO_REACTION: 1,
    }
    p = r.paid
    assert p.paid_steps == ["retarget"]
    assert (p.added, p.removed_on_conversion, p.converted_without_paid) == (2, 1, 3)
    assert p.saved == pytest.approx(1.05)  # 3 owned converters x EUR 0.35
    data = report_as_dict(h.rt, "cart-recovery")
    assert json.loads(json.dumps(data)) == data  # JSON-ready for the admin API
    assert data["paid"]["saved"] == pytest.approx(1.05)
    assert data["conversion_rate"] == pytest.approx(0.8)


def test_experiment_arms_against_the_control_group(make_harness: HarnessFactory) -> None:
    h = make_harness()
    users = [f"u{i:02d}" for i in range(40)]
    for u in users:
        h.identify(u, email=f"{u}@example.nl")
        h.event(u, "signed_up")
    h.advance(days=1, minutes=1)  # the second email: experiment arms
    arms = {u: h.one(u, "welcome-series").arm for u in users}
    assert set(arms.values()) <= {"discount", "tips", "control"}
    for u, arm in arms.items():
        if arm == "discount":  # everyone who got the discount buys
            h.event(u, "order_completed")
        elif arm == "tips":  # the tips get clicks (the journey ends as engaged), no orders
            sends = [d for d in h.deliveries(u) if d.template == "welcome_tips"]
            h.event(u, "email.clicked", delivery_key=sends[0].idempotency_key)
    r = report_for(h.rt, "welcome-series")
    by = {a.name: a for a in r.experiment}
    assert [a.name for a in r.experiment] == [
        a for a in ("discount", "tips", "control") if a in set(arms.values())
    ]
    n = {name: sum(1 for a in arms.values() if a == name) for name in by}
    d, tips = by["discount"], by["tips"]
    assert (d.entered, d.reacted, d.converted) == (n["discount"], 0, n["discount"])
    assert (tips.entered, tips.reacted, tips.converted) == (n["tips"], n["tips"], 0)
    assert d.rate == 1.0 and d.ci_high == 1.0 and d.ci_low < 1.0
    if "control" in by:
        assert by["control"].control and by["control"].p_value is None
        assert d.lift == 1.0 and d.p_value is not None and d.significant
    assert r.paid.saved is None  # no paid step in this journey


def test_unknown_journey_names_the_known_ones(make_harness: HarnessFactory) -> None:
    h = make_harness()
    with pytest.raises(KeyError, match="cart-recovery"):
        report_for(h.rt, "nope")


def test_funnel_chart_is_valid_svg_with_a_bar_per_count(make_harness: HarnessFactory) -> None:
    h = make_harness(reports={"cost_per_audience_member": 0.35})
    cart_recovery_week(h)
    svg = funnel_svg(report_for(h.rt, "cart-recovery"))
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    texts = [e.text or "" for e in root.iter(f"{ns}text")]
    assert "cart-recovery: funnel per step" in texts
    assert "retarget (retargeting)" in texts
    assert any("EUR 1.05 saved" in x for x in texts)
    red = [r for r in root.iter(f"{ns}rect") if r.get("fill") == "#c62828"]
    assert len(red) == 2  # the legend swatch and the paid step's bar


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_report_command_prints_tables_json_and_writes_the_chart(
    make_harness: HarnessFactory, database_url: str, tmp_path: Path
) -> None:
    h = make_harness()
    cart_recovery_week(h)
    config = write_config(tmp_path, database_url)
    runner = CliRunner()
    chart = tmp_path / "funnel.svg"
    result = runner.invoke(
        app, ["report", "cart-recovery", "--chart", str(chart), "-c", str(config)]
    )
    assert result.exit_code == 0, result.output
    assert "funnel per step" in result.output
    assert "conversions by the channel of the last reaction" in result.output
    assert "estimated spend saved: EUR 1.05" in result.output
    assert chart.read_text().startswith("<svg")
    result = runner.invoke(app, ["report", "cart-recovery", "--json", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["conversions_by_channel"]["site"] == 1
    result = runner.invoke(app, ["report", "nope", "-c", str(config)])
    assert result.exit_code == 2 and "journeys are" in result.output


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_simulate_prints_rate_interval_and_p_value_per_arm(
    database_url: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path)
    args = ["simulate", "welcome-series", "-n", "400", "-r", "email=0.4", "-c", str(config)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "95% CI" in result.output and "control" in result.output
    result = CliRunner().invoke(app, [*args, "--json"])
    arms = {a["name"]: a for a in json.loads(result.output)["experiment"]}
    assert arms["control"]["control"] is True
    assert arms["discount"]["p_value"] is not None
    assert sum(a["entered"] for a in arms.values()) <= 400
