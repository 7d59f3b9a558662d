"""A journey changed while customers are in it: they finish on the version they entered
with; new customers take the new version."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

from tests.conftest import EXAMPLES
from tests.orchestrator.conftest import HarnessFactory


def test_old_customers_finish_on_their_version(
    make_harness: HarnessFactory, database_url: str, tmp_path: Path
) -> None:
    v1_dir = tmp_path / "v1"
    shutil.copytree(EXAMPLES, v1_dir)
    h1 = make_harness(journeys=[str(v1_dir)], templates=str(v1_dir / "templates"))
    h1.event("old", "cart_abandoned", cart_id="c1", total=10)
    old = h1.one("old")

    # The designer shortens the email wait from 2 days to 1 and redeploys.
    v2_dir = tmp_path / "v2"
    shutil.copytree(EXAMPLES, v2_dir)
    path = v2_dir / "cart-recovery.yaml"
    path.write_text(path.read_text().replace("timeout: 2d", "timeout: 1d"))
    h2 = make_harness(journeys=[str(v2_dir)], templates=str(v2_dir / "templates"))
    h2.clock.set(h1.clock.now())
    new_version = h2.rt.registry.current["cart-recovery"].version
    assert new_version != old.version

    h2.event("new", "cart_abandoned", cart_id="c2", total=10)
    assert h2.one("new").version == new_version
    assert h2.one("old").version == old.version

    h2.advance(days=1, minutes=1)
    assert h2.one("new").state == "wait_site"  # new version: 1 day
    assert h2.one("old").state == "wait_email"  # old version: still 2 days
    h2.advance(days=1)
    assert h2.one("old").state == "wait_site"
    assert h2.one("old").wake_at - h2.one("old").step_entered_at == timedelta(days=3)


def test_reformatting_a_journey_keeps_its_version(
    make_harness: HarnessFactory, tmp_path: Path
) -> None:
    d = tmp_path / "j"
    shutil.copytree(EXAMPLES, d)
    path = d / "cart-recovery.yaml"
    h1 = make_harness(journeys=[str(d)], templates=str(d / "templates"))
    before = h1.rt.registry.current["cart-recovery"].version
    text = (
        path.read_text()
        .replace(
            "    for: [email.opened, email.clicked]\n",
            "    for:\n      - email.opened  # opens count\n      - email.clicked\n",
        )
        .replace(
            "  event: order_completed\n  within: 14d", "  within: 14d\n  event: order_completed"
        )
    )
    assert text != path.read_text()
    path.write_text("# reformatted by hand\n" + text)
    h2 = make_harness(journeys=[str(d)], templates=str(d / "templates"))
    assert h2.rt.registry.current["cart-recovery"].version == before
