"""benchmarks/diamond_compare.py without a DIAMOND checkout (docs/export.md): its options are checked before anything
heavy loads, `--engine onnx|torch` (comma-separated for both) picks the play loop's engine, by default the one
`magi play` picks, and each engine it builds plays frames through the play stream. The comparison itself needs a
checkout (`make bench` skips it with the reason: tests/test_docs.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from magi.play.session import load_world
from magi.pretrained import SamplingOptions
from test_play import tiny_world_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark_diamond_compare", ROOT / "benchmarks" / "diamond_compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_world_model(tmp_path_factory.mktemp("diamond_model"))


def test_engine_option_picks_the_engines(bench, model, tmp_path):
    args = bench.parse_args([str(tmp_path), "--model", str(model)])
    assert args.engines == ["onnx"] and args.thread_counts == [1, 2]  # magi play's pick: DDIM, cfg 1 -> onnx
    args = bench.parse_args([str(tmp_path), "--model", str(model), "--engine", "onnx,torch", "--threads", "1"])
    assert args.engines == ["onnx", "torch"] and args.thread_counts == [1]
    assert bench.parse_args([str(tmp_path), "--model", str(model), "--engine", "torch"]).engines == ["torch"]
    # the model's play.json names the engine magi play runs: the default follows it
    (model / "play.json").write_text('{"engine": "torch"}')
    try:
        assert bench.parse_args([str(tmp_path), "--model", str(model)]).engines == ["torch"]
    finally:
        (model / "play.json").unlink()


@pytest.mark.parametrize("flags, named", [
    (["--engine", "tensorrt"], "engine: expected one of onnx, torch, got 'tensorrt'"),
    (["--engine", ","], "--engine: expected one or more of onnx, torch"),
    (["--threads", "0"], "--threads: expected thread counts >= 1"),
    (["--threads", "two"], "--threads: expected comma-separated integers"),
])
def test_bad_options_stop_in_one_line(bench, model, tmp_path, capsys, flags, named):
    with pytest.raises(SystemExit) as e:
        bench.parse_args([str(tmp_path), "--model", str(model), *flags])
    err = capsys.readouterr().err
    assert e.value.code == 2 and named in err and err.count("\n") == 1


def test_a_missing_model_or_checkout_is_named(bench, model, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        bench.parse_args([str(tmp_path), "--model", str(tmp_path / "nowhere")])
    assert e.value.code == 2 and str(tmp_path / "nowhere" / "config.json") in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        bench.load_diamond(tmp_path, 18)
    assert e.value.code == 2 and "not a DIAMOND checkout" in capsys.readouterr().err


def test_each_engine_plays_through_the_play_stream(bench, model, tmp_path):
    from magi.play.engine import OnnxEngine, TorchEngine
    from magi.world.stream_check import play_stream

    world = load_world(model)
    options = SamplingOptions(mask_steps=1, diffusion_steps=2, sampler="ddim", long_video="window", window=3)
    folder = tmp_path / "onnx"
    onnx = bench.build_engine("onnx", world, options, 1, folder)
    assert isinstance(onnx, OnnxEngine) and onnx.describe()["threads"] == 1 and (folder / "manifest.json").is_file()
    again = bench.build_engine("onnx", world, options, 2, folder)  # the second thread count reuses the export
    assert again.describe()["threads"] == 2
    torch_engine = bench.build_engine("torch", world, options, 1, folder)
    assert isinstance(torch_engine, TorchEngine)
    frames = {}
    for name, engine in (("onnx", onnx), ("torch", torch_engine)):
        stream = play_stream(world.ckpt, "Boxing", 1, 2, "ddim", 1.0, window=3, engine=engine)
        frames[name] = [next(stream)[0] for _ in range(3)]
        stream.close()
    for a, b in zip(frames["onnx"], frames["torch"]):  # the same seed: the same frames, to float rounding
        assert a.shape == (3, 64, 64) and a.dtype == torch.uint8
        assert (a.int() - b.int()).abs().max() <= 1
    with pytest.raises(ValueError, match="expected onnx or torch"):
        bench.build_engine("tvm", world, options, 1, folder)
