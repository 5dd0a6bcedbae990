"""The code verifier's function tests inside the sandbox: the candidate's server, the tests'
runner, and the plain-data wire format between them. Stdlib only.

The verifier (:mod:`train.rewards.code`) writes this file into each of two linked sandbox
processes as ``main.py`` with one call appended, ``main("solution")`` or ``main("tests")`` (so no
``__future__`` import here: the sandbox may put a line before it). In the trainer it is only
imported, for its doctests. (Stdin/stdout programs boot with :mod:`train.rewards.code_stdio`.)
Roles:

- ``solution`` (the callee of :func:`train.rewards.sandbox.run_linked`): executes ``solution.py``
  (the program, after LiveCodeBench's prelude when given) as module ``__solution__``, sends its
  top-level names on the link, then serves the tests' requests (call an object, fetch a plain
  attribute) until the link closes. It holds nothing secret: no tests, no expected values.
- ``tests`` (the caller, another sandbox process with another uid): reads ``spec.json`` (setup,
  tests, entry point), runs the setup, puts the program's names in the tests' namespace, runs the
  tests and, only when every one ran without raising, writes ``passed <n>`` on the control
  channel, which only this process holds.

Wire format (one JSON object per line, each way). ``None``, ``bool``, ``int`` below 2**63 in size,
``float`` (NaN and infinities as JSON's extended tokens) and ``str`` are JSON values; every other
value is a one-key object naming its type: ``{"list": [...]}``, ``tuple``, ``set``, ``frozenset``,
``deque``, ``iter`` (an iterator, drawn out in full), ``{"dict": [[key, value], ...]}``,
``Counter``, ``OrderedDict``, ``{"int": "-0x1f"}`` (big ints, in hex: linear to parse), ``bytes``
and ``bytearray`` (as latin-1 text), ``complex``, ``range``, ``Fraction``, ``Decimal``,
``ndarray`` (numeric numpy arrays: dtype, shape, data), and ``{"handle": [ref, type name]}``: an
object the other side keeps. Instances of subclasses cross as their base type (a namedtuple as a
tuple, a bool-valued ``numpy.bool_`` as ``bool``). :func:`decode` builds values of exactly these
types, so the tests hold no object of the program's making except :class:`Remote` handles, whose
class is the tests'. Messages: the solution first sends ``{"names": [[name, value], ...]}`` (a
module as ``{"module": name}``); a request is ``{"id", "op": "call", "ref", "args", "kwargs"}`` or
``{"id", "op": "getattr", "ref", "name"}``; its reply ``{"id", "value"}`` or ``{"id", "error":
[builtin class names of the exception's MRO], "args"}``.

What the tests' process defends (:mod:`train.rewards.code` states the whole threat model): a
message that breaks the format (not JSON, an unknown tag, a wrong reply id, a line over
:data:`MAX_MESSAGE_BYTES`, nesting over :data:`MAX_DEPTH`, a big int in decimal) ends the tests'
process with status 1 at once, so no test's ``except`` can swallow it; so does the program's end
mid-call. An exception of the program's re-raises as the builtin exception class of that name
(:data:`RAISABLE`; never ``StopIteration``, which would end a loop of the tests' silently) or as
:class:`ProgramError`.
"""

import builtins
import collections
import importlib
import json
import os
import re
import sys
from typing import Any, Callable, NoReturn

CONTROL_FD, LINK_OUT_FD, LINK_IN_FD = 3, 5, 6  # as in train.rewards.sandbox
MAX_MESSAGE_BYTES = 1 << 25  # one line on the link; a longer one is a protocol error
MAX_DEPTH = 100  # nesting of one value
MAX_ITEMS = 1 << 20  # items drawn from an iterator the program returns
MAX_NAME_BYTES = 1 << 20  # a top-level data value of the program larger than this crosses as a handle
_SMALL_INT = 1 << 63
_HEX_INT = re.compile(r"-?0x[0-9a-f]+\Z")
_NUMERIC_DTYPE = re.compile(r"[<>|=]?[biufc][0-9]{1,2}\Z")


class WireError(Exception):
    """A message outside the wire format, or a value that cannot cross it."""


class ProgramError(Exception):
    """The program raised an exception that is not one of the builtin ones in :data:`RAISABLE`."""


# The exception classes the program's exceptions may re-raise as in the tests (by name).
RAISABLE = {
    name: cls
    for name, cls in vars(builtins).items()
    if isinstance(cls, type) and issubclass(cls, Exception) and not issubclass(cls, (StopIteration, StopAsyncIteration))
}


# ---- values ------------------------------------------------------------------------------------


def encode(value: Any, handle: Callable[[Any], int] | None = None, iterators: bool = False) -> Any:
    """The JSON-ready form of ``value``; ``handle(obj)`` names an object outside the format (without
    it such an object raises :class:`WireError`); ``iterators`` draws iterators out into ``iter``.

    >>> encode([1, (2.5, "a"), {None: b"x"}, 2**70])
    {'list': [1, {'tuple': [2.5, 'a']}, {'dict': [[None, {'bytes': 'x'}]]}, {'int': '0x400000000000000000'}]}
    >>> encode(object())
    Traceback (most recent call last):
    ...
    train.rewards.code_harness.WireError: a object cannot cross as data
    """

    encoders = _encoders()

    def nested(item: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise WireError(f"a value nested deeper than {MAX_DEPTH}")
        if item is None or item is True or item is False:
            return item
        inner = lambda value: nested(value, depth + 1)  # noqa: E731
        exact = encoders.get(type(item))
        if exact is not None:
            return exact(item, inner)
        for kind, encoder in encoders.items():  # a subclass crosses as its first base found here
            if isinstance(item, kind):
                return encoder(item, inner)
        numpy_value = _numpy_encoding(item, inner)
        if numpy_value is not None:
            return numpy_value
        if handle is None:
            raise WireError(f"a {type(item).__name__} cannot cross as data")
        if iterators and hasattr(type(item), "__next__") and hasattr(type(item), "__iter__"):
            return {"iter": _drawn(item, inner)}
        return {"handle": [handle(item), str(type(item).__name__)[:100]]}

    return nested(value, 0)


Encoder = Callable[[Any, Callable[[Any], Any]], Any]

# By type, in the order isinstance tries them for subclasses: subclasses before their bases.
_ENCODERS: dict[type, Encoder] = {
    int: lambda v, n: _int(int(v)),
    float: lambda v, n: float(v),
    str: lambda v, n: str.__str__(v),
    bytes: lambda v, n: {"bytes": bytes(v).decode("latin-1")},
    bytearray: lambda v, n: {"bytearray": bytes(v).decode("latin-1")},
    complex: lambda v, n: {"complex": [float(v.real), float(v.imag)]},
    collections.Counter: lambda v, n: {"Counter": [[n(k), n(x)] for k, x in dict.items(v)]},
    collections.OrderedDict: lambda v, n: {"OrderedDict": [[n(k), n(x)] for k, x in dict.items(v)]},
    dict: lambda v, n: {"dict": [[n(k), n(x)] for k, x in dict.items(v)]},
    list: lambda v, n: {"list": [n(x) for x in list.__iter__(v)]},
    tuple: lambda v, n: {"tuple": [n(x) for x in tuple.__iter__(v)]},
    set: lambda v, n: {"set": [n(x) for x in set.__iter__(v)]},
    frozenset: lambda v, n: {"frozenset": [n(x) for x in frozenset.__iter__(v)]},
    collections.deque: lambda v, n: {"deque": [n(x) for x in collections.deque.__iter__(v)]},
    range: lambda v, n: {"range": [n(v.start), n(v.stop), n(v.step)]},
}


def _encoders() -> dict[type, Encoder]:
    """:data:`_ENCODERS`, plus Fraction and Decimal when their modules are loaded (no value of
    theirs can exist otherwise, and importing them costs every run)."""
    found = dict(_ENCODERS)
    fractions, decimal = sys.modules.get("fractions"), sys.modules.get("decimal")
    if fractions is not None:
        found[fractions.Fraction] = lambda v, n: {"Fraction": [n(v.numerator), n(v.denominator)]}
    if decimal is not None:
        found[decimal.Decimal] = lambda v, n: {"Decimal": str(v)}
    return found


def _int(value: int) -> Any:
    return value if -_SMALL_INT < value < _SMALL_INT else {"int": hex(value)}


def _numpy_encoding(value: Any, nested: Callable[[Any], Any]) -> Any:
    """numpy scalars as their Python value, numeric arrays as ``ndarray``; None for anything else."""
    numpy = sys.modules.get("numpy")
    if numpy is None:
        return None
    if isinstance(value, numpy.generic):
        return nested(value.item())
    if isinstance(value, numpy.ndarray) and value.dtype.kind in "biufc":
        return {"ndarray": [value.dtype.str, list(value.shape), nested(value.tolist())]}
    return None


def _drawn(iterator: Any, nested: Callable[[Any], Any]) -> list[Any]:
    items = []
    for item in iterator:
        if len(items) >= MAX_ITEMS:
            raise WireError(f"an iterator of more than {MAX_ITEMS} items")
        items.append(nested(item))
    return items


def decode(data: Any, resolve: Callable[[Any, Any], Any] | None = None) -> Any:
    """The value ``data`` (as ``json.loads`` gives it) encodes, of exactly the types named in the
    module docstring; ``resolve(ref, type_name)`` turns a handle into an object (without it a
    handle raises :class:`WireError`, as does anything outside the format).

    >>> decode({"list": [1, {"tuple": [2.5, "a"]}, {"dict": [[None, {"bytes": "x"}]]}, {"int": "0x10"}]})
    [1, (2.5, 'a'), {None: b'x'}, 16]
    >>> decode({"set": [{"list": []}]})
    Traceback (most recent call last):
    ...
    train.rewards.code_harness.WireError: not a value: TypeError: unhashable type: 'list'
    """
    try:
        return _decode(data, resolve, 0)
    except WireError:
        raise
    except (TypeError, ValueError, ArithmeticError, RecursionError, LookupError, ImportError) as exc:
        raise WireError(f"not a value: {type(exc).__name__}: {exc}") from None


def _decode(data: Any, resolve: Callable[[Any, Any], Any] | None, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise WireError(f"a value nested deeper than {MAX_DEPTH}")
    if data is None or type(data) in (bool, int, float, str):
        return data
    if type(data) is not dict or len(data) != 1:
        raise WireError(f"not a value: {str(data)[:100]}")
    ((tag, payload),) = data.items()
    if tag == "handle":
        if resolve is None:
            raise WireError("a handle where only data may cross")
        ref, type_name = _items(payload, 2)
        return resolve(ref, type_name)
    decoder = _DECODERS.get(tag)
    if decoder is None:
        raise WireError(f"unknown tag {str(tag)[:100]!r}")
    return decoder(payload, lambda item: _decode(item, resolve, depth + 1))


def _items(payload: Any, count: int | None = None) -> list[Any]:
    if type(payload) is not list or (count is not None and len(payload) != count):
        raise WireError(f"a malformed payload: {str(payload)[:100]}")
    return payload


def _pairs(payload: Any, nested: Callable[[Any], Any]) -> list[tuple[Any, Any]]:
    return [(nested(key), nested(value)) for key, value in (_items(pair, 2) for pair in _items(payload))]


def _text(payload: Any) -> str:
    if type(payload) is not str:
        raise WireError(f"a malformed payload: {str(payload)[:100]}")
    return payload


def _whole(payload: Any) -> int:
    if type(payload) is int:
        return payload
    if type(payload) is dict and set(payload) == {"int"}:
        return _big_int(payload["int"])
    raise WireError(f"not an int: {str(payload)[:100]}")


def _big_int(payload: Any) -> int:
    if not _HEX_INT.match(_text(payload)):
        raise WireError(f"a malformed int: {payload[:100]}")
    return int(payload, 16)


def _number(payload: Any) -> int | float:
    if type(payload) not in (int, float):
        raise WireError(f"not a number: {str(payload)[:100]}")
    return payload


def _ndarray(payload: Any, nested: Callable[[Any], Any]) -> Any:
    dtype, shape, values = _items(payload, 3)
    if not _NUMERIC_DTYPE.match(_text(dtype)):
        raise WireError(f"not a numeric dtype: {str(dtype)[:100]}")
    numpy = importlib.import_module("numpy")
    return numpy.array(nested(values), dtype=numpy.dtype(dtype)).reshape([_whole(n) for n in _items(shape)])


def _fraction(payload: Any, nested: Callable[[Any], Any]) -> Any:
    numerator, denominator = (_whole(n) for n in _items(payload, 2))
    return importlib.import_module("fractions").Fraction(numerator, denominator)


_DECODERS: dict[str, Callable[[Any, Callable[[Any], Any]], Any]] = {
    "list": lambda p, n: [n(x) for x in _items(p)],
    "tuple": lambda p, n: tuple(n(x) for x in _items(p)),
    "set": lambda p, n: {n(x) for x in _items(p)},
    "frozenset": lambda p, n: frozenset(n(x) for x in _items(p)),
    "deque": lambda p, n: collections.deque(n(x) for x in _items(p)),
    "iter": lambda p, n: iter([n(x) for x in _items(p)]),
    "dict": lambda p, n: dict(_pairs(p, n)),
    "Counter": lambda p, n: collections.Counter(dict(_pairs(p, n))),
    "OrderedDict": lambda p, n: collections.OrderedDict(_pairs(p, n)),
    "int": lambda p, n: _big_int(p),
    "bytes": lambda p, n: _text(p).encode("latin-1"),
    "bytearray": lambda p, n: bytearray(_text(p).encode("latin-1")),
    "complex": lambda p, n: complex(*(_number(x) for x in _items(p, 2))),
    "range": lambda p, n: range(*(_whole(x) for x in _items(p, 3))),
    "Fraction": _fraction,
    "Decimal": lambda p, n: importlib.import_module("decimal").Decimal(_text(p)),
    "ndarray": _ndarray,
}


# ---- the link ----------------------------------------------------------------------------------


class Link:
    """JSON lines over the link's pipes, each at most :data:`MAX_MESSAGE_BYTES`."""

    def __init__(self, read_fd: int = LINK_IN_FD, write_fd: int = LINK_OUT_FD) -> None:
        self.read_fd, self.write_fd = read_fd, write_fd
        self.buffer = bytearray()
        self.scanned = 0  # bytes of the buffer known to hold no newline

    def send(self, message: dict[str, Any]) -> None:
        data = memoryview(json.dumps(message, separators=(",", ":")).encode() + b"\n")  # ASCII: no raw newline inside
        while data:
            data = data[os.write(self.write_fd, data) :]

    def receive(self) -> Any:
        """The next message, or None when the other side closed the link between messages."""
        while (end := self.buffer.find(b"\n", self.scanned)) < 0:
            self.scanned = len(self.buffer)
            if self.scanned > MAX_MESSAGE_BYTES:
                raise WireError(f"a message longer than {MAX_MESSAGE_BYTES} bytes")
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                if self.buffer:
                    raise WireError("the link closed in the middle of a message")
                return None
            self.buffer += chunk
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 1]
        self.scanned = 0
        if end > MAX_MESSAGE_BYTES:
            raise WireError(f"a message longer than {MAX_MESSAGE_BYTES} bytes")
        try:
            return json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise WireError(f"not JSON: {type(exc).__name__}: {str(exc)[:200]}") from None


# ---- the solution's side -----------------------------------------------------------------------


class _Objects:
    """The program's objects the tests hold handles to, kept alive so that no ref is reused."""

    def __init__(self) -> None:
        self.by_ref: list[Any] = []
        self.ref_of: dict[int, int] = {}  # id(object) -> ref

    def handle(self, obj: Any) -> int:
        ref = self.ref_of.get(id(obj))
        if ref is None:
            ref = self.ref_of[id(obj)] = len(self.by_ref)
            self.by_ref.append(obj)
        return ref

    def resolve(self, ref: Any, type_name: Any = None) -> Any:
        if type(ref) is not int or not 0 <= ref < len(self.by_ref):
            raise WireError(f"no such handle: {str(ref)[:100]}")
        return self.by_ref[ref]


def serve_solution() -> None:
    """Execute the program, send its top-level names, answer requests until the link closes."""
    link, objects = Link(), _Objects()
    namespace: dict[str, Any] = {"__name__": "__solution__", "__builtins__": builtins}
    with open("solution.py", encoding="utf-8") as f:
        source = f.read()
    exec(compile(source, "solution.py", "exec", dont_inherit=True), namespace)  # raising ends this process: EOF for the tests
    names = [[name, _name_value(value, objects)] for name, value in list(namespace.items()) if not name.startswith("__")]
    link.send({"names": names})
    while (request := link.receive()) is not None:
        link.send(_answer(request, objects))


def _name_value(value: Any, objects: _Objects) -> Any:
    """A top-level name's value: a module by name, small data as data, anything else as a handle."""
    if type(value) is type(builtins):
        return {"module": str(value.__name__)}
    try:
        encoded = encode(value)
        if len(json.dumps(encoded)) <= MAX_NAME_BYTES:
            return encoded
    except (WireError, TypeError, ValueError, RecursionError):
        pass
    return {"handle": [objects.handle(value), str(type(value).__name__)[:100]]}


def _answer(request: Any, objects: _Objects) -> dict[str, Any]:
    request_id = request.get("id") if type(request) is dict else None
    try:
        target = objects.resolve(request["ref"])
        if request["op"] == "call":
            value = target(*decode(request["args"], objects.resolve), **decode(request["kwargs"], objects.resolve))
        elif request["op"] == "getattr":
            value = getattr(target, request["name"])
        else:
            raise WireError(f"unknown op {str(request['op'])[:100]}")
        return {"id": request_id, "value": encode(value, objects.handle, iterators=True)}
    except BaseException as exc:  # noqa: BLE001  the program's exceptions, SystemExit too, are the tests' to judge
        return {"id": request_id, "error": _builtin_names(exc), "args": _exception_args(exc)}


def _builtin_names(exc: BaseException) -> list[str]:
    return [cls.__name__ for cls in type(exc).__mro__ if cls.__module__ == "builtins"]


def _exception_args(exc: BaseException) -> Any:
    """The exception's args as data when they are small plain data, else its message."""
    try:
        encoded = encode(tuple(exc.args))
        if len(json.dumps(encoded)) <= 1 << 16:
            return encoded
    except Exception:  # noqa: BLE001  an exception of the program's making may fail in any way
        pass
    try:
        return encode((str(exc)[:2000],))
    except Exception:  # noqa: BLE001
        return encode(())


# ---- the tests' side ---------------------------------------------------------------------------


def _fatal(reason: str) -> NoReturn:
    """End the tests' process at once, failed: no test's ``except`` can catch this."""
    os.write(2, f"tests: {reason}\n".encode(errors="replace"))
    os._exit(1)


class Remote:
    """An object of the program's, held by the tests: it can be called, have a plain (non-dunder)
    attribute fetched, or be passed back to the program. It equals only itself, hashes by
    identity, is true, and has no other operation (the program's ``__eq__`` never runs here)."""

    __slots__ = ("_calls", "_ref", "_type_name")

    def __init__(self, calls: "Calls", ref: int, type_name: str) -> None:
        self._calls, self._ref, self._type_name = calls, ref, type_name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._calls.request({"op": "call", "ref": self._ref}, args=args, kwargs=kwargs)

    def __getattr__(self, name: str) -> Any:
        if name in Remote.__slots__ or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)
        return self._calls.request({"op": "getattr", "ref": self._ref, "name": name})

    def __repr__(self) -> str:
        return f"<the program's {self._type_name} #{self._ref}>"

    def __copy__(self) -> "Remote":
        return self  # a reference to the program's object: a copy is the same reference

    def __deepcopy__(self, memo: Any) -> "Remote":
        return self


class Calls:
    """The tests' end of the link: requests out, replies in, the program's objects as :class:`Remote`."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.last_id = 0
        self.remotes: dict[int, Remote] = {}

    def remote(self, ref: Any, type_name: Any) -> Remote:
        if type(ref) is not int or type(type_name) is not str:
            raise WireError(f"a malformed handle: {str(ref)[:100]}")
        if ref not in self.remotes:
            self.remotes[ref] = Remote(self, ref, type_name[:100])
        return self.remotes[ref]

    def _ref(self, obj: Any) -> int:
        if type(obj) is Remote:
            return obj._ref
        raise WireError(f"a {type(obj).__name__} cannot be passed to the program: only data and the program's own objects")

    def request(self, message: dict[str, Any], **arguments: Any) -> Any:
        """Send ``message`` (with ``args``/``kwargs`` encoded) and return the reply's value or raise its exception."""
        try:
            message.update({name: encode(value, self._ref, iterators=True) for name, value in arguments.items()})
        except WireError as exc:
            raise TypeError(str(exc)) from None  # a test's own argument: its failure is the test's
        self.last_id += 1
        message["id"] = self.last_id
        try:
            self.link.send(message)
            reply = self.link.receive()
            if reply is None:
                _fatal("the program ended during a call")
            if not _is_reply(reply, self.last_id):
                raise WireError(f"not the reply to request {self.last_id}: {str(reply)[:200]}")
            if "value" in reply:
                return decode(reply["value"], self.remote)
            names, args = _items(reply["error"]), decode(reply["args"])
            if type(args) is not tuple:
                raise WireError("exception arguments are not a tuple")
        except (WireError, OSError) as exc:
            _fatal(f"the link to the program broke: {exc}")
        raise _exception(names, args)


def _is_reply(reply: Any, request_id: int) -> bool:
    """Whether ``reply`` answers request ``request_id``: its id, and a value or an exception."""
    if type(reply) is not dict or type(reply.get("id")) is not int or reply["id"] != request_id:
        return False
    return set(reply) in ({"id", "value"}, {"id", "error", "args"})


def _exception(names: list[Any], args: tuple[Any, ...]) -> Exception:
    """The first builtin class in ``names`` that :data:`RAISABLE` allows, with ``args``; else ProgramError."""
    for name in names:
        cls = RAISABLE.get(name) if type(name) is str else None
        if cls is not None:
            try:
                return cls(*args)
            except Exception:  # noqa: BLE001  e.g. UnicodeDecodeError wants 5 arguments: try its base
                continue
    return ProgramError(*args)


def _program_names(calls: Calls, test_ns: dict[str, Any], entry_point: str | None, packages: list[str]) -> None:
    """Put the program's top-level names in the tests' namespace, as the in-process harness did: a
    name shadows neither the setup's names nor a builtin (except the entry point) nor a dunder."""
    message = calls.link.receive()
    if message is None:
        _fatal("the program ended before it defined its names (see its stderr)")
    if type(message) is not dict or set(message) != {"names"}:
        raise WireError(f"not the program's names: {str(message)[:200]}")
    for pair in _items(message["names"]):
        name, value = _items(pair, 2)
        if type(name) is not str or not name.isidentifier():
            raise WireError(f"not a name: {str(name)[:100]}")
        if name != entry_point and (name in test_ns or name in vars(builtins) or name.startswith("__")):
            continue
        if type(value) is dict and set(value) == {"module"}:
            module = _genuine_module(value["module"], packages)
            if module is not None:
                test_ns[name] = module
        else:
            test_ns[name] = decode(value, calls.remote)


def _genuine_module(name: Any, packages: list[str]) -> Any:
    """The tests' own import of a standard (or shared) module the program holds, else None."""
    if type(name) is not str or name.partition(".")[0] not in {*sys.stdlib_module_names, *packages} - {"__main__"}:
        return None
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001  not importable here: the name is left out
        return None


def run_tests() -> None:
    """Run ``spec.json``'s tests against the program on the link; ``passed <n>`` on the control channel when all pass."""
    with open("spec.json", encoding="utf-8") as f:
        spec = json.load(f)
    calls = Calls(Link())
    test_ns: dict[str, Any] = {"__name__": "__tests__", "__builtins__": builtins}
    passed = 0
    try:
        for source in spec["setup"]:
            exec(compile(source, "<setup>", "exec", dont_inherit=True), test_ns)
        _program_names(calls, test_ns, spec["entry_point"], spec["packages"])
        for i, source in enumerate(spec["tests"]):
            exec(compile(source, f"<test {i}>", "exec", dont_inherit=True), test_ns)
            passed += 1
    except WireError as exc:
        _fatal(f"the link to the program broke: {exc}")
    except BaseException as exc:  # noqa: BLE001  a failed test, whatever it raised
        _fatal(f"{passed} test(s) passed, then {type(exc).__name__}: {str(exc)[:2000]}")
    os.write(CONTROL_FD, b"passed %d\n" % passed)
    os._exit(0)


def main(role: str) -> None:
    {"solution": serve_solution, "tests": run_tests}[role]()
