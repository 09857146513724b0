"""The built-in simulated provider: runs with no API key and no network.

It reads the brief, "thinks" a handful of thoughts about it, then writes a
component that fits it (a login form for a login-form brief), a few lines at a
time, pausing ``delay`` seconds between steps so the stream is visible. The
two teams solve the brief in two different, correct ways, so there is
something to compare: the Anthropic team keeps each value in its own
``useState``, the Google team keeps the component's state in one
``useReducer`` (for a search box, a ``useDeferredValue`` query; for a plain
component, a titled ``<article>``). Both are deterministic per brief. Its
model is ``"simulated"`` so nobody mistakes it for a real one. ``fail_with``
makes it fail after its thoughts, for trying out how clients show a team's error.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from chimera.defaults import DEFAULT_SIM_DELAY
from chimera.errors import ProviderError
from chimera.providers.base import AnswerStarted, CodeDelta, CodeResult, ProviderEvent, Thought
from chimera.providers.prompt import SYSTEM_PROMPT, user_message

SIMULATED_MODEL = "simulated"
# The code is written a few lines per step (one step per ``delay``, like a thought).
LINES_PER_PIECE = 6

_STOPWORDS = frozenset(
    ["a", "an", "the", "with", "and", "or", "for", "to", "of", "in", "on", "that", "this", "build", "create", "make", "me", "please", "add", "simple", "basic", "small", "nice", "component", "page", "some", "using", "which", "has", "have"]
)


@dataclass(frozen=True, slots=True)
class _Kind:
    """A family of components the simulator knows how to write: the Anthropic
    team's plan (``plan``) and the Google team's (``reducer_plan``)."""

    name: str
    keywords: tuple[str, ...]
    plan: tuple[str, ...]
    reducer_plan: tuple[str, ...]


_KINDS: tuple[_Kind, ...] = (
    _Kind(
        "LoginForm",
        ("login", "log in", "sign in", "signin"),
        (
            "The form needs {fields} fields and a submit button.",
            "Email gets a format check; the password must not be empty.",
            "Errors show next to each field, and the button is disabled while submitting.",
        ),
        (
            "One reducer owns the values, the errors and the submitting flag: {fields}.",
            "Validation is a pure function of the values, so it can be tested on its own.",
            "Typing in a field clears that field's error; submitting dispatches start and done.",
        ),
    ),
    _Kind(
        "SignupForm",
        ("signup", "sign up", "register", "registration"),
        (
            "A registration form: {fields} plus a password confirmation.",
            "Both passwords must match before the form can be sent.",
        ),
        (
            "A reducer holds every field of the registration: {fields}.",
            "Each change is one action, so the form's history is easy to follow.",
        ),
    ),
    _Kind(
        "TodoList",
        ("todo", "to-do", "task list", "checklist"),
        (
            "State is a list of items, each with an id, a title and a done flag.",
            "Adding trims the input and ignores empty titles; items can be toggled and removed.",
        ),
        (
            "The list changes through three actions (add, toggle, remove) in one reducer.",
            "Ids come from a counter in the state, so they never collide.",
        ),
    ),
    _Kind(
        "Counter",
        ("counter", "increment", "clicker"),
        ("One number in state, with buttons to increment, decrement and reset.",),
        ("A reducer with increment, decrement and reset actions; the step is a prop.",),
    ),
    _Kind(
        "SearchBar",
        ("search", "filter", "autocomplete"),
        (
            "A controlled input that filters a list as the user types.",
            "Matching is case-insensitive; an empty query shows everything.",
        ),
        (
            "The input stays responsive: the list filters on a deferred copy of the query.",
            "The query is trimmed and lower-cased once, not once per item.",
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
        f"        <input type=\"{_input_type(f)}\""
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


def _input_type(field: str) -> str:
    return "password" if field == "password" else "email" if field == "email" else "text"


def _login_form_reducer(fields: tuple[str, ...]) -> str:
    """The Google team's login form: one ``useReducer`` for values, errors and submitting."""
    union = " | ".join(repr(f) for f in fields)
    empty = ", ".join(f"{f}: ''" for f in fields)
    checks = []
    if "email" in fields:
        checks.append(
            "  if (!/^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$/.test(values.email)) "
            "errors.email = 'Enter a valid email';"
        )
    if "password" in fields:
        checks.append("  if (!values.password) errors.password = 'Enter your password';")
    check_lines = "\n".join(checks)
    inputs = "\n".join(
        f"      <label>\n        {f.title()}\n"
        f"        <input type=\"{_input_type(f)}\" value={{state.values.{f}}}"
        f" onChange={{(e) => dispatch({{ type: 'change', field: '{f}', value: e.target.value }})}} />\n"
        f"        {{state.errors.{f} && <span role=\"alert\">{{state.errors.{f}}}</span>}}\n"
        "      </label>"
        for f in fields
    )
    return f"""import {{ FormEvent, useReducer }} from 'react';

type Field = {union};
type Values = Record<Field, string>;
type Errors = Partial<Record<Field, string>>;
type State = {{ values: Values; errors: Errors; submitting: boolean }};
type Action =
  | {{ type: 'change'; field: Field; value: string }}
  | {{ type: 'invalid'; errors: Errors }}
  | {{ type: 'start' }}
  | {{ type: 'done' }};

const initial: State = {{ values: {{ {empty} }}, errors: {{}}, submitting: false }};

function reducer(state: State, action: Action): State {{
  switch (action.type) {{
    case 'change':
      return {{
        ...state,
        values: {{ ...state.values, [action.field]: action.value }},
        errors: {{ ...state.errors, [action.field]: undefined }},
      }};
    case 'invalid':
      return {{ ...state, errors: action.errors }};
    case 'start':
      return {{ ...state, errors: {{}}, submitting: true }};
    case 'done':
      return {{ ...state, submitting: false }};
  }}
}}

function validate(values: Values): Errors {{
  const errors: Errors = {{}};
{check_lines}
  return errors;
}}

export function LoginForm({{ onSubmit }}: {{ onSubmit: (values: Values) => Promise<void> }}) {{
  const [state, dispatch] = useReducer(reducer, initial);

  async function handleSubmit(event: FormEvent) {{
    event.preventDefault();
    const errors = validate(state.values);
    if (Object.keys(errors).length > 0) {{
      dispatch({{ type: 'invalid', errors }});
      return;
    }}
    dispatch({{ type: 'start' }});
    try {{
      await onSubmit(state.values);
    }} finally {{
      dispatch({{ type: 'done' }});
    }}
  }}

  return (
    <form onSubmit={{handleSubmit}} noValidate>
{inputs}
      <button type="submit" disabled={{state.submitting}}>
        {{state.submitting ? 'Signing in…' : 'Sign in'}}
      </button>
    </form>
  );
}}
"""


def _generic_reducer(name: str, brief: str, kind: _Kind | None) -> str:
    """The Google team's take on the components :func:`_generic` writes."""
    if kind is not None and kind.name == "TodoList":
        return """import { useReducer, useState } from 'react';

type Item = { id: number; title: string; done: boolean };
type State = { items: Item[]; nextId: number };
type Action =
  | { type: 'add'; title: string }
  | { type: 'toggle'; id: number }
  | { type: 'remove'; id: number };

function reducer(state: State, action: Action): State {
  switch (action.type) {
    case 'add':
      return {
        items: [...state.items, { id: state.nextId, title: action.title, done: false }],
        nextId: state.nextId + 1,
      };
    case 'toggle':
      return {
        ...state,
        items: state.items.map((i) => (i.id === action.id ? { ...i, done: !i.done } : i)),
      };
    case 'remove':
      return { ...state, items: state.items.filter((i) => i.id !== action.id) };
  }
}

export function TodoList() {
  const [state, dispatch] = useReducer(reducer, { items: [], nextId: 1 });
  const [title, setTitle] = useState('');

  function add() {
    const trimmed = title.trim();
    if (!trimmed) return;
    dispatch({ type: 'add', title: trimmed });
    setTitle('');
  }

  return (
    <section>
      <input value={title} onChange={(e) => setTitle(e.target.value)} placeholder="New task" />
      <button onClick={add}>Add</button>
      <ul>
        {state.items.map((item) => (
          <li key={item.id}>
            <input
              type="checkbox"
              checked={item.done}
              onChange={() => dispatch({ type: 'toggle', id: item.id })}
            />
            {item.title}
            <button onClick={() => dispatch({ type: 'remove', id: item.id })}>×</button>
          </li>
        ))}
      </ul>
    </section>
  );
}
"""
    if kind is not None and kind.name == "Counter":
        return """import { useReducer } from 'react';

type Action = { type: 'increment' } | { type: 'decrement' } | { type: 'reset' };

export function Counter({ initial = 0, step = 1 }: { initial?: number; step?: number }) {
  const [count, dispatch] = useReducer((count: number, action: Action) => {
    switch (action.type) {
      case 'increment':
        return count + step;
      case 'decrement':
        return count - step;
      case 'reset':
        return initial;
    }
  }, initial);
  return (
    <div>
      <output aria-live="polite">{count}</output>
      <button onClick={() => dispatch({ type: 'decrement' })}>−</button>
      <button onClick={() => dispatch({ type: 'increment' })}>+</button>
      <button onClick={() => dispatch({ type: 'reset' })}>Reset</button>
    </div>
  );
}
"""
    if kind is not None and kind.name == "SearchBar":
        return """import { useDeferredValue, useState } from 'react';

export function SearchBar({ items }: { items: string[] }) {
  const [query, setQuery] = useState('');
  const deferred = useDeferredValue(query);
  const needle = deferred.trim().toLowerCase();
  const shown = needle ? items.filter((item) => item.toLowerCase().includes(needle)) : items;
  return (
    <div role="search">
      <input type="search" value={query} onChange={(e) => setQuery(e.target.value)} />
      <ul>{shown.map((item) => <li key={item}>{item}</li>)}</ul>
    </div>
  );
}
"""
    summary = brief.strip().replace("*/", "* /")[:200]
    slug = name[:1].lower() + name[1:]
    return f"""import {{ ReactNode }} from 'react';

/** {summary} */
export function {name}({{ title = '{name}', children }}: {{ title?: string; children?: ReactNode }}) {{
  return (
    <article className="{slug}" aria-labelledby="{slug}-title">
      <header>
        <h2 id="{slug}-title">{{title}}</h2>
      </header>
      {{children}}
    </article>
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
    """The thoughts and code the simulator produces for ``brief``: ``(thoughts, code, name)``.

    The ``"google"`` team writes the reducer version (see the module docstring);
    any other team the ``useState`` one."""
    kind = _pick_kind(brief)
    reducer = team == "google"
    if kind is not None and kind.name in ("LoginForm", "SignupForm"):
        default = ("email", "password")
        fields = _fields(brief, default)
        if kind.name == "SignupForm":
            fields = tuple(dict.fromkeys((*fields, "name")))
        name = kind.name
        write_form = _login_form_reducer if reducer else _login_form
        code = write_form(fields).replace("LoginForm", name)
    else:
        fields = ()
        name = kind.name if kind else _component_name(brief)
        code = (_generic_reducer if reducer else _generic)(name, brief, kind)
    short = brief.strip().splitlines()[0][:80] if brief.strip() else "the brief"
    opener = {
        "anthropic": f"Reading the brief: “{short}”. This calls for a {name} component.",
        "google": f"The request is “{short}”; I will build it as one {name} component.",
    }.get(team, f"Working on “{short}” as a {name} component.")
    chosen = (kind.reducer_plan if reducer else kind.plan) if kind else ()
    steps = [s.format(fields=" and ".join(fields) or "the") for s in chosen]
    if not steps:
        steps = [
            f"An article with a header: the title is a prop, {name} unless given."
            if reducer else
            f"The component takes its content as children and renders a titled {name}."
        ]
    closer = (
        "TypeScript and React hooks only; the state changes in one place, the reducer."
        if reducer else
        "React with TypeScript, function components and hooks; no outside libraries."
    )
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
        offset = 0
        for piece in _pieces(code):
            await asyncio.sleep(self._delay)
            yield CodeDelta(offset, piece)
            offset += len(piece)
        # Roughly four characters a token, like the real tokenizers; the request is the
        # one the real providers send.
        request = len(SYSTEM_PROMPT) + len(user_message(brief))
        yield CodeResult(
            code=code, language="tsx", token_count=max(1, len(code) // 4),
            input_tokens=max(1, request // 4),
        )


def _pieces(code: str) -> list[str]:
    """``code`` in the pieces the simulator writes it in: :data:`LINES_PER_PIECE` lines each."""
    lines = code.splitlines(keepends=True)
    return [
        "".join(lines[i : i + LINES_PER_PIECE]) for i in range(0, len(lines), LINES_PER_PIECE)
    ] or [code]
