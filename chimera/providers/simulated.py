"""The built-in simulated provider: runs with no API key and no network.

It reads the brief, "thinks" a handful of thoughts about it, then writes a
component that fits it (a login form for a login-form brief), pausing
``delay`` seconds between steps so the stream is visible. Its model is
``"simulated"`` so nobody mistakes it for a real one. ``fail_with`` makes it
fail after its thoughts, for trying out how clients show a team's error.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from chimera.defaults import DEFAULT_SIM_DELAY
from chimera.errors import ProviderError
from chimera.providers.base import AnswerStarted, CodeResult, ProviderEvent, Thought

SIMULATED_MODEL = "simulated"

_STOPWORDS = frozenset(
    ["a", "an", "the", "with", "and", "or", "for", "to", "of", "in", "on", "that", "this", "build", "create", "make", "me", "please", "add", "simple", "basic", "small", "nice", "component", "page", "some", "using", "which", "has", "have"]
)


@dataclass(frozen=True, slots=True)
class _Kind:
    """A family of components the simulator knows how to write."""

    name: str
    keywords: tuple[str, ...]
    plan: tuple[str, ...]


_KINDS: tuple[_Kind, ...] = (
    _Kind(
        "LoginForm",
        ("login", "log in", "sign in", "signin"),
        (
            "The form needs {fields} fields and a submit button.",
            "Email gets a format check; the password must not be empty.",
            "Errors show next to each field, and the button is disabled while submitting.",
        ),
    ),
    _Kind(
        "SignupForm",
        ("signup", "sign up", "register", "registration"),
        (
            "A registration form: {fields} plus a password confirmation.",
            "Both passwords must match before the form can be sent.",
        ),
    ),
    _Kind(
        "TodoList",
        ("todo", "to-do", "task list", "checklist"),
        (
            "State is a list of items, each with an id, a title and a done flag.",
            "Adding trims the input and ignores empty titles; items can be toggled and removed.",
        ),
    ),
    _Kind(
        "Counter",
        ("counter", "increment", "clicker"),
        ("One number in state, with buttons to increment, decrement and reset.",),
    ),
    _Kind(
        "SearchBar",
        ("search", "filter", "autocomplete"),
        (
            "A controlled input that filters a list as the user types.",
            "Matching is case-insensitive; an empty query shows everything.",
        ),
    ),
)

_FIELD_WORDS = ("email", "password", "username", "name", "phone", "remember")


def _words(brief: str) -> list[str]:
    return re.findall(r"[A-Za-z][A-Za-z0-9]*", brief)


def _component_name(brief: str) -> str:
    words = [w for w in _words(brief) if w.lower() not in _STOPWORDS][:2]
    name = "".join(w[:1].upper() + w[1:].lower() for w in words)
    return name or "Component"


def _pick_kind(brief: str) -> _Kind | None:
    text = brief.lower()
    for kind in _KINDS:
        if any(k in text for k in kind.keywords):
            return kind
    return None


def _fields(brief: str, default: tuple[str, ...]) -> tuple[str, ...]:
    text = brief.lower()
    found = tuple(f for f in _FIELD_WORDS if f in text)
    return found or default


def _login_form(fields: tuple[str, ...]) -> str:
    state = "\n".join(f"  const [{f}, set{f.title()}] = useState('');" for f in fields)
    inputs = "\n".join(
        f"      <label>\n        {f.title()}\n"
        f"        <input type=\"{'password' if f == 'password' else 'email' if f == 'email' else 'text'}\""
        f" value={{{f}}} onChange={{(e) => set{f.title()}(e.target.value)}} />\n"
        f"        {{errors.{f} && <span role=\"alert\">{{errors.{f}}}</span>}}\n      </label>"
        for f in fields
    )
    checks = []
    if "email" in fields:
        checks.append(
            "    if (!/^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$/.test(email)) next.email = 'Enter a valid email';"
        )
    if "password" in fields:
        checks.append("    if (!password) next.password = 'Enter your password';")
    check_lines = "\n".join(checks)
    return f"""import {{ FormEvent, useState }} from 'react';

type Errors = Partial<Record<{' | '.join(repr(f) for f in fields)}, string>>;

export function LoginForm({{ onSubmit }}: {{ onSubmit: (values: Record<string, string>) => Promise<void> }}) {{
{state}
  const [errors, setErrors] = useState<Errors>({{}});
  const [submitting, setSubmitting] = useState(false);

  async function handleSubmit(event: FormEvent) {{
    event.preventDefault();
    const next: Errors = {{}};
{check_lines}
    setErrors(next);
    if (Object.keys(next).length > 0) return;
    setSubmitting(true);
    try {{
      await onSubmit({{ {', '.join(fields)} }});
    }} finally {{
      setSubmitting(false);
    }}
  }}

  return (
    <form onSubmit={{handleSubmit}} noValidate>
{inputs}
      <button type="submit" disabled={{submitting}}>
        {{submitting ? 'Signing in…' : 'Sign in'}}
      </button>
    </form>
  );
}}
"""


def _generic(name: str, brief: str, kind: _Kind | None) -> str:
    if kind is not None and kind.name == "TodoList":
        return """import { useState } from 'react';

type Item = { id: number; title: string; done: boolean };

export function TodoList() {
  const [items, setItems] = useState<Item[]>([]);
  const [title, setTitle] = useState('');

  function add() {
    const trimmed = title.trim();
    if (!trimmed) return;
    setItems((prev) => [...prev, { id: Date.now(), title: trimmed, done: false }]);
    setTitle('');
  }

  return (
    <section>
      <input value={title} onChange={(e) => setTitle(e.target.value)} placeholder="New task" />
      <button onClick={add}>Add</button>
      <ul>
        {items.map((item) => (
          <li key={item.id}>
            <input
              type="checkbox"
              checked={item.done}
              onChange={() =>
                setItems((prev) => prev.map((i) => (i.id === item.id ? { ...i, done: !i.done } : i)))
              }
            />
            {item.title}
            <button onClick={() => setItems((prev) => prev.filter((i) => i.id !== item.id))}>×</button>
          </li>
        ))}
      </ul>
    </section>
  );
}
"""
    if kind is not None and kind.name == "Counter":
        return """import { useState } from 'react';

export function Counter({ initial = 0 }: { initial?: number }) {
  const [count, setCount] = useState(initial);
  return (
    <div>
      <output aria-live="polite">{count}</output>
      <button onClick={() => setCount((c) => c - 1)}>−</button>
      <button onClick={() => setCount((c) => c + 1)}>+</button>
      <button onClick={() => setCount(initial)}>Reset</button>
    </div>
  );
}
"""
    if kind is not None and kind.name == "SearchBar":
        return """import { useMemo, useState } from 'react';

export function SearchBar({ items }: { items: string[] }) {
  const [query, setQuery] = useState('');
  const shown = useMemo(
    () => items.filter((item) => item.toLowerCase().includes(query.trim().toLowerCase())),
    [items, query],
  );
  return (
    <div role="search">
      <input type="search" value={query} onChange={(e) => setQuery(e.target.value)} />
      <ul>{shown.map((item) => <li key={item}>{item}</li>)}</ul>
    </div>
  );
}
"""
    summary = brief.strip().replace("*/", "* /")[:200]
    return f"""import {{ ReactNode }} from 'react';

/** {summary} */
export function {name}({{ children }}: {{ children?: ReactNode }}) {{
  return (
    <section className="{name[:1].lower() + name[1:]}">
      <h2>{name}</h2>
      {{children}}
    </section>
  );
}}
"""


def plan(brief: str, team: str) -> tuple[list[str], str, str]:
    """The thoughts and code the simulator produces for ``brief``: ``(thoughts, code, name)``."""
    kind = _pick_kind(brief)
    if kind is not None and kind.name in ("LoginForm", "SignupForm"):
        default = ("email", "password")
        fields = _fields(brief, default)
        if kind.name == "SignupForm":
            fields = tuple(dict.fromkeys((*fields, "name")))
        name = kind.name
        code = _login_form(fields).replace("LoginForm", name)
    else:
        fields = ()
        name = kind.name if kind else _component_name(brief)
        code = _generic(name, brief, kind)
    short = brief.strip().splitlines()[0][:80] if brief.strip() else "the brief"
    opener = {
        "anthropic": f"Reading the brief: “{short}”. This calls for a {name} component.",
        "google": f"The request is “{short}”; I will build it as one {name} component.",
    }.get(team, f"Working on “{short}” as a {name} component.")
    steps = [s.format(fields=" and ".join(fields) or "the") for s in (kind.plan if kind else ())]
    if not steps:
        steps = [f"The component takes its content as children and renders a titled {name}."]
    closer = "React with TypeScript, function components and hooks; no outside libraries."
    return [opener, *steps, closer], code, name


class SimulatedProvider:
    """:class:`chimera.providers.base.Provider` with no network; cancellable at any pause."""

    def __init__(
        self, team: str, *, delay: float = DEFAULT_SIM_DELAY, fail_with: str | None = None
    ) -> None:
        self._team = team
        self._delay = delay
        self._fail_with = fail_with

    @property
    def model(self) -> str:
        return SIMULATED_MODEL

    async def stream(self, brief: str) -> AsyncIterator[ProviderEvent]:
        thoughts, code, _ = plan(brief, self._team)
        for text in thoughts:
            await asyncio.sleep(self._delay)
            yield Thought(text)
        await asyncio.sleep(self._delay)
        if self._fail_with is not None:
            raise ProviderError(self._fail_with)
        yield AnswerStarted()
        await asyncio.sleep(self._delay)
        # Roughly four characters a token, like the real tokenizers.
        yield CodeResult(code=code, language="tsx", token_count=max(1, len(code) // 4))
