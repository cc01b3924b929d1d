"""A JSON value valid against a JSON Schema, made deterministically from a message.

What `local` puts in tool call arguments and structured answers. Objects get their required
properties (and, near the top, optional ones with simple values); strings prefer a word of the
message next to where it mentions the property, and honour `enum`, `const`, lengths and the
common formats; numbers stay within their bounds and `multipleOf`; arrays within their item
counts; `anyOf`/`oneOf` take the first branch whose value is valid; `$ref` (to `$defs`,
`definitions` or the root) and `allOf` are resolved first. Keywords it does not aim at
(`pattern`, `not`, `if`) are left to the final check: each value is validated with
`jsonschema`, and a few variants are tried before giving up.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping
from typing import Any

from gaia_app.providers.json_scalars import Bounds, formatted
from gaia_app.providers.local_words import FALLBACK_WORDS, Vocabulary, name_words

# Below this depth optional members and array items are left out, and `null` preferred, so
# recursive schemas end.
SHALLOW_DEPTH = 3
MAX_DEPTH = 32
ATTEMPTS = 4
MAX_BRANCHES = 64
# Work allowed for one value (values made, strings counted by 64 characters), and the largest
# count of characters, items or properties a schema may demand: a schema can ask for more
# than any answer should hold.
BUDGET = 20_000
MAX_COUNT = 4096
_TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")
# An untyped schema (`{}`) gets a string: a word reads best.
_ANY = ("string", "integer", "number", "boolean", "object", "array", "null")
_LOWER = ("minimum", "minLength", "minItems", "minProperties", "exclusiveMinimum")
_UPPER = ("maximum", "maxLength", "maxItems", "maxProperties", "exclusiveMaximum")


class Unsatisfiable(Exception):
    """The schema admits no value this generator can make."""


def schema_problem(schema: Any) -> str | None:
    """Why `schema` is not a valid JSON Schema (its metaschema's words), or None. Checked with
    the draft its `$schema` names, else 2020-12, formats included (a `pattern` must be a
    regular expression)."""
    from jsonschema import exceptions, validators

    try:
        validators.validator_for(schema, default=validators.Draft202012Validator).check_schema(schema)
    except exceptions.SchemaError as error:
        return error.message
    return None


def value_for(schema: Any, vocabulary: Vocabulary, rng: random.Random) -> tuple[Any, bool]:
    """A value for `schema`, and whether it is valid (checked with `jsonschema`)."""
    from jsonschema import FormatChecker, validators
    from referencing import Registry

    cls = validators.validator_for(schema, default=validators.Draft202012Validator)
    # An empty registry: a reference to anywhere but the schema itself is never fetched.
    validator = cls(schema, format_checker=FormatChecker(), registry=Registry())
    value: Any = None
    budget = [BUDGET]
    for attempt in range(ATTEMPTS):
        maker = _Maker(schema, vocabulary, random.Random(rng.random()), validator, optional=attempt < 2)
        maker.budget = budget
        try:
            value = maker.value(schema, (), 0)
        except (Unsatisfiable, RecursionError):
            continue
        if is_valid(validator, value):
            return value, True
    return value, False


def is_valid(validator, value: Any) -> bool:
    """`validator.is_valid`, where a reference that cannot be resolved means invalid."""
    from referencing.exceptions import Unresolvable

    try:
        return validator.is_valid(value)
    except Unresolvable:
        return False


def _pointer(root: Any, ref: str) -> Any:
    if ref in ("#", ""):
        return root
    if not ref.startswith("#/"):
        return {}  # a remote reference: anything
    target = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(target, list) and part.isdigit() and int(part) < len(target):
            target = target[int(part)]
        elif isinstance(target, Mapping) and part in target:
            target = target[part]
        else:
            return {}
    return target


def _types(schema: Mapping) -> list[str]:
    declared = schema.get("type")
    if declared is not None:
        return [declared] if isinstance(declared, str) else list(declared)
    for keys, kind in ((("properties", "required", "additionalProperties", "minProperties"), "object"),
                       (("items", "prefixItems", "minItems", "maxItems", "contains"), "array"),
                       (("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"), "number"),
                       (("minLength", "maxLength", "pattern", "format"), "string")):
        if any(key in schema for key in keys):
            return [kind]
    return list(_ANY)


def _merge_types(a: Any, b: Any) -> list[str]:
    a_types = [a] if isinstance(a, str) else list(a)
    b_types = [b] if isinstance(b, str) else list(b)
    both = [t for t in a_types if t in b_types or (t == "integer" and "number" in b_types)]
    both += [t for t in b_types if t == "integer" and "number" in a_types and t not in both]
    if not both:
        raise Unsatisfiable("types that do not meet")
    return both


def merge(a: Mapping, b: Mapping) -> dict:
    """Two schemas a value must satisfy at once, as one (close enough for making values)."""
    merged = dict(a)
    for key, value in b.items():
        if key not in merged:
            merged[key] = value
        elif key == "properties":
            merged[key] = {**merged[key], **{name: ({"allOf": [merged[key][name], sub]} if name in merged[key] else sub)
                                             for name, sub in value.items()}}
        elif key == "required":
            merged[key] = list(dict.fromkeys([*merged[key], *value]))
        elif key == "type":
            merged[key] = _merge_types(merged[key], value)
        elif key == "allOf":
            merged[key] = [*merged[key], *value]
        elif key in ("anyOf", "oneOf"):
            # Both choose among branches: a value takes one of each.
            merged[key] = [{"allOf": [x, y]} for x in merged[key] for y in value][:MAX_BRANCHES]
        elif key in _LOWER and not isinstance(value, bool):
            merged[key] = max(merged[key], value)
        elif key in _UPPER and not isinstance(value, bool):
            merged[key] = min(merged[key], value)
        elif key == "enum":
            merged[key] = [option for option in merged[key] if option in value]
    return merged


class _Maker:
    """Makes one value; `rng` decides whatever the message does not."""

    def __init__(self, root: Any, vocabulary: Vocabulary, rng: random.Random, validator, optional: bool) -> None:
        self.root = root
        self.words = vocabulary
        self.rng = rng
        self.validator = validator
        self.optional = optional
        self.budget = [BUDGET]  # shared by every maker of one value

    def spend(self, amount: int = 1) -> None:
        self.budget[0] -= amount
        if self.budget[0] < 0:
            raise Unsatisfiable("more work than one answer is worth")

    def sibling(self, vocabulary: Vocabulary) -> _Maker:
        """A maker on the same budget and schema, with other words."""
        maker = _Maker(self.root, vocabulary, self.rng, self.validator, self.optional)
        maker.budget = self.budget
        return maker

    def flat(self, schema: Any, nesting: int = 0) -> Mapping:
        """`schema` with its `$ref` and `allOf` resolved into one mapping."""
        if nesting > MAX_DEPTH:
            raise Unsatisfiable("references that never end")
        for _ in range(MAX_DEPTH):
            if schema is False:
                raise Unsatisfiable("false schema")
            if not isinstance(schema, Mapping):
                return {}  # true, or a reference to something that is not a schema
            if "$ref" in schema:
                rest = {k: v for k, v in schema.items() if k != "$ref"}
                schema = merge(rest, self.flat(_pointer(self.root, schema["$ref"]), nesting + 1))
            elif "allOf" in schema:
                rest = {k: v for k, v in schema.items() if k != "allOf"}
                for part in schema["allOf"]:
                    rest = merge(rest, self.flat(part, nesting + 1))
                schema = rest
            else:
                return schema
        raise Unsatisfiable("references that never end")

    def value(self, schema: Any, keys: tuple[str, ...], depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise Unsatisfiable("a value that never ends")
        self.spend()
        flat = self.flat(schema)
        keys = keys + tuple(name_words(flat.get("title", ""))) if isinstance(flat.get("title"), str) else keys
        if "const" in flat:
            return flat["const"]
        if "enum" in flat:
            if not flat["enum"]:
                raise Unsatisfiable("an empty enum")
            mentioned = self.words.mentioned(flat["enum"])
            return mentioned if mentioned is not None else self.rng.choice(flat["enum"])
        branches = flat.get("anyOf") or flat.get("oneOf")
        if branches:
            return self._branch(schema, flat, branches, keys, depth)
        return self._typed(flat, keys, depth)

    def _branch(self, schema: Any, flat: Mapping, branches: list, keys: tuple[str, ...], depth: int) -> Any:
        """The first branch whose value is valid for the whole schema (null first when deep)."""
        rest = {k: v for k, v in flat.items() if k not in ("anyOf", "oneOf")}
        order = list(branches)
        if depth >= SHALLOW_DEPTH:
            order.sort(key=lambda branch: 0 if isinstance(branch, Mapping) and branch.get("type") == "null" else 1)
        check = self.validator.evolve(schema=schema)
        first: Any = None
        found = False
        plain = self.sibling(Vocabulary(""))
        for branch in order:
            # As the message suggests; else a value the message does not shape.
            for maker in (self, plain):
                try:
                    candidate = maker.value(merge(rest, maker.flat(branch)), keys, depth)
                except Unsatisfiable:
                    continue
                if is_valid(check, candidate):
                    return candidate
                if not found:
                    first, found = candidate, True
        if not found:
            raise Unsatisfiable("no branch")
        return first

    def _typed(self, flat: Mapping, keys: tuple[str, ...], depth: int) -> Any:
        types = [t for t in _types(flat) if t in _TYPES]
        if not types:
            raise Unsatisfiable("no known type")
        if len(types) > 1 and "null" in types:
            types.remove("null")
            types.insert(len(types) if depth < SHALLOW_DEPTH else 0, "null")
        kind = types[0]
        if kind == "object":
            return self._object(flat, keys, depth)
        if kind == "array":
            return self._array(flat, keys, depth)
        if kind in ("integer", "number"):
            return self._number(flat, keys, kind == "integer")
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        return self._string(flat, keys)

    def _object(self, flat: Mapping, keys: tuple[str, ...], depth: int) -> dict:
        properties = flat.get("properties") or {}
        extra = flat.get("additionalProperties", True)
        names = list(dict.fromkeys(name for name in flat.get("required", []) if isinstance(name, str)))
        fewest, most = _count(flat, "minProperties", 0), flat.get("maxProperties", len(properties) + len(names))
        optional = [name for name in properties if name not in names]
        if self.optional and depth < SHALLOW_DEPTH - 1:
            names += [name for name in optional if self._cheap(properties[name])][: max(0, int(most) - len(names))]
        names += [name for name in optional if name not in names][: max(0, int(fewest) - len(names))]
        extras = 0
        while len(names) < fewest and extra is not False:
            extras += 1
            names.append(f"extra_{extras}")
        order = list(properties)
        result = {}
        patterns = flat.get("patternProperties") or {}
        for name in sorted(names, key=lambda n: order.index(n) if n in properties else len(order)):
            matching = [sub for pattern, sub in patterns.items() if _matches(pattern, name)]
            sub = properties.get(name, matching[0] if matching else extra if isinstance(extra, Mapping) else {})
            result[name] = self.value(sub, tuple(name_words(name)) + _described(sub), depth + 1)
        return result

    def _cheap(self, schema: Any) -> bool:
        """Cheap to include when optional: a scalar, not a nested structure or a choice."""
        try:
            flat = self.flat(schema)
        except Unsatisfiable:
            return False
        if "enum" in flat or "const" in flat:
            return True
        return not any(key in flat for key in ("properties", "items", "prefixItems", "anyOf", "oneOf", "not")) \
            and _types(flat)[0] not in ("object", "array")

    def _array(self, flat: Mapping, keys: tuple[str, ...], depth: int) -> list:
        items = flat.get("items", {})
        prefix = flat.get("prefixItems") or (items if isinstance(items, list) else [])
        rest = flat.get("additionalItems", {}) if isinstance(items, list) else items
        low, high = _count(flat, "minItems", 0), flat.get("maxItems", math.inf)
        wanted = max(1, len(prefix)) if depth < SHALLOW_DEPTH and self.optional else 0
        if rest is False:
            high = min(high, len(prefix))
        count = int(min(max(low, wanted), high))
        values: list = []
        for index in range(count):
            sub = prefix[index] if index < len(prefix) else rest
            if index == 0 and "contains" in flat:
                sub = merge(self.flat(sub), self.flat(flat["contains"]))
            values.append(self._item(sub, keys, depth, values if flat.get("uniqueItems") else None))
        return values

    def _item(self, sub: Any, keys: tuple[str, ...], depth: int, distinct_from: list | None) -> Any:
        item = self.value(sub, keys, depth + 1)
        for _ in range(8):
            if distinct_from is None or item not in distinct_from:
                break
            # Another draw, with the message's own words set aside.
            item = self.sibling(Vocabulary("")).value(sub, (), depth + 1)
        return item

    def _number(self, flat: Mapping, keys: tuple[str, ...], integer: bool) -> int | float:
        bounds = Bounds(flat, integer)
        for number in self.words.numbers_for(keys):
            if bounds.admits(number):
                return int(number) if integer or number.is_integer() else number
        made = bounds.pick(self.rng) if integer else bounds.pick_number(self.rng)
        if made is None:
            raise Unsatisfiable("no number in range")
        return made

    def _string(self, flat: Mapping, keys: tuple[str, ...]) -> str:
        word = self.words.word_for(keys, self.rng)
        made = formatted(flat.get("format"), word, self.rng)
        text = made if made is not None else word
        low, high = _count(flat, "minLength", 0), flat.get("maxLength", math.inf)
        while len(text) < low:
            text += " " + self.words.word_for((), self.rng)
        self.spend(len(text) // 64)
        text = text[: high] if high < len(text) else text
        pattern = flat.get("pattern")
        if isinstance(pattern, str) and not _matches(pattern, text):
            candidates = [word, word.lower(), *(t for t in self.words.tokens if len(t) <= 64), *FALLBACK_WORDS,
                          "0", "1", "a", "A", ""]
            text = next((c for c in candidates if low <= len(c) <= high and _matches(pattern, c)), text)
        return text


def _count(flat: Mapping, key: str, default: int) -> int:
    """A demanded count (`minItems`, ...), refused beyond what an answer should hold."""
    value = flat.get(key, default)
    if not isinstance(value, (int, float)) or value > MAX_COUNT:
        raise Unsatisfiable(f"{key} beyond {MAX_COUNT}")
    return int(value)


def _matches(pattern: str, text: str) -> bool:
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return False


def _described(schema: Any) -> tuple[str, ...]:
    if isinstance(schema, Mapping) and isinstance(schema.get("description"), str):
        return tuple(name_words(schema["description"]))
    return ()
