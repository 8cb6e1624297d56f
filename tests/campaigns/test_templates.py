"""Templates: personalisation, escaping, undefined variables, and the sandbox against known escapes."""

from __future__ import annotations

import pytest

from opencdp.campaigns.templates import Template, TemplateError, check, render, validate

CTX = {"profile": {"first_name": "<b>Anna</b>", "birthday": "1990-06-03", "bonus_balance": 1200,
                   "bonus_expires_at": "2026-06-30"},
       "cart": [{"name": "Kitchen set", "price": 45990}], "computed": {"churn_probability": 0.8}}


def _t(**parts: str) -> Template:
    return Template("t", "email", **parts)


def test_personalisation_fallbacks_and_filters() -> None:
    out = render(_t(subject="Hi {{ profile.first_name | default('friend') }}",
                    text="{{ profile.nickname | default('friend') }}: {{ profile.bonus_balance }} points until "
                         "{{ profile.bonus_expires_at | date }}; {% for i in cart %}{{ i.name }} {{ i.price | money }}{% endfor %}"
                         " birthday in {{ profile.birthday | next_birthday_in('2026-06-01') }} days"),
                 CTX)
    assert out.subject == "Hi <b>Anna</b>"  # subject and text are not HTML
    assert out.text == "friend: 1200 points until 30.06.2026; Kitchen set 45\u00a0990\u00a0\u20bd birthday in 2 days"


def test_html_is_escaped() -> None:
    assert render(_t(html="<p>{{ profile.first_name }}</p>"), CTX).html == "<p>&lt;b&gt;Anna&lt;/b&gt;</p>"


def test_check_lists_undefined_and_unknown_names() -> None:
    found = check(_t(html="{{ profile.first_name }} {{ profile.city }} {{ computed.clv }} {% for p in cart %}{{ p.name }}{% endfor %}"), CTX)
    assert found.ok and found.undefined == ["computed.clv", "profile.city"]
    bad = check(_t(text="{{ profil.first_name }}"), CTX)
    assert not bad.ok and "did you mean `profile`" in bad.errors[0]["detail"]
    with pytest.raises(TemplateError) as error:
        validate(_t(text="{% if %}"))
    assert error.value.field == "text"


ESCAPES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ profile.__class__.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ config.items() }}",
    "{{ request.application.__globals__ }}",
    "{% include '/etc/passwd' %}",
    "{% import 'os' as os %}",
    "{{ [].__class__.__base__.__subclasses__() }}",
    "{{ (profile|attr('__class__')) }}",
    "{{ cart.append(1) }}",
    "{{ range.__self__ }}",
    "{% for x in range(100000000) %}{% endfor %}",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_sandbox_refuses_escapes(source: str) -> None:
    try:
        out = render(_t(text=source), CTX)
    except TemplateError:
        return
    leaked = out.text
    for secret in ("uid=", "<class", "function", "module", "builtins", "os", "Template"):
        assert secret not in leaked, (source, leaked)
