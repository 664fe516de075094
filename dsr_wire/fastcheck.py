"""The schemas of dsr_wire/schema.py compiled into plain predicates.

jsonschema stays the one definition of the contract and the only source of
error messages; it costs about 50 us an object here, 88 of the 144 s a
10,000-listener snapshot took from scratch.  compile_schema() turns a
schema into a function that answers only "valid or not" in a few us, so
schema.py runs jsonschema just for the objects this says are invalid (to
name the field).  It understands the keywords schema.py uses, with
jsonschema's meaning, and refuses any other, so a schema cannot grow a rule
this would ignore; tests/unit/dsr_wire/test_fastcheck.py holds the two to
the same answer over generated instances.
"""

import re

# Keywords with no effect on validity.
_ANNOTATIONS = frozenset(('description', 'title'))

_TYPES = {
    'string': lambda v: isinstance(v, str),
    # The strict integer of schema._strict_integer: no bool, no 1.0.
    'integer': lambda v: isinstance(v, int) and not isinstance(v, bool),
    'number': lambda v: isinstance(v, (int, float))
    and not isinstance(v, bool),
    'boolean': lambda v: isinstance(v, bool),
    'null': lambda v: v is None,
    'object': lambda v: isinstance(v, dict),
    'array': lambda v: isinstance(v, list),
}


class Unsupported(ValueError):
    """The schema uses a keyword (or form of one) this cannot compile."""


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _equal(a, b):
    # jsonschema's equality for scalars: True is not 1, 1 is 1.0.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    if _is_number(a) and _is_number(b):
        return a == b
    return a is None and b is None


def _scalar(value, keyword):
    if value is not None and not isinstance(value, (str, int, float)):
        raise Unsupported(f'{keyword} with a non-scalar value {value!r}')
    return value


def _type(names):
    names = [names] if isinstance(names, str) else list(names)
    try:
        checks = tuple(_TYPES[n] for n in names)
    except KeyError as exc:
        raise Unsupported(f'type {exc.args[0]!r}') from None
    if len(checks) == 1:
        return checks[0]
    return lambda v: any(c(v) for c in checks)


def _enum(values):
    values = tuple(_scalar(v, 'enum') for v in values)
    return lambda v: any(_equal(v, e) for e in values)


def _const(value):
    value = _scalar(value, 'const')
    return lambda v: _equal(v, value)


# The comparisons are jsonschema's own (instance < minimum fails, ...), so
# NaN and mixed int/float behave alike.
def _minimum(low):
    return lambda v: not _is_number(v) or not v < low


def _maximum(high):
    return lambda v: not _is_number(v) or not v > high


def _exclusive_minimum(low):
    return lambda v: not _is_number(v) or not v <= low


def _min_length(low):
    return lambda v: not isinstance(v, str) or not len(v) < low


def _max_length(high):
    return lambda v: not isinstance(v, str) or not len(v) > high


def _pattern(text):
    search = re.compile(text).search
    return lambda v: not isinstance(v, str) or search(v) is not None


def _min_items(low):
    return lambda v: not isinstance(v, list) or not len(v) < low


def _items(schema):
    item = compile_schema(schema)
    return lambda v: not isinstance(v, list) or all(map(item, v))


def _required(names):
    names = frozenset(names)
    return lambda v: not isinstance(v, dict) or names <= v.keys()


_KEYWORDS = {
    'type': _type, 'enum': _enum, 'const': _const, 'minimum': _minimum,
    'maximum': _maximum, 'exclusiveMinimum': _exclusive_minimum,
    'minLength': _min_length, 'maxLength': _max_length,
    'pattern': _pattern, 'minItems': _min_items, 'items': _items,
    'required': _required,
}


def _object(properties, additional):
    """properties and additionalProperties as one check."""
    if additional not in (True, False):
        raise Unsupported('additionalProperties other than true or false')
    checks = {name: compile_schema(sub) for name, sub in properties.items()}
    known = checks.keys()

    def check(v):
        if not isinstance(v, dict):
            return True
        if not additional and not v.keys() <= known:
            return False
        for name, value in v.items():
            sub = checks.get(name)
            if sub is not None and not sub(value):
                return False
        return True
    return check


def compile_schema(schema):
    """A predicate instance -> bool with jsonschema's answer for schema
    (Draft 2020-12, the strict integer type); Unsupported for a keyword
    it does not know."""
    if schema is True or schema == {}:
        return lambda v: True
    if not isinstance(schema, dict):
        raise Unsupported(f'schema {schema!r}')
    checks = []
    for keyword, value in schema.items():
        if keyword in _ANNOTATIONS or keyword in (
                'properties', 'additionalProperties'):
            continue
        if keyword not in _KEYWORDS:
            raise Unsupported(f'keyword {keyword!r}')
        # The type first: the cheapest check and the usual failure.
        checks.insert(0 if keyword == 'type' else len(checks),
                      _KEYWORDS[keyword](value))
    if 'properties' in schema or 'additionalProperties' in schema:
        checks.append(_object(schema.get('properties', {}),
                              schema.get('additionalProperties', True)))
    checks = tuple(checks)
    if len(checks) == 1:
        return checks[0]

    def check(v):
        for c in checks:
            if not c(v):
                return False
        return True
    return check
