"""The last gaps of issue 22, through the real console script (or ``cnnjit.cli.main`` in this process,
``run_cli_here``, where only the output is checked): ``bench -o/--output`` writing exactly the named
file in the format its extension names (item 8), ``--threads``/``--unfused`` on ``prune`` and ``quantize``
(item 8), free-text lines within 80 columns (item 11), ``compile --target aarch64`` feeding the live display
(item 1)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import onnx
import pytest
from test_cli import assert_one_line_error, run_cli, run_cli_here, small_cnn
from test_cli_misc import splittable_conv
from test_cli_progress import cold_env, many_ops, run_on_pty


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli_flags")
    out = {}
    for name, make in (("small", small_cnn), ("big", splittable_conv), ("many", many_ops)):
        out[name] = d / f"{name}.onnx"
        onnx.save(make(), out[name])
    return out


# ---- item 8: bench -o/--output -----------------------------------------------------------------------------
def test_bench_output_writes_exactly_the_named_file(models: dict, tmp_path: Path) -> None:
    """.json: the --json document; .md: a Markdown table with the numbers of that run; nothing else written."""
    r = run_cli("bench", models["small"], "--runs", "3", "--warmup", "1", "-o", "b.md", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["output"] == "b.md" and sorted(p.name for p in tmp_path.iterdir()) == ["b.md"]
    md = (tmp_path / "b.md").read_text().splitlines()
    assert md[0].startswith("### small.onnx (x=1x3x8x8), batch 1")
    assert md[2] == "| engine | median ms | p90 ms | p99 ms | min ms | GFLOP/s | inf/s |"
    assert md[3] == "|---|---:|---:|---:|---:|---:|---:|"
    s = doc["results"]["cnnjit"]
    assert md[4].startswith(f"| cnnjit | {s['median_ms']:.3f} | {s['p90_ms']:.3f} | {s['p99_ms']:.3f} | "
                            f"{s['min_ms']:.3f} |"), md
    assert any(ln.startswith("- memory: peak RSS") for ln in md)

    r = run_cli("bench", models["small"], "--runs", "2", "--warmup", "0", "--output", tmp_path / "r.json")
    assert r.returncode == 0, r.stderr
    assert "median ms" in r.stdout and f"wrote {tmp_path / 'r.json'}" in r.stdout  # the table still on stdout
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["results"]["cnnjit"]["runs"] == 2 and saved["output"] == str(tmp_path / "r.json")
    assert saved["model"] == str(models["small"]) and saved["png"] is None


def test_bench_output_png_and_its_alias(models: dict, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    for flag, name in (("-o", "a.png"), ("--png", "b.png")):
        r = run_cli("bench", models["small"], "--runs", "2", "--warmup", "0", flag, name, "--json", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["png"] == name
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]


def test_bench_output_unknown_extension_is_refused_up_front(models: dict, tmp_path: Path) -> None:
    for name in ("b.txt", "bench"):
        r = run_cli("bench", models["small"], "-o", name, cwd=tmp_path)
        line = assert_one_line_error(r, 2)
        assert f"-o {name}: cannot tell the format" in line and "hint: name the file .png" in r.stderr
        assert "median" not in r.stdout
    assert list(tmp_path.iterdir()) == []


# ---- item 8: --threads / --unfused on quantize and prune ---------------------------------------------------
_COMPILED = re.compile(r"compiled 'big' for \S+: passes \[([^]]*)\], \d+ nodes -> \d+ kernels \((\d+) calls\)")


def test_quantize_threads_and_unfused_reach_its_compiles(models: dict, tmp_path: Path) -> None:
    """-v logs each compile: the float model's (calibration) and the QDQ model's (evaluation). --threads 2
    splits the large Conv of the float model into two calls; --unfused leaves out the fusion passes."""
    logs = {}
    for flags in (("--threads", "1"), ("--threads", "2", "--unfused")):
        r = run_cli_here("-v", "quantize", models["big"], "--calibration", "random", "--batches", "1",
                         "-o", tmp_path / "q.onnx", *flags)
        assert r.returncode == 0, r.stderr
        logs[flags] = _COMPILED.findall(r.stderr)
        assert len(logs[flags]) == 2, r.stderr  # calibration + evaluation
    assert (logs[("--threads", "1")][0][1], logs[("--threads", "2", "--unfused")][0][1]) == ("1", "2")
    assert all("fuse_epilogue" in p for p, _ in logs[("--threads", "1")])
    assert not any("fuse" in p for p, _ in logs[("--threads", "2", "--unfused")])


def test_prune_threads_and_unfused_reach_onnxruntime(models: dict, tmp_path: Path) -> None:
    """prune's deviation report runs on onnxruntime: --threads N its intra-op threads, --unfused its graph
    optimizations off (as read back from the session); the report itself does not change."""
    docs = []
    for flags in (("--threads", "1"), ("--threads", "2", "--unfused")):
        r = run_cli("prune", models["small"], "--sparsity", "0.5", "--prune-first-last", "--samples", "2",
                    "-o", tmp_path / "p.onnx", "--json", *flags)
        assert r.returncode == 0, r.stderr
        docs.append(json.loads(r.stdout)["deviation"])
    assert (docs[0]["threads"], docs[0]["optimized"]) == (1, True)
    assert (docs[1]["threads"], docs[1]["optimized"]) == (2, False)
    assert docs[0]["max_abs_diff"] > 0
    assert docs[1]["max_abs_diff"] == pytest.approx(docs[0]["max_abs_diff"], rel=1e-4, abs=1e-6)
    assert docs[1]["argmax_agreement"] == docs[0]["argmax_agreement"]


# ---- item 11: free text within 80 columns ------------------------------------------------------------------
TEXT_COMMANDS = {"info": ["--example"], "run": ["--example", "--random"],
                 "profile": ["--example", "--runs", "2", "--rows", "3"],
                 "bench": ["--example", "--runs", "2", "--vs", "onnxruntime"],
                 "prune": ["{small}", "--sparsity", "0.5", "-o", "p.onnx"],
                 "quantize": ["{small}", "--calibration", "random", "--batches", "1", "-o", "q.onnx"]}


def test_every_line_fits_80_columns(models: dict, tmp_path: Path) -> None:
    """At COLUMNS=80 no line of stdout or stderr is wider than 80 (wrapped at spaces, continuation lines
    indented), and what the long lines said is all still there."""
    out = {}
    for cmd, extra in TEXT_COMMANDS.items():
        r = run_cli_here(cmd, *(a.format(small=models["small"]) for a in extra), cwd=tmp_path, env={"COLUMNS": "80"})
        assert r.returncode == 0, r.stderr
        wide = [ln for ln in (r.stdout + r.stderr).splitlines() if len(ln) > 80]
        assert not wide, (cmd, wide)
        out[cmd] = " ".join(r.stdout.split())  # the text with its line breaks undone
    assert "kws_ref_model_float32.onnx: graph 'tf2onnx', producer tf2onnx 1.17.0 None, ONNX IR 7, opsets " \
           "ai.onnx 13, ai.onnx.ml 2" in out["info"]
    assert "FLOPs: 5.39 MFLOP per run at input_1=1x49x10x1 (after cnnjit's passes" in out["info"]
    assert len(re.findall(r"class \d+ \(0\.\d{4}\)", out["run"])) == 5
    assert re.search(r"time: load [\d.]+ ms, import [\d.]+ ms, compile [\d.]+ ms \(.*\), first call [\d.]+ ms, "
                     r"run [\d.]+ ms \(median of 10\)", out["run"])
    assert re.search(r"sum of calls [\d.]+ ms .* whole run [\d.]+ ms .* GFLOP/s overall", out["profile"])
    assert re.search(r"deviation vs the original on 2 random inputs: max abs diff \S+, cosine \S+, argmax "
                     r"agreement \d+%", out["prune"])


# ---- item 1: compile --target aarch64 on a terminal --------------------------------------------------------
def test_target_compile_shows_its_kernels_on_a_terminal(models: dict, tmp_path: Path) -> None:
    """The worker process's kernel events reach the live bar on stderr (a terminal), not stdout."""
    code, out, term = run_on_pty(["compile", str(models["many"]), "--target", "aarch64-linux-gnu", "--no-shared",
                                  "--unfused", "-o", str(tmp_path / "build")], cold_env(tmp_path))
    assert code == 0, term
    assert "entry " in out and "kernels 0/" not in out  # the table on stdout, the bar on the terminal only
    assert "kernels 0/12" in term and "compiling k0 (Conv" in term, term
    assert "kernels 11/12" in term or "kernels 12/12" in term
