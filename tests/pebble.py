"""A tiny renderer for the Pebble the flows use, so tests can run a flow's task commands for real.

It knows only what the flows need: `{{ expr }}` with dotted paths (inputs, vars, trigger, execution, envs),
`a ?? b`, parentheses, string and number literals, `secret('X')`, `kv('X')`, `render(x)`, and the filters
`dateAdd(n, 'MONTHS')` and `date('yyyy-MM' | 'yyyy' | 'MM')`. Anything else raises, so a flow that starts
using more Pebble than this must extend (and test) it first. Precedence follows Pebble's: `|` binds
tighter than `??`.
"""

from __future__ import annotations

import re
from datetime import datetime

TOKEN = re.compile(r"\s*(\?\?|\(|\)|\||,|'[^']*'|-?\d+|[A-Za-z_][\w.]*)")


class PebbleError(Exception):
    pass


def render(template: str, context: dict) -> str:
    """Render every {{ ... }} of `template`."""
    if "{%" in template:
        raise PebbleError(f"tags are not supported: {template!r}")

    def one(match: re.Match) -> str:
        value = _Parser(match.group(1), context).parse()
        if value is None:
            raise PebbleError(f"{match.group(1)!r} is undefined")
        return str(value)

    return re.sub(r"\{\{(.*?)\}\}", one, template, flags=re.S)


class _Parser:
    def __init__(self, text: str, context: dict):
        self.tokens = [t for t in TOKEN.findall(text) if t]
        if "".join(self.tokens).replace(" ", "") != re.sub(r"\s", "", text):
            raise PebbleError(f"cannot parse {text!r}")
        self.pos, self.context = 0, context

    def parse(self):
        value = self.coalesce()
        if self.pos != len(self.tokens):
            raise PebbleError(f"unexpected {self.tokens[self.pos]!r}")
        return value

    def peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected and token != expected):
            raise PebbleError(f"expected {expected!r}, got {token!r}")
        self.pos += 1
        return token

    def coalesce(self):
        value = self.filtered()
        while self.peek() == "??":
            self.take()
            other = self.filtered()
            value = other if value is None else value
        return value

    def filtered(self):
        value = self.atom()
        while self.peek() == "|":
            self.take()
            name = self.take()
            args = self.arguments()
            value = self.apply(name, value, args)
        return value

    def arguments(self) -> list:
        args = []
        if self.peek() == "(":
            self.take("(")
            while self.peek() != ")":
                args.append(self.coalesce())
                if self.peek() == ",":
                    self.take(",")
            self.take(")")
        return args

    def atom(self):
        token = self.take()
        if token == "(":
            value = self.coalesce()
            self.take(")")
            return value
        if token.startswith("'"):
            return token[1:-1]
        if re.fullmatch(r"-?\d+", token):
            return int(token)
        if token in ("secret", "kv", "render"):
            (arg,) = self.arguments()
            if token == "render":
                return render(str(arg), self.context) if arg is not None else None
            return self.context[token + "s"][arg]  # KeyError: a secret or KV key the test did not provide
        value = self.context
        for part in token.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value

    @staticmethod
    def apply(name: str, value, args: list):
        if value is None:
            return None
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        if name == "dateAdd" and args[1] == "MONTHS":
            total = when.year * 12 + when.month - 1 + args[0]
            return when.replace(year=total // 12, month=total % 12 + 1, day=min(when.day, 28)).isoformat()
        if name == "date":
            java = {"yyyy-MM": "%Y-%m", "yyyy": "%Y", "MM": "%m"}
            return when.strftime(java[args[0]])
        raise PebbleError(f"filter {name} is not supported")
