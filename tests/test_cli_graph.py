"""``cnnjit graph`` pictures a person can read, and the ``cnnjit bench --png`` chart, from ``cnnjit.cli.main`` in
this process (``test_cli.run_cli_here``: the pictures and messages are checked, not the console script).

MobileNetV2-224 (``benchmarks/models.py``) is the done-when model: its after-only picture must be no taller
than 4x its width; the unwrapped strip of the same graph must not be (so the check can fail).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import onnx
import pytest
from test_cli import EVIL, assert_one_line_error, small_cnn
from test_cli import run_cli_here as run_cli

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.models import mobilenet_v2  # noqa: E402
from cnnjit.bench import bar_chart, cpu_name  # noqa: E402
from cnnjit.inspect_model import find_blocks, name_line, to_dot, trace  # noqa: E402

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' not installed")
Image = pytest.importorskip("PIL.Image")

#: MobileNetV2's stages (expansion t, channels c, repeats n, stride s), as the paper's table 2 lists them
MV2_STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
              (6, 320, 1, 1)]
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("graph") / "small.onnx"
    onnx.save(small_cnn(), p)
    return p


@pytest.fixture(scope="module")
def mv2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("graph") / "mobilenet_v2_224.onnx"
    onnx.save(mobilenet_v2(1.0, 224), p)
    return p


def png_size(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        return im.size


def svg_boxes(path: Path) -> dict[str, tuple[float, float, str]]:
    """DOT node name -> (x, y of its first text line, all its text) from Graphviz's SVG."""
    out = {}
    for g in ET.parse(path).getroot().iter(f"{SVG}g"):
        if g.get("class") != "node":
            continue
        texts = list(g.iter(f"{SVG}text"))
        out[g.find(f"{SVG}title").text] = (float(texts[0].get("x")), float(texts[0].get("y")),
                                           "\n".join(t.text or "" for t in texts))
    return out


@needs_dot
def test_mobilenet_v2_after_view_fits_a_page(mv2: Path, tmp_path: Path) -> None:
    png = tmp_path / "g.png"
    r = run_cli("graph", mv2, "-o", png, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["rendered"] and doc["view"] == "after" and doc["warnings"] == []
    w, h = png_size(png)
    assert h <= 4 * w, (w, h)
    assert max(w, h) < 4000, (w, h)  # a screen or page, not a poster
    # the same graph as one strip (no wrapping) is the tall picture the issue reports: the check can fail
    strip = tmp_path / "strip.png"
    assert run_cli("graph", mv2, "-o", strip, "--wrap", "0").returncode == 0
    sw, sh = png_size(strip)
    assert sh > 4 * sw, (sw, sh)


@needs_dot
def test_after_only_is_the_default(small: Path, tmp_path: Path) -> None:
    svg = tmp_path / "g.svg"
    r = run_cli("graph", small, "-o", svg)
    assert r.returncode == 0, r.stderr
    boxes = svg_boxes(svg)
    texts = [b[2] for b in boxes.values()]
    assert all(not k.startswith("before_") for k in boxes)
    # the fused group is one box (op with its fused steps, its kernel); its parts have no boxes of their own
    fused = [t for t in texts if t.startswith("Conv+BatchNormalization+Relu")]
    assert len(fused) == 1 and "kernel k" in fused[0] and 'conv "evil"' in fused[0]
    assert not any(t.split("\n")[0] in ("BatchNormalization", "Relu") for t in texts)
    # a name that only repeats the op is not shown: the Gemm named "fc" shows it, the Softmax named "softmax" not
    assert any(t.startswith("Gemm\nfc\n") for t in texts)
    assert any(t.startswith("Softmax\n1x6") for t in texts)
    assert any(t.startswith("Reshape\nflatten\n") and t.endswith("(view)") for t in texts)  # no kernel of its own
    # and the both view still draws the graph before fusion beside it
    svg2 = tmp_path / "both.svg"
    assert run_cli("graph", small, "-o", svg2, "--view", "both").returncode == 0
    both = svg_boxes(svg2)
    assert any(k.startswith("before_") for k in both) and any(k.startswith("after_") for k in both)
    # aligned: each after-box is level with the first node of its group before fusion
    conv_before = next(v for k, v in both.items() if k.startswith("before_n") and v[2].startswith("Conv\n"))
    conv_after = next(v for k, v in both.items() if k.startswith("after_n") and v[2].startswith("Conv+"))
    assert abs(conv_before[1] - conv_after[1]) < 15 and conv_after[0] > conv_before[0]


def _chain(boxes: dict[str, tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The small model's boxes in graph order: input, Conv group, pool, flatten, fc, softmax, output."""
    first = ("input", "Conv+", "GlobalAveragePool", "Reshape", "Gemm", "Softmax", "output")
    return [next(b for b in boxes.values() if b[2].startswith(f)) for f in first]


@needs_dot
def test_rankdir_lr(small: Path, tmp_path: Path) -> None:
    lr, tb = tmp_path / "lr.svg", tmp_path / "tb.svg"
    assert run_cli("graph", small, "-o", lr, "--rankdir", "LR", "--wrap", "0").returncode == 0
    assert run_cli("graph", small, "-o", tb, "--wrap", "0").returncode == 0
    chain = _chain(svg_boxes(lr))
    xs, ys = [b[0] for b in chain], [b[1] for b in chain]
    assert xs == sorted(xs) and len(set(xs)) == len(xs) and max(ys) - min(ys) < 20  # one row, left to right
    chain = _chain(svg_boxes(tb))
    xs, ys = [b[0] for b in chain], [b[1] for b in chain]
    assert ys == sorted(ys) and len(set(ys)) == len(ys) and max(xs) - min(xs) < 40  # one column, downwards
    # wrapped (4 boxes per row): rows stack downwards, each read left to right
    wrapped = tmp_path / "w.svg"
    assert run_cli("graph", small, "-o", wrapped, "--rankdir", "lr", "--wrap", "4").returncode == 0
    chain = _chain(svg_boxes(wrapped))
    assert [b[0] for b in chain[:4]] == sorted(b[0] for b in chain[:4])
    assert min(b[1] for b in chain[4:]) > max(b[1] for b in chain[:4])


@needs_dot
def test_collapsed_blocks_in_mobilenet_v2(mv2: Path, tmp_path: Path) -> None:
    svg = tmp_path / "c.svg"
    r = run_cli("graph", mv2, "-o", svg, "--collapse", "--rankdir", "LR")
    assert r.returncode == 0, r.stderr
    texts = [b[2] for b in svg_boxes(svg).values()]
    blocks = [t for t in texts if t.startswith("inverted residual")]
    # independent count from the architecture: every t=6 repeat is a block; a residual where the stride is 1
    # and the channels stay; the t=1 stage is a depthwise-separable pair
    cin, expect_blocks, expect_res = 32, 0, 0
    for t, c, n, s in MV2_STAGES:
        for i in range(n):
            if t != 1:
                expect_blocks += 1
                expect_res += (s if i == 0 else 1) == 1 and cin == c
            cin = c
    assert len(blocks) == expect_blocks == 16
    assert sum("+res" in t for t in blocks) == expect_res == 10
    assert sum(t.startswith("depthwise separable") for t in texts) == 1
    assert any("24\u2192144\u219224 ch, dw 3x3/1" in t for t in blocks)
    assert len(texts) == 2 + 1 + 17 + 1 + 3  # input, output, stem, blocks, last conv, pool/flatten/fc
    w, h = png_size(_render_png(mv2, tmp_path, "--collapse"))
    assert h <= 4 * w


def _render_png(model: Path, tmp_path: Path, *extra: str) -> Path:
    out = tmp_path / "r.png"
    r = run_cli("graph", model, "-o", out, *extra)
    assert r.returncode == 0, r.stderr
    return out


def test_collapse_leaves_other_graphs_alone(small: Path) -> None:
    t = trace(small)
    assert find_blocks(t.graph) == []
    assert to_dot(t, collapse=True) == to_dot(t)


def test_name_line() -> None:
    class N:  # the two fields name_line reads
        def __init__(self, op: str, name: str) -> None:
            self.op, self.name = op, name

    assert name_line(N("Conv", "conv_12")) == ""
    assert name_line(N("GlobalAveragePool", "GlobalAveragePool")) == ""
    assert name_line(N("Conv", "/features/features.0/Conv")) == "features/features.0"
    assert name_line(N("Reshape", "flatten_413")) == "flatten_413"
    assert name_line(N("Conv", EVIL)) == EVIL


@needs_dot
def test_format_from_file_name(small: Path, tmp_path: Path) -> None:
    pdf = tmp_path / "g.pdf"
    assert run_cli("graph", small, "-o", pdf).returncode == 0
    assert pdf.read_bytes()[:5] == b"%PDF-"
    dot = tmp_path / "g.dot"
    r = run_cli("graph", small, "-o", dot, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["rendered"] is False
    assert dot.read_text().startswith("digraph cnnjit {")
    bare = tmp_path / "picture"  # no extension: --format names it
    assert run_cli("graph", small, "-o", bare, "--format", "png").returncode == 0
    png_size(bare)
    # a --format that contradicts the file name is a usage error, and nothing is written
    svg = tmp_path / "g.svg"
    line = assert_one_line_error(run_cli("graph", small, "-o", svg, "--format", "png"), 2)
    assert "contradicts" in line and not svg.exists()
    assert run_cli("graph", small, "-o", svg, "--format", "svg").returncode == 0
    assert ET.parse(svg).getroot().tag == f"{SVG}svg"
    assert_one_line_error(run_cli("graph", small, "-o", tmp_path / "x.png", "--size", "8x11"), 2)
    assert_one_line_error(run_cli("graph", small, "-o", tmp_path / "x.png", "--wrap", "-1"), 2)


@needs_dot
def test_size_shrinks_to_fit(mv2: Path, tmp_path: Path) -> None:
    svg = tmp_path / "s.svg"
    assert run_cli("graph", mv2, "-o", svg, "--view", "both", "--size", "8.3,11.7").returncode == 0
    root = ET.parse(svg).getroot()
    w, h = (float(re.match(r"[\d.]+", root.get(k)).group()) for k in ("width", "height"))  # points
    assert w <= 8.3 * 72 + 1 and h <= 11.7 * 72 + 1


def test_bench_png_title_and_labels(small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plt = pytest.importorskip("matplotlib.pyplot")
    png = tmp_path / "b.png"
    r = run_cli("bench", small, "--runs", "3", "--warmup", "1", "--threads", "2", "--png", png,
                "--shape", "x=2,3,8,8")
    assert r.returncode == 0, r.stderr
    png_size(png)
    with Image.open(png) as im:
        title = im.info["Title"]
    assert "small.onnx" in title and "x=2x3x8x8" in title and cpu_name() in title and "2 threads" in title
    # labels sit past the whisker ends, not on them: read the drawn figure back
    figs = []
    monkeypatch.setattr(plt, "close", figs.append)
    stats = {"cnnjit": {"median_ms": 1.0, "min_ms": 0.5, "p90_ms": 2.0},
             "onnxruntime": {"median_ms": 3.0, "min_ms": 2.9, "p90_ms": 6.0}}
    bar_chart(stats, tmp_path / "c.png", "t")
    fig = figs[0]
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    labels = [t for t in ax.texts if t.get_text().endswith(" ms")]
    assert [t.get_text() for t in labels] == ["1.000 ms", "3.000 ms"]
    for t, s in zip(labels, stats.values()):
        box = t.get_window_extent(renderer)
        whisker_end = ax.transData.transform((s["p90_ms"], 0))[0]
        assert box.x0 > whisker_end
        assert box.x1 < ax.get_window_extent(renderer).x1  # inside the axes


def _edge_points(path: Path) -> list[tuple[float, float]]:
    """Every point (ends and control points) of every edge's path in Graphviz's SVG."""
    points = []
    for g in ET.parse(path).getroot().iter(f"{SVG}g"):
        if g.get("class") == "edge":
            for p in g.iter(f"{SVG}path"):
                points += [(float(x), float(y)) for x, y in re.findall(r"(-?[\d.]+),(-?[\d.]+)", p.get("d"))]
    return points


@needs_dot
def test_fused_group_labels_sit_beside_the_group_off_the_edges(small: Path, tmp_path: Path) -> None:
    """Item 10: in the before-fusion view, a fused group's label is not the cluster's own label (which
    Graphviz puts where edges run) but a box level with the group's first node, which no edge crosses."""
    svg = tmp_path / "both.svg"
    assert run_cli("graph", small, "-o", svg, "--view", "both").returncode == 0
    root = ET.parse(svg).getroot()
    groups = [g for g in root.iter(f"{SVG}g") if g.get("class") == "cluster"
              and g.find(f"{SVG}title").text.startswith("cluster_before_g")]
    assert groups and all(not list(g.iter(f"{SVG}text")) for g in groups)  # the cluster draws no label
    boxes = svg_boxes(svg)
    label = next(v for k, v in boxes.items() if k.startswith("before_g"))
    first = next(v for k, v in boxes.items() if k.startswith("before_n") and v[2].startswith("Conv\n"))
    assert label[2].startswith("fused: Conv+BatchNormalization+Relu") and "-> kernel k" in label[2]
    assert abs(label[1] - first[1]) < 15 and label[0] > first[0]  # level with the Conv, beside it
    half = 3 * max(len(t) for t in label[2].split("\n"))  # ~6 px per character at font size 9
    crossing = [(x, y) for x, y in _edge_points(svg) if abs(x - label[0]) < half and label[1] - 12 < y < label[1] + 22]
    assert not crossing, crossing


def test_graphviz_shrinking_the_picture_is_said(small: Path, tmp_path: Path) -> None:
    """Item 10: when the renderer scales a too-large picture down, the command says so (stderr, --json)."""
    fake = tmp_path / "dot"
    fake.write_text("#!/bin/sh\n"  # dot -Tpng IN -o OUT: writes OUT and warns as Graphviz's cairo renderer does
                    "echo 'Warning: graph is too large for cairo-renderer bitmaps. Scaling by 0.42 to fit' >&2\n"
                    "printf 'png' > \"$4\"\n")
    fake.chmod(0o755)
    png = tmp_path / "g.png"
    r = run_cli("graph", small, "-o", png, env={"CNNJIT_DOT": str(fake)})
    assert r.returncode == 0 and png.read_bytes() == b"png", r.stderr
    assert ("note: Graphviz: Warning: graph is too large for cairo-renderer bitmaps. Scaling by 0.42 to fit "
            "(try --collapse, --rankdir LR or an .svg/.pdf file)") in r.stderr
    doc = json.loads(run_cli("graph", small, "-o", png, "--json", env={"CNNJIT_DOT": str(fake)}).stdout)
    assert doc["rendered"] and doc["warnings"] == [
        "Warning: graph is too large for cairo-renderer bitmaps. Scaling by 0.42 to fit"]
