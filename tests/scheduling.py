"""Test order for ``pytest -n 2``: the longest tests first, and tests that build the same model on one worker.

Only the order changes: every collected test still runs, with the same assertions. ``conftest.py`` installs
``pytest_collection_modifyitems`` from here; ``pyproject.toml`` runs xdist with ``--dist loadgroup``, which
hands each worker one test (or one ``xdist_group``) at a time, in collection order, as it becomes free.

* Longest first: with the long tests at the front the workers' last tests are short ones, so both finish
  together (in collection order a 60 s model test that starts last keeps one worker busy while the other
  waits). ``LONG`` lists cold durations measured by ``.ci/run`` (empty kernel cache, 2 cores, ``-n 2``);
  an unlisted ``slow``-marked test counts as ``SLOW_DEFAULT_S``; a stale entry only moves a test.
* Shared builds: tests in one group of ``GROUPS`` run on the same worker one after the other, so the second
  finds the model's kernels in the process (or the disk cache) instead of compiling them again at the same
  time on the other worker (test_arm's cross builds are cached per process only); the tests of a file in
  ``MODULE_GROUPS`` likewise, so its module fixture is built once, not once per worker.
"""

from __future__ import annotations

import pytest

#: seconds, by node id or by test function (``file::name``, any parameters); from the 25 slowest tests of
#: four cold ``.ci/run`` logs and the s9 merge's cold cost log (the largest figure seen)
LONG: dict[str, float] = {
    "tests/test_passes.py::test_whole_pipeline_matches_unfused_interpreter": 91,  # 81 before its IR-only oracle
    "tests/test_cli_large.py::test_ppocr_recognizer_runs_and_lists_every_call_with_flops": 62,
    "tests/test_models.py::test_light_model[light_densenet121]": 60,
    "tests/test_corpus.py::test_corpus_model_matches_onnxruntime[mobilenet_v3_small_qstatic]": 72,
    "tests/test_corpus.py::test_corpus_model_matches_onnxruntime[ppocr_v4_det]": 62,
    "tests/test_fuzz.py::test_fuzz_weird_valid_graphs": 39,
    "tests/test_corpus.py::test_corpus_model_matches_onnxruntime[yolov8_head_qstatic]": 44,
    "tests/test_arm.py::test_model_matches_host[mnv2]": 39,
    "tests/test_models.py::test_light_model[light_inception_v2]": 60,
    "tests/test_corpus.py::test_corpus_model_matches_onnxruntime[ddddocr_det]": 54,
    "tests/test_recurrent.py::test_dynamic_quantize_lstm_matches_onnxruntime": 37,
    "tests/test_int8.py::test_qconv_kernels_exact": 30,
    "tests/test_qint_i16.py::test_dense_i16_exact": 25,
    "tests/test_corpus.py::test_corpus_model_matches_onnxruntime[ppocr_v4_rec]": 51,
    "tests/test_models.py::test_light_model[light_inception_v1]": 87,
    "tests/test_arm.py::test_model_matches_host[resnet]": 46,
    "tests/test_corpus.py::test_corpus_model_matches_onnxruntime[mobilenet_v3_small_qdynamic]": 28,
    "tests/test_recurrent.py::test_recurrent_layers_match_onnxruntime": 27,
    "tests/test_int8.py::test_ptq_mobilenet_v2": 100,
    "tests/test_arm.py::test_model_matches_host[vww]": 34,
    "tests/test_models.py::test_light_model[light_vgg19]": 34,
    "tests/test_recurrent.py::test_ddddocr_crnn_matches_onnxruntime": 36,
    "tests/test_passes.py::test_each_pass_alone_matches_unfused_interpreter": 22,
    "tests/test_models.py::test_light_model[light_shufflenet]": 25,
    "tests/test_vector_epilogue.py::test_every_activation_in_registers[dense-8]": 35,
    "tests/test_int8.py::test_ptq_methods_and_int8_activations": 49,
    "tests/test_compile_cache.py::test_cli_cache_info_warm_clear": 12,  # 21 before 6 of its 10 commands ran in process
    "tests/test_int8.py::test_qdepthwise_wide_exact": 27,
    "tests/test_passes.py::test_numba_entry_matches_unfused_interpreter": 11,  # 19 before, likewise
    "tests/test_cli_misc.py::test_shape_checked_up_front_with_one_error": 25,
    "tests/test_convtranspose.py::test_simd_shuffle_at_width[16]": 19,
    "tests/test_cli_graph.py::test_format_from_file_name": 14,
    "tests/test_cli_peers.py::test_run_fill_modes_match_onnxruntime": 16,
    # first seen in the s6 stop's cold log (2 cores shared with other work: its figures run high)
    "tests/test_simd_widths.py::test_depthwise_kernel_at_width[4]": 51,
    "tests/test_thread_splits.py::test_split_along_the_part_space": 50,
    "tests/test_corpus.py::test_corpus_model_matches_onnxruntime[yolov8_head]": 50,
    "tests/test_memory_share.py::test_dense_conv_over_its_input_exact": 94,
    "tests/test_simd_widths.py::test_depthwise_kernel_at_width[8]": 44,
    "tests/test_arm.py::test_int8_bit_exact_under_qemu[ortq]": 61,
    "tests/test_corpus.py::test_corpus_model_matches_onnxruntime[ppocr_cls]": 35,
    "tests/test_depthwise.py::test_depthwise_sweeps_at_register_budget[8]": 33,
    # first seen in the s9 merge's cold cost log (tests/cost_log.py, 2061 tests, both workers done within 5 s)
    "tests/test_models.py::test_light_model[light_resnet50]": 30,
    "tests/test_spatial_parts.py::test_spatial_parts_when_they_balance_as_well": 34,
    "tests/test_simd_widths.py::test_short_row_depthwise_kernel_at_width[4]": 29,
    "tests/test_qgemm16.py::test_pointwise_i16_exact": 29,
    "tests/test_models.py::test_light_model[light_squeezenet]": 26,
    "tests/test_pruning.py::test_saved_model_matches_onnxruntime[kw0]": 24,
    "tests/test_int8.py::test_ptq_accuracy[mobilenet_v1_025_96]": 42,
    "tests/test_benchmark_models.py::test_generated_model_matches_onnxruntime[mobilenet_v2_224-unfused]": 24,
    "tests/test_arm.py::test_artifact_checks_and_neon_fma[mnv2]": 24,
    "tests/test_models.py::test_light_model[light_zfnet512]": 23,
    # first seen in the s15 merge's cold .ci/run (ci2, 2 cores shared with other work, 25 slowest)
    "tests/test_loops.py::test_slanet_table": 97,
    "tests/test_passes.py::test_each_pass_alone_matches_unfused_interpreter[cancel_transposes1]": 64,
    "tests/test_passes.py::test_each_pass_alone_matches_unfused_interpreter[convtranspose_phases]": 47,
    "tests/test_passes.py::test_each_pass_alone_matches_unfused_interpreter[sink_reshapes]": 46,
    "tests/test_passes.py::test_each_pass_alone_matches_unfused_interpreter[fold_batchnorm]": 38,
}
#: an unlisted test marked ``slow`` (a large model): assumed this long
SLOW_DEFAULT_S = 20.0

#: group name -> node ids that build the same model (same options and shapes, so the same kernels)
GROUPS: dict[str, tuple[str, ...]] = {
    "ppocr_v4_rec": ("tests/test_corpus.py::test_corpus_model_matches_onnxruntime[ppocr_v4_rec]",
                     "tests/test_cli_large.py::test_ppocr_recognizer_runs_and_lists_every_call_with_flops"),
    "ddddocr_ocr": ("tests/test_corpus.py::test_corpus_model_matches_onnxruntime[ddddocr_ocr]",
                    "tests/test_recurrent.py::test_ddddocr_crnn_matches_onnxruntime[False-1e-05]"),
    "arm_kws": ("tests/test_arm.py::test_model_matches_host[kws]",
                "tests/test_arm.py::test_artifact_checks_and_neon_fma[kws]",
                "tests/test_arm.py::test_shared_library_links"),
    "arm_mnv2": ("tests/test_arm.py::test_model_matches_host[mnv2]",
                 "tests/test_arm.py::test_artifact_checks_and_neon_fma[mnv2]"),
    # the same float model at the same shape in three files: the later ones find it compiled in the process
    "mobilenet_v2_224": ("tests/test_int8.py::test_ptq_mobilenet_v2",
                         "tests/test_benchmark_models.py::test_generated_model_matches_onnxruntime[mobilenet_v2_224-fused]",
                         "tests/test_bf16.py::test_bf16_accuracy_on_real_models[mobilenet_v2_224]"),
    "ddddocr_det": ("tests/test_corpus.py::test_corpus_model_matches_onnxruntime[ddddocr_det]",
                    "tests/test_winograd.py::test_ddddocr_detector_matches_onnxruntime"),
    "ppocr_cls": ("tests/test_corpus.py::test_corpus_model_matches_onnxruntime[ppocr_cls]",
                  "tests/test_bf16.py::test_bf16_accuracy_on_real_models[ppocr_cls]"),
}
_GROUP_OF = {nodeid: name for name, ids in GROUPS.items() for nodeid in ids}
#: test files whose module-scoped fixture compiles into a cache folder of its own (a cold compile and a native
#: object each time it runs): all their tests in one group (named after the file), so the fixture runs on one
#: worker; spread over both, each worker would build it cold
MODULE_GROUPS = ("tests/test_warm_parallel.py", "tests/test_warm_start.py")


def group_of(nodeid: str) -> str | None:
    """The ``xdist_group`` of the test ``nodeid``: its entry in ``GROUPS``, else its file's in
    ``MODULE_GROUPS``, else none."""
    group = _GROUP_OF.get(nodeid)
    if group is None:
        path = nodeid.split("::", 1)[0]
        group = path if path in MODULE_GROUPS else None
    return group


def expected_seconds(item: pytest.Item) -> float:
    """The cold duration ``LONG`` gives ``item`` (by node id, else by function), else ``SLOW_DEFAULT_S`` when
    it is marked ``slow``, else 0."""
    nodeid = item.nodeid
    for key in (nodeid, nodeid.split("[", 1)[0]):
        if key in LONG:
            return LONG[key]
    return SLOW_DEFAULT_S if item.get_closest_marker("slow") is not None else 0.0


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Longest expected first (stable: the rest keep their collection order), a group's tests together at
    the place of its longest one, each marked with its ``xdist_group``."""
    units: dict[str, tuple[float, int]] = {}  # group -> (its longest test's seconds, its first position)
    for i, item in enumerate(items):
        group = group_of(item.nodeid)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
            s, first = units.get(group, (0.0, i))
            units[group] = (max(s, expected_seconds(item)), first)
    position = {id(item): i for i, item in enumerate(items)}

    def key(item: pytest.Item) -> tuple[float, int, int]:
        i = position[id(item)]
        group = group_of(item.nodeid)
        s, first = units[group] if group is not None else (expected_seconds(item), i)
        return -s, first, i

    items.sort(key=key)
