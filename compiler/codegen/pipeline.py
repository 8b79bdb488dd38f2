"""A shorter numba pipeline for cnnjit's generated kernels, and cheaper typing while they compile.

Cold compile time is numba's front end on large generated kernels (issue 11). Our kernel sources are a
closed, known subset of Python: straight loops over ints, array loads and stores, our vector intrinsics,
``min``/``max``. No closures, ``with`` blocks, generators, ``literal_unroll``, exceptions, array
expressions, or variables that change type between assignments. So:

* ``KernelPipeline`` runs only the passes such code needs: bytecode -> IR -> type inference -> lowering.
  Skipped: with-lifting, closure inlining, the rewrite passes, dead-branch pruning, overload inlining,
  literal propagation and SSA reconstruction (with it, each redefinition of a variable is typed on its
  own; without, numba unifies them, which the kernels never need). About a quarter of the front end.
* ``fast_typing()`` (a context manager around our compiles) memoises numba's resolution of a function
  type for given argument types. numba re-resolves ``operator.add(int64, int64)`` at every ``+`` by
  trying every template registered for the operator (numpy ufunc loops included), and formats an error
  message for each template that does not match: ~14,000 resolutions for ~700 distinct ones in a
  MobileNet. A resolved signature depends only on the function type and the argument types, and the
  template's implementation key is kept on the function type by numba itself, so a hit returns exactly
  what resolving again would. Only successes are stored. It also turns off numba's error-message
  highlighting (colorama markup built for each failed template; nothing is printed) while we compile, in
  the modules that took numba's colour scheme at import too (``_COLOR_MODULES``: the failed templates'
  messages are built in ``types.functions``): kws cold compile 5.00 -> 4.81 CPU s (median of 6, A/B).
  It also skips numba's per-function O3 pre-pass before a module is linked (``FUNCTION_PREPASS``): the
  final module's O3 pipeline optimises every function anyway.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

from numba.core import codegen as _codegen
from numba.core import compiler_machinery as _cm
from numba.core import errors as _errors
from numba.core import ir as _ir
from numba.core import typeinfer as _typeinfer
from numba.core.compiler import CompilerBase, DefaultPassBuilder
from numba.core.compiler_machinery import FunctionPass, PassManager, register_pass
from numba.core.typed_passes import (
    AnnotateTypes,
    IRLegalization,
    NativeLowering,
    NoPythonBackend,
    NoPythonSupportedFeatureValidation,
    NopythonTypeInference,
)
from numba.core.types import functions as _functions
from numba.core.typing import typeof as _typeof
from numba.core.untyped_passes import FixupArgs, IRProcessing, TranslateByteCode

#: kernels that needed numba's full pipeline in this process (see ``KernelPipeline``)
fallbacks = 0
_log = logging.getLogger("cnnjit.compile")


@register_pass(mutates_CFG=False, analysis_only=True)
class _ForgetFailedAttempt(FunctionPass):
    """First pass of the fallback pipeline: numba keeps the failed attempt's error in ``status.fail_reason``
    and would raise it even though the fallback compiles; this pass clears it."""

    _name = "cnnjit_forget_failed_attempt"

    def __init__(self) -> None:
        FunctionPass.__init__(self)

    def run_pass(self, state: Any) -> bool:
        global fallbacks
        fallbacks += 1
        _log.debug("kernel %s compiles with numba's full pipeline: %s", state.func_id.func_qualname,
                   state.status.fail_reason)
        state.status.fail_reason = None
        return False


class KernelPipeline(CompilerBase):
    """numba's nopython pipeline without the passes cnnjit's generated kernels never need (see above).

    Should a kernel need one after all (typing fails: e.g. a name reused for a vector and a scalar, which
    only SSA reconstruction separates), numba moves on to the second pipeline, its own full one, which
    starts again from the bytecode: the result is what plain ``@njit`` gives, at the usual cost.
    """

    def define_pipelines(self) -> list[PassManager]:
        pm = PassManager("cnnjit_kernel")
        if self.state.func_ir is None:
            pm.add_pass(TranslateByteCode, "analyzing bytecode")
            pm.add_pass(FixupArgs, "fix up args")
        pm.add_pass(IRProcessing, "processing IR")
        pm.add_pass(NopythonTypeInference, "nopython frontend")
        pm.add_pass(NoPythonSupportedFeatureValidation, "ensure features that are in use are in a valid form")
        pm.add_pass(IRLegalization, "ensure IR is legal prior to lowering")
        pm.add_pass(AnnotateTypes, "annotate types")
        pm.add_pass(NativeLowering, "native lowering")
        pm.add_pass(NoPythonBackend, "nopython mode backend")
        pm.finalize()
        full = DefaultPassBuilder.define_nopython_pipeline(self.state)
        if self.state.func_ir is not None:  # (never, for a dispatcher compile) no bytecode to start over from
            return [full]
        fallback = PassManager("nopython")
        fallback.add_pass(_ForgetFailedAttempt, "forget the failed attempt")
        fallback.passes.extend(full.passes)
        fallback.finalize()
        return [pm, fallback]


_ORIGINAL = _functions.BaseFunction.get_call_type
_ORIGINAL_OPTIMIZE_FUNCTIONS = _codegen.CPUCodeLibrary._optimize_functions
#: run numba's per-function O3 pre-pass on each module before it is linked (numba's default). Off while
#: cnnjit compiles: the final module's O3 pipeline runs on every function anyway, and the machine code runs
#: as fast (in-process A/B, outputs bit-identical: MobileNetV2 7.66 / 7.69 ms, mlperf resnet and vww within
#: 2%) for less compile CPU (MobileNetV2 cold 23.9 -> 22.1 s; two cold test_simd_widths tests 25.5 -> 22.5 s).
FUNCTION_PREPASS = False


def _lean_optimize_functions(self: Any, ll_module: Any) -> None:
    """numba's ``CPUCodeLibrary._optimize_functions`` while cnnjit compiles: nothing but the data layout unless
    ``FUNCTION_PREPASS``; then numba's passes on the same functions without its per-function overhead (one
    pass manager for the module instead of one built per function, none run on declarations: the intrinsics
    and helpers a kernel calls, 10-15 a module, have no body to optimise)."""
    ll_module.data_layout = self._codegen._data_layout
    if not FUNCTION_PREPASS:
        return
    fpm = pb = None
    for func in ll_module.functions:
        if func.is_declaration:
            continue
        if fpm is None:
            fpm, pb = self._codegen._function_pass_manager()
        with self._recorded_timings.record(f"Function passes on {func.name!r}", pb):
            fpm.run(func, pb)


_memo: dict[tuple, Any] = {}
_depth = 0
_state_lock = threading.Lock()
_saved_colors: Any = None
#: numba modules that keep the colour scheme of their import in a global ``_termcolor``
_COLOR_MODULES = tuple(m for m in (_functions, _typeinfer, _ir, _cm, _typeof) if hasattr(m, "_termcolor"))
_saved_module_colors: list[Any] = []


def _memo_get_call_type(self: Any, context: Any, args: Any, kws: Any) -> Any:
    try:
        key = (self, id(context), tuple(args), tuple(sorted(kws.items())))
        sig = _memo.get(key)
    except TypeError:  # an unhashable argument type: resolve as numba does
        return _ORIGINAL(self, context, args, kws)
    if sig is None:
        sig = _ORIGINAL(self, context, args, kws)
        if sig is not None:
            _memo[key] = sig
    return sig


class _PlainColors(_errors._DummyColorScheme):
    """numba's no-highlighting scheme (numba defines its own only when colorama is missing)."""

    def code(self, msg: str) -> str:
        return msg

    errmsg = filename = indicate = highlight = reset = code


@contextlib.contextmanager
def fast_typing() -> Iterator[None]:
    """While compiling our kernels: memoised function-type resolution, no error-message markup (re-entrant;
    numba's previous behaviour is restored when the outermost use exits)."""
    global _depth, _saved_colors
    with _state_lock:
        _depth += 1
        if _depth == 1:
            _functions.BaseFunction.get_call_type = _memo_get_call_type
            _codegen.CPUCodeLibrary._optimize_functions = _lean_optimize_functions
            _saved_colors = _errors._termcolor_inst
            _errors._termcolor_inst = plain = _PlainColors()
            _saved_module_colors[:] = [m._termcolor for m in _COLOR_MODULES]
            for m in _COLOR_MODULES:
                m._termcolor = plain
    try:
        yield
    finally:
        with _state_lock:
            _depth -= 1
            if _depth == 0:
                _functions.BaseFunction.get_call_type = _ORIGINAL
                _codegen.CPUCodeLibrary._optimize_functions = _ORIGINAL_OPTIMIZE_FUNCTIONS
                _errors._termcolor_inst = _saved_colors
                for m, colors in zip(_COLOR_MODULES, _saved_module_colors, strict=True):
                    m._termcolor = colors
