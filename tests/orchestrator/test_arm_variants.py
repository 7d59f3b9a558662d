"""Content variants per experiment arm: one send step, the template chosen by the arm the
customer was (stickily) assigned at the experiment step before it."""

from __future__ import annotations

from pathlib import Path

from orchestrator.engine import pick_arm
from tests.conftest import EXAMPLES
from tests.orchestrator.conftest import HarnessFactory

JOURNEY = """\
journey: arm-variants
entry:
  event: signed_up
steps:
  - id: split_test
    type: experiment
    arms:
      - {name: discount, weight: 1, next: offer}
      - {name: tips, weight: 1, next: offer}
  - id: offer
    type: send
    channel: email
    template: welcome_tips
    variants:
      - when: arm == 'discount'
        template: welcome_discount
  - id: done
    type: exit
"""


def test_the_variant_follows_the_customers_arm(
    make_harness: HarnessFactory, tmp_path: Path
) -> None:
    (tmp_path / "arm-variants.yaml").write_text(JOURNEY)
    h = make_harness(journeys=[str(tmp_path)], templates=str(EXAMPLES / "templates"))
    step = h.rt.registry.current["arm-variants"].definition.steps[0]
    people = [f"p{i}" for i in range(12)]
    for p in people:
        h.event(p, "signed_up")
    arms = {p: pick_arm(step, "arm-variants", p) for p in people}  # type: ignore[arg-type]
    assert set(arms.values()) == {"discount", "tips"}
    for p in people:
        (row,) = h.deliveries(p)
        expected = "welcome_discount" if arms[p] == "discount" else "welcome_tips"
        assert row.template == expected, (p, arms[p], row.template)
        assert h.one(p, "arm-variants").arm == arms[p]
