"""Kernel source templates: named slots, checked when made; kernel arguments bound by parameter name.

* ``Template(text, **defaults)`` holds kernel text with ``{name}`` slots. It parses the text (slots at
  their defaults) when it is made, i.e. when its kernel module is imported, so a broken template fails at
  registration rather than when some model first needs it; ``fill`` requires every slot to be given (or
  defaulted), substitutes them in one pass (filled text is never rescanned) and parses the result.
* ``source(lines)`` joins a kernel written as a list of lines and parses it.
* ``bind(src, **args)`` orders a call's arguments by the kernel's signature: a ``Value`` or ``Param``
  argument named ``x`` fills the parameter pair ``xb, xo`` (buffer, offset), any other argument the
  parameter of its name. Every parameter must be given exactly once.
* ``columns_inside`` / ``window_lines``: the output columns whose input column lies inside ``[0, W)``,
  worked out at compile time or in kernel text (the window clip shared by the direct convolutions).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import re

from cnnjit.ir.errors import CompileError

_SLOT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


#: SHA-256 digests of the kernel texts that parsed in this process. A compile makes the same text many times
#: (a variant's ``applies`` and its generator, layers of one shape, the variants ``choose`` tries): MobileNetV2
#: made 139 texts, 24 distinct, and parsing them all took half of its compile before numba (1.3 MB of source)
_PARSED: set[bytes] = set()
#: the memo is emptied when it grows past this many digests (32 bytes each)
_PARSED_MAX = 1 << 14


def _parse(text: str, what: str) -> None:
    key = hashlib.sha256(text.encode()).digest()
    if key in _PARSED:
        return
    try:
        ast.parse(text)
    except SyntaxError as e:
        raise CompileError(f"kernel {what} is not valid Python (line {e.lineno}: {e.msg})") from None
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.clear()
    _PARSED.add(key)


class Template:
    """Kernel text with named ``{slot}`` holes (see the module docstring)."""

    def __init__(self, text: str, **defaults: str):
        self.text = text
        self.slots = frozenset(_SLOT.findall(text))
        unknown = set(defaults) - self.slots
        if unknown:
            raise CompileError(f"template defaults name no slot: {sorted(unknown)}")
        self.defaults = defaults
        if set(defaults) == self.slots:
            _parse(self._sub(defaults), "template")

    def _sub(self, values: dict[str, str]) -> str:
        return _SLOT.sub(lambda m: values[m.group(1)], self.text)

    def fill(self, **values: str) -> str:
        """The text with every slot filled (``values`` over the defaults); parsed before it is returned."""
        values = {**self.defaults, **values}
        if set(values) != self.slots:
            raise CompileError(f"template slots {sorted(self.slots)} filled with {sorted(values)}")
        text = self._sub(values)
        _parse(text, "source")
        return text


def source(lines: list[str]) -> str:
    """A kernel written as lines, joined (with the final newline) and parsed."""
    text = "\n".join(lines) + "\n"
    _parse(text, "source")
    return text


@functools.lru_cache(maxsize=256)
def parameters(src: str) -> tuple[tuple[str, int], ...]:
    """``kernel``'s parameters as (name, count): a pair ``xb, xo`` is ``("x", 2)``, any other ``(p, 1)``."""
    fn = next(n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == "kernel")
    names = [a.arg for a in fn.args.args]
    out: list[tuple[str, int]] = []
    i = 0
    while i < len(names):
        p = names[i]
        if i + 1 < len(names) and len(p) > 1 and names[i + 1] == p[:-1] + "o":
            out.append((p[:-1], 2))
            i += 2
        else:
            out.append((p, 1))
            i += 1
    return tuple(out)


def bind(src: str, **args: object) -> list:
    """The call arguments of kernel ``src`` in signature order, from arguments given by parameter name."""
    names = [n for n, _ in parameters(src)]
    if set(args) != set(names) or len(names) != len(set(names)):
        missing, extra = sorted(set(names) - set(args)), sorted(set(args) - set(names))
        raise CompileError(f"kernel arguments do not match its parameters: missing {missing}, unknown {extra}")
    return [args[n] for n in names]


def columns_inside(first: int, last: int, sw: int, W: int, OW: int) -> tuple[int, int]:
    """Output columns ``[lo, hi)`` (``hi >= lo``) whose taps ``ow * sw + first .. ow * sw + last`` all lie
    inside ``[0, W)``."""
    lo = max(0, -(first // sw))
    span = W - 1 - last
    hi = min(OW, span // sw + 1) if span >= 0 else 0
    return lo, max(hi, lo)


def window_lines(ind: str, transposed: bool = False) -> list[str]:
    """Kernel lines setting ``lo, hi`` for one kernel column at offset ``offw`` (``continue`` when empty).

    Direct: the output columns ``ow`` whose input column ``ow * sw + offw`` is inside ``[0, W)``.
    ``transposed``: the input columns ``iw`` whose output column ``iw * sw + offw`` is inside ``[0, OW)``.
    """
    if transposed:
        body = ["# input columns whose output column ow = iw * sw + offw is inside [0, OW)",
                "lo = 0", "if offw < 0:", "    lo = (-offw + sw - 1) // sw",
                "if OW - 1 - offw < 0:", "    continue", "hi = min(W, (OW - 1 - offw) // sw + 1)"]
    else:
        body = ["# output columns whose input column is inside [0, W)",
                "lo = 0", "if offw < 0:", "    lo = (-offw + sw - 1) // sw",
                "hi = OW", "if OW > 0 and (OW - 1) * sw + offw >= W:",
                "    hi = (W - 1 - offw) // sw + 1 if W - 1 - offw >= 0 else 0"]
    return [ind + ln for ln in body + ["if hi <= lo:", "    continue"]]


def tap_columns(ind: str, transposed: bool = False) -> str:
    """Kernel text looping over a 3-D kernel's taps (``kd, kh, kw``) with the tap's weight ``wv`` and its
    column window (``window_lines``) at indent ``ind``: the direct and transposed convolutions' tap loop."""
    body = [f"{ind}for kd in range(KD):", f"{ind}    for kh in range(KH):", f"{ind}        for kw in range(KW):",
            f"{ind}            wv = wb[wbase + (kd * KH + kh) * KW + kw]", f"{ind}            offw = kw * dw - pw"]
    return "\n".join(body + window_lines(ind + " " * 12, transposed))


def clipped_loops(ind: str, *loops: tuple[str, str, str, str, str]) -> str:
    """Kernel text of nested loops, each ``(var, count, pos, expr, bound)``: ``for var in range(count)``
    skipping the iterations whose position ``pos = expr`` lies outside ``[0, bound)``, each one level
    deeper than the last, from indent ``ind`` (the row and plane clipping of direct convolutions/pools)."""
    out = []
    for var, count, pos, expr, bound in loops:
        out += [f"{ind}for {var} in range({count}):", f"{ind}    {pos} = {expr}",
                f"{ind}    if {pos} < 0 or {pos} >= {bound}:", f"{ind}        continue"]
        ind += "    "
    return "\n".join(out)
