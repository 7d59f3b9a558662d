"""Templates: loading, strict rendering, defaults, the sandbox and load-time errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from channels.base import Recipient
from channels.templates import TemplateLoadError, TemplateRenderError, TemplateSet

ANNA = Recipient(
    customer_id="c-1", email="anna@example.com", traits={"first_name": "Anna", "plan": "pro"}
)
NAMELESS = Recipient(customer_id="c-2", email="x@example.com")


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def templates(tmp_path: Path) -> TemplateSet:
    write(
        tmp_path,
        "welcome.yaml",
        "subject: \"Hallo {{ customer.first_name | default('daar') }}\"\n"
        "text: |\n"
        "  Hi {{ customer.first_name }}, your cart {{ event.cart_id }} waits.\n"
        "html: |\n"
        "  <p>Hi {{ customer.first_name }}</p>"
        '<a href="https://shop.example/c?id={{ event.cart_id }}">go</a>\n',
    )
    write(tmp_path, "banner.yml", "slot: top\nhtml: '<b>{{ event.title }}</b>'\nttl: 3d\n")
    write(
        tmp_path,
        "crm.yaml",
        "body:\n"
        "  name: '{{ customer.first_name }}'\n"
        "  step: '{{ step }}'\n"
        "  tags: ['{{ journey }}', fixed]\n"
        "  count: 3\n",
    )
    return TemplateSet.load(tmp_path)


def test_names_and_kinds(templates: TemplateSet) -> None:
    assert templates.names() == frozenset({"welcome", "banner", "crm"})
    assert "welcome" in templates
    assert templates.kind("welcome") == "email"
    assert templates.kind("banner") == "site"
    assert templates.kind("crm") == "webhook"


def test_email_renders_with_context(templates: TemplateSet) -> None:
    out = templates.render(
        "welcome", recipient=ANNA, event={"cart_id": "k9"}, journey="cart", step="mail1"
    )
    assert out["subject"] == "Hallo Anna"
    assert "Hi Anna, your cart k9 waits." in out["text"]
    assert 'href="https://shop.example/c?id=k9"' in out["html"]


def test_default_filter_works_with_strict_undefined(templates: TemplateSet) -> None:
    with pytest.raises(TemplateRenderError):
        # subject has a default, but the text part does not.
        templates.render("welcome", recipient=NAMELESS, event={"cart_id": "1"})
    tmp = templates.get("welcome").parts["subject"]
    assert tmp.render(customer={"id": "c"}) == "Hallo daar"


def test_missing_variable_names_template_part_and_variable(templates: TemplateSet) -> None:
    with pytest.raises(TemplateRenderError) as info:
        templates.render("welcome", recipient=NAMELESS, event={"cart_id": "1"})
    err = info.value
    assert err.template == "welcome"
    assert err.part == "text"
    assert err.variable == "customer.first_name"
    assert "customer.first_name is undefined" in str(err)
    assert "default" in str(err)


def test_missing_event_property_is_named(templates: TemplateSet) -> None:
    with pytest.raises(TemplateRenderError) as info:
        templates.render("welcome", recipient=ANNA, event={})
    assert info.value.variable == "event.cart_id"


def test_html_is_autoescaped_text_is_not(tmp_path: Path) -> None:
    write(
        tmp_path,
        "t.yaml",
        "subject: '{{ event.x }}'\ntext: '{{ event.x }}'\nhtml: '{{ event.x }}'\n",
    )
    out = TemplateSet.load(tmp_path).render("t", recipient=ANNA, event={"x": "<script>&"})
    assert out["subject"] == "<script>&"
    assert out["text"] == "<script>&"
    assert out["html"] == "&lt;script&gt;&amp;"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ customer.__class__.__init__.__globals__ }}",
        "{{ (customer | attr('__class__')) }}",
        "{{ customer.update({'id': 'x'}) }}",
        "{{ 'x' * 100000000 }}",
    ],
)
def test_injection_attempts_fail_safely(tmp_path: Path, source: str) -> None:
    write(tmp_path, "evil.yaml", f'subject: "{source}"\ntext: ok\n')
    templates = TemplateSet.load(tmp_path)
    with pytest.raises(TemplateRenderError) as info:
        templates.render("evil", recipient=ANNA)
    assert info.value.template == "evil"
    assert info.value.part == "subject"
    message = str(info.value)
    assert "sandbox" in message or "undefined" in message
    assert "<class" not in message


def test_site_ttl_and_expiry(templates: TemplateSet) -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    out = templates.render("banner", recipient=ANNA, event={"title": "Sale"}, now=now)
    assert out["slot"] == "top"
    assert out["html"] == "<b>Sale</b>"
    assert out["ttl"] == str(3 * 86400) + "s"
    assert datetime.fromisoformat(out["expires_at"]) == now + timedelta(days=3)


def test_webhook_body_is_rendered_json(templates: TemplateSet) -> None:
    out = templates.render("crm", recipient=ANNA, journey="cart", step="s1")
    assert json.loads(out["body"]) == {
        "name": "Anna",
        "step": "s1",
        "tags": ["cart", "fixed"],
        "count": 3,
    }


def test_unsubscribe_url_is_available(tmp_path: Path) -> None:
    write(tmp_path, "u.yaml", "subject: s\nhtml: '<a href=\"{{ unsubscribe_url }}\">stop</a>'\n")
    out = TemplateSet.load(tmp_path).render(
        "u", recipient=ANNA, unsubscribe_url="https://t.example/u/abc"
    )
    assert out["html"] == '<a href="https://t.example/u/abc">stop</a>'


def test_syntax_error_reported_at_load_with_file_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "broken.yaml",
        "subject: fine\ntext: |\n  line one\n  line two {{ customer.name \n  line three\n",
    )
    with pytest.raises(TemplateLoadError) as info:
        TemplateSet.load(tmp_path)
    (problem,) = info.value.problems
    assert problem.path == path
    assert problem.line in (4, 5)
    assert "text" in problem.message
    assert str(path) in str(info.value)


def test_all_problems_reported_and_nothing_half_loaded(tmp_path: Path) -> None:
    write(tmp_path, "ok.yaml", "subject: s\ntext: t\n")
    write(tmp_path, "bad1.yaml", "subject: '{% if %}'\ntext: t\n")
    write(tmp_path, "bad2.yaml", "foo: bar\n")
    write(tmp_path, "bad3.yaml", "slot: top\nhtml: x\nttl: soon\n")
    write(tmp_path, "bad4.yaml", "subject: [unclosed\n")
    with pytest.raises(TemplateLoadError) as info:
        TemplateSet.load(tmp_path)
    names = sorted(p.path.name for p in info.value.problems)
    assert names == ["bad1.yaml", "bad2.yaml", "bad3.yaml", "bad4.yaml"]


def test_unknown_template_lists_known(templates: TemplateSet) -> None:
    with pytest.raises(KeyError, match="welcome"):
        templates.get("nope")
