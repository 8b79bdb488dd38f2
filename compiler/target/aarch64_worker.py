"""The numba side of the aarch64 target, run in a worker process: kernels lowered for aarch64.

``python -m cnnjit.compiler.target.aarch64_worker JOB OUT`` reads a pickled job (kernel sources, the
schedule as a list of calls, buffer layout, constant data; see ``cnnjit.compiler.target.aarch64``) and
writes a pickled result: the ELF object, its assembly and LLVM IR, or an error.

How: every kernel source goes through numba's compile pipeline (``compile_extra``) with a target context
whose code generator is a subclass of numba's ahead-of-time CPU codegen with an aarch64 target machine
(triple, data layout, CPU and features replaced). Buffers are typed as raw pointers
(``types.CPointer``), so kernels index pointers, and kernels are compiled without NRT, so nothing of
numba's (x86-built) runtime is linked in. The C entry ``<name>_run`` is built directly in LLVM IR: it
copies inputs into the caller's scratch buffer, calls the kernels in schedule order (numba's native
calling convention, status code checked after each call), copies outputs out and returns a status.
Constants are LLVM global constant arrays in the same module. The whole module is then optimised (O3)
for the target machine and emitted as an object file.

This runs in its own process because numba's codegen and helper libraries are per process and built for
the host; nothing compiled here is ever executed here. Everything numba-internal is in this file, so a
numba upgrade touches only it: ``SUPPORTED_NUMBA`` lists the versions it was checked against.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import tempfile
import traceback

import llvmlite.binding as ll
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import codegen, compiler, cpu
from numba.core.compiler_lock import global_compiler_lock
from numba.core.registry import cpu_target
from numba.np.numpy_support import from_dtype

from cnnjit.compiler.codegen.pipeline import KernelPipeline
from cnnjit.compiler.target.steps_ir import parallel_entry

#: numba releases whose internals (codegen classes, compile flags, calling convention) this file uses
SUPPORTED_NUMBA = ("0.68",)

STATUS_OK, STATUS_KERNEL, STATUS_ARGUMENT = 0, 1, 2


class TargetSpecError(Exception):
    """The triple, CPU or features are not accepted by LLVM."""


def numba_supported() -> tuple[bool, str]:
    v = numba.__version__
    return any(v == s or v.startswith(s + ".") for s in SUPPORTED_NUMBA), v


def _capture_stderr(fn):
    """Run ``fn()`` with file descriptor 2 captured (LLVM prints its warnings there); return (value, text)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            value = fn()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        return value, tmp.read().decode(errors="replace")


def make_target_machine(triple: str, cpu: str, features: str, reloc: str = "pic", codemodel: str = "default"):
    """An LLVM target machine for the triple/CPU/features, refusing what LLVM would silently ignore. The host
    build (``host.py``) asks for numba's JIT settings (static relocations, the JIT code model), since its
    object is loaded into a process like numba's own machine code."""
    ll.initialize_all_targets()
    ll.initialize_all_asmprinters()
    try:
        target = ll.Target.from_triple(triple)
    except RuntimeError as e:
        raise TargetSpecError(f"LLVM has no target for triple {triple!r}: {e}") from None

    def create():
        return target.create_target_machine(cpu=cpu, features=features, opt=3, reloc=reloc, codemodel=codemodel)

    tm, warnings = _capture_stderr(create)
    bad = list(dict.fromkeys(ln.replace("(ignoring processor)", "").replace("(ignoring feature)", "").strip()
                             for ln in warnings.splitlines() if "not a recognized" in ln))
    if bad:
        raise TargetSpecError("; ".join(bad))
    return tm


def _codegen_class():
    class TargetCodegen(codegen.AOTCPUCodegen):
        """numba's AOT codegen with the target machine, triple and data layout of the target machine."""

        def __init__(self, name: str, tm, triple: str, features: str):
            self._x_tm, self._x_triple, self._x_features = tm, triple, features
            super().__init__(name, cpu_name="")

        def _init(self, llvm_module):
            self._tm_features = self._x_features
            self._tm = self._x_tm
            self._engine = None  # nothing is ever executed in this process
            self._target_data = self._tm.target_data
            self._data_layout = str(self._target_data)
            self._loopvect = False
            self._opt_level = 0

        def _create_empty_module(self, name):
            m = super()._create_empty_module(name)
            m.triple = self._x_triple
            return m

        def _customize_tm_features(self):
            return self._x_features

        def magic_tuple(self):
            return (self._x_triple, "", self._x_features)

    return TargetCodegen


def _numba_type(spec, buffer_dtypes):
    kind, v = spec
    if kind == "buf":
        return types.CPointer(from_dtype(np.dtype(buffer_dtypes[v])))
    if kind == "i":
        return types.int64
    if kind == "L":  # a size the kernel is specialised on (numba's Literal[int], as in a numba entry)
        return types.literal(int(v))
    return types.float64


#: the prefix of a progress line on stderr (``aarch64.run_worker`` passes them on as ``KernelEvent``s)
PROGRESS = "cnnjit-progress\t"


def _progress(done: int, total: int, name: str, origin: str) -> None:
    sys.stderr.write(PROGRESS + json.dumps({"done": done, "total": total, "name": name, "origin": origin}) + "\n")
    sys.stderr.flush()


def build(job: dict) -> dict:
    ok, version = numba_supported()
    if not ok:
        raise TargetSpecError(f"the aarch64 target supports numba {', '.join(SUPPORTED_NUMBA)} (found {version})")
    name, triple = job["name"], job["triple"]
    tm = make_target_machine(triple, job["cpu"], job["features"], **job.get("machine", {}))
    cg = _codegen_class()(f"cnnjit_{name}", tm, triple, job["features"])
    tctx = cpu_target.target_context.subtarget(_internal_codegen=cg, aot_mode=True)
    typingctx = cpu_target.typing_context

    flags = compiler.Flags()
    flags.no_compile = True
    flags.no_cpython_wrapper = True
    flags.no_cfunc_wrapper = True
    flags.nrt = False
    flags.error_model = "numpy"
    flags.boundscheck = False
    if job.get("contract", True):
        flags.fastmath = cpu.FastMathOptions({"contract"})

    # the host build types kernels with the JIT's own pipeline (codegen/pipeline.py), so that every value
    # gets the type it has in the JIT (without SSA reconstruction a reassigned name is unified: float64)
    pipeline = KernelPipeline if job.get("kernel_pipeline") else compiler.Compiler
    buffer_dtypes = {b: spec["dtype"] for b, spec in job["buffers"].items()}
    compiled: dict[tuple, tuple[str, object]] = {}  # (kernel, signature) -> (symbol, cres)
    symbols: dict[str, str] = {}
    total = len(job["kernels"])
    _progress(0, total, "", "begin")
    with global_compiler_lock:
        for kname, args in job["calls"]:
            sig = tuple(_numba_type(a, buffer_dtypes) for a in args)
            if (kname, sig) in compiled:
                continue
            _progress(len(set(symbols.values())), total, kname, "compiling")
            ns: dict = {"__name__": f"cnnjit_target_{kname}"}
            src = job["header"] + job["kernels"][kname]
            exec(compile(src, f"<cnnjit kernel {kname}>", "exec"), ns)  # noqa: S102 - our own templates
            try:
                cres = compiler.compile_extra(typingctx, tctx, ns["kernel"], sig, types.none, flags, {},
                                              pipeline_class=pipeline)
            except Exception as e:  # noqa: BLE001
                raise RuntimeError(f"kernel {kname} failed to compile for {triple}: {type(e).__name__}: "
                                   f"{str(e).splitlines()[0] if str(e) else ''}") from e
            nsig = sum(1 for k in compiled if k[0] == kname)
            sym = f"{name}_{kname}" + (f"_{nsig}" if nsig else "")
            compiled[(kname, sig)] = (sym, cres)
            symbols[sym] = kname
            _progress(len(set(symbols.values())), total, kname, "compiled")
        _progress(total, total, "schedule", "schedule")
        kernel_irs = []
        for (kname, _), (sym, cres) in compiled.items():
            cres.library.finalize()
            # a kernel compiled once for all its calls (sizes as int64, see emit.SPECIALIZE_MAX) is inlined
            # into the entry, where LLVM specialises it on each call's sizes, as in a numba entry
            inline = kname in job.get("inline", ())
            kernel_irs.append((sym, cres.fndesc.mangled_name, str(cres.library._final_module), inline))

        # ---- the C entry, in LLVM IR ----------------------------------------------------------------
        mod = ir.Module(name=f"cnnjit_{name}")
        mod.triple = triple
        mod.data_layout = str(tm.target_data)
        i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
        ptr = i8.as_pointer()
        memcpy = ir.Function(mod, ir.FunctionType(ir.VoidType(), [ptr, ptr, i64, ir.IntType(1)]),
                             "llvm.memcpy.p0.p0.i64")
        consts = {}
        for b, spec in job["buffers"].items():
            if spec["kind"] == "c":
                data = bytearray(spec["data"])
                gv = ir.GlobalVariable(mod, ir.ArrayType(i8, len(data)), f"{name}_{b}")
                gv.global_constant = True
                gv.linkage = "internal"
                gv.align = 64
                gv.initializer = ir.Constant(ir.ArrayType(i8, len(data)), data)
                consts[b] = gv
        decls: dict[str, ir.Function] = {}
        slots: dict[str, tuple[ir.Value, ir.Value]] = {}  # per entry function: numba's excinfo and return slots

        def base_pointers(bld: ir.IRBuilder, scratch: ir.Value) -> dict[str, ir.Value]:
            return {b: consts[b].bitcast(ptr) if spec["kind"] == "c" else bld.gep(
                scratch, [ir.Constant(i64, spec["scratch_offset"])]) for b, spec in job["buffers"].items()}

        def emit_call(bld: ir.IRBuilder, bases: dict[str, ir.Value], k: int, fail: ir.Block) -> None:
            """Call ``k`` of the schedule (numba's calling convention), branching to ``fail`` on an error."""
            kname, args = job["calls"][k]
            sym, cres = compiled[(kname, tuple(_numba_type(a, buffer_dtypes) for a in args))]
            if sym not in decls:
                kty = tctx.call_conv.get_function_type(cres.signature.return_type, cres.signature.args)
                decls[sym] = ir.Function(mod, kty, sym)
            kfn = decls[sym]
            fn = bld.function
            if fn.name not in slots:
                with bld.goto_entry_block():
                    slots[fn.name] = (bld.alloca(ptr, name="excinfo"), bld.alloca(ir.ArrayType(i64, 4), name="ret"))
            excinfo, retslot = slots[fn.name]
            vals = [bld.bitcast(retslot, kfn.function_type.args[0]), bld.bitcast(excinfo, kfn.function_type.args[1])]
            for (kind, v), ty in zip(args, kfn.function_type.args[2:]):
                if kind == "buf":
                    vals.append(bld.bitcast(bases[v], ty))
                elif kind in ("i", "L"):
                    vals.append(ir.Constant(ty, int(v)))
                else:
                    vals.append(ir.Constant(ty, float(v)))
            st = bld.call(kfn, vals, attrs=() if job.get("inline_calls") else ("noinline",))
            good = bld.or_(bld.icmp_signed("==", st, ir.Constant(i32, 0)),
                           bld.icmp_signed("==", st, ir.Constant(i32, -2)))  # numba: OK / returned None
            nxt = fn.append_basic_block("next")
            bld.cbranch(good, nxt, fail)
            bld.position_at_end(nxt)

        if job.get("steps"):  # a parallel schedule: the step protocol (steps_ir.py), run by every thread
            parallel_entry(mod, name, job["steps"], job["terminal"], job["sys_futex"], STATUS_ARGUMENT,
                           STATUS_KERNEL, emit_call, base_pointers)
        else:
            serial_entry(mod, name, job, ptr, memcpy, base_pointers, emit_call)

        # ---- link, internalise, optimise, emit ------------------------------------------------------
        final = ll.parse_assembly(str(mod))
        for sym, mangled, text, inline in kernel_irs:
            km = ll.parse_assembly(text)
            if inline:
                km.get_function(mangled).add_function_attribute("alwaysinline")
            for f in km.functions:
                if not f.is_declaration:
                    f.linkage = "internal"
            for g in km.global_variables:
                if not g.is_declaration:
                    g.linkage = "internal"
            km.get_function(mangled).linkage = "external"
            km.get_function(mangled).name = sym
            final.link_in(km)
        for f in final.functions:
            if not f.is_declaration and f.name != f"{name}_run":
                f.linkage = "internal"
        final.verify()
        pm, pb = cg._module_pass_manager()
        pm.run(final, pb)
        final.verify()
        ir_text = str(final)
        obj = tm.emit_object(final)
        asm = tm.emit_assembly(final) if job.get("asm", True) else ""
    return {"object": bytes(obj), "asm": asm, "ir": ir_text if job.get("keep_ir") else "",
            "kernel_symbols": symbols, "x86_intrinsics": "llvm.x86." in ir_text,
            "triple": final.triple, "numpy": np.__version__}



def serial_entry(mod: ir.Module, name: str, job: dict, ptr: ir.Type, memcpy: ir.Function, base_pointers,
                 emit_call) -> ir.Function:
    """The C entry ``<name>_run(in..., out..., scratch) -> i32`` of a serial schedule: copy the inputs into
    the scratch block, call the kernels in order, copy the outputs out."""
    i32, i64 = ir.IntType(32), ir.IntType(64)
    n_in, n_out = len(job["inputs"]), len(job["outputs"])
    fn = ir.Function(mod, ir.FunctionType(i32, [ptr] * (n_in + n_out + 1)), f"{name}_run")
    for i, a in enumerate(fn.args):
        a.name = f"in{i}" if i < n_in else (f"out{i - n_in}" if i < n_in + n_out else "scratch")
    entry = fn.append_basic_block("entry")
    fail_arg = fn.append_basic_block("bad_argument")
    fail_kernel = fn.append_basic_block("kernel_error")
    body = fn.append_basic_block("body")
    bld = ir.IRBuilder(entry)
    bad = ir.Constant(ir.IntType(1), 0)
    for a in fn.args:
        bad = bld.or_(bad, bld.icmp_unsigned("==", a, ir.Constant(ptr, None)))
    bld.cbranch(bad, fail_arg, body)
    ir.IRBuilder(fail_arg).ret(ir.Constant(i32, STATUS_ARGUMENT))
    ir.IRBuilder(fail_kernel).ret(ir.Constant(i32, STATUS_KERNEL))
    bld = ir.IRBuilder(body)
    bases = base_pointers(bld, fn.args[-1])

    def at(b, elem_offset, itemsize):
        return bld.gep(bases[b], [ir.Constant(i64, elem_offset * itemsize)])

    false = ir.Constant(ir.IntType(1), 0)
    for i, (b, off, nbytes, itemsize) in enumerate(job["inputs"]):
        bld.call(memcpy, [at(b, off, itemsize), fn.args[i], ir.Constant(i64, nbytes), false])
    for k in range(len(job["calls"])):
        emit_call(bld, bases, k, fail_kernel)
    for i, (b, off, nbytes, itemsize) in enumerate(job["outputs"]):
        bld.call(memcpy, [fn.args[n_in + i], at(b, off, itemsize), ir.Constant(i64, nbytes), false])
    bld.ret(ir.Constant(i32, STATUS_OK))
    return fn


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    job_path, out_path = argv
    with open(job_path, "rb") as f:
        job = pickle.load(f)  # noqa: S301 - written by our own parent process
    try:
        result = build(job)
    except TargetSpecError as e:
        result = {"error": str(e), "kind": "target"}
    except Exception as e:  # noqa: BLE001 - reported to the parent with the traceback
        result = {"error": f"{type(e).__name__}: {e}", "kind": "compile", "traceback": traceback.format_exc()}
    with open(out_path, "wb") as f:
        pickle.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
