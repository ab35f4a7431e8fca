"""magi.atomic: a file is replaced whole or not at all."""

import pytest

from magi.atomic import atomic_write, atomic_write_text


def test_a_failed_write_leaves_the_old_file_and_no_litter(tmp_path):
    target = atomic_write_text(tmp_path / "play.json", '{"engine": "onnx"}\n')
    assert target.read_text() == '{"engine": "onnx"}\n'

    def half_then_fail(tmp):
        with open(tmp, "w") as f:
            f.write('{"eng')
        raise KeyboardInterrupt  # killed mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_fail)
    assert target.read_text() == '{"engine": "onnx"}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["play.json"]


def test_the_temporary_file_keeps_the_suffix(tmp_path):
    seen = []
    atomic_write(tmp_path / "loss.png", lambda tmp: (seen.append(tmp), open(tmp, "wb").close()))
    assert seen[0].endswith(".png") and (tmp_path / "loss.png").is_file()
