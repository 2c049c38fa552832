"""The lpd-engine command line: generate writes a grid (and per-image PNGs), schedule writes a
loadable schedule file, bad input exits with status 2 and a typed error message."""

import numpy as np
import pytest
from PIL import Image

from lpd_engine import schedule
from lpd_engine.cli import main


def test_generate_writes_grid_and_each_image(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["generate", "--labels", "1", "2", "3", "--steps", "8", "--seed", "1", "--out", str(out), "--each"]) == 0
    grid = Image.open(out)
    side = Image.open(tmp_path / "grid_000_class1.png").size[0]
    assert grid.size == (2 * side, 2 * side)  # 3 images on a 2x2 grid
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "grid.png", "grid_000_class1.png", "grid_001_class2.png", "grid_002_class3.png"]
    assert "3 images" in capsys.readouterr().out


def test_schedule_writes_published_table_and_orders(tmp_path):
    out = tmp_path / "s.npz"
    assert main(["schedule", "--grid", "16", "--steps", "20", "--count", "7", "--out", str(out)]) == 0
    s = schedule.load_schedule(out)
    assert s.group_sizes.tolist() == schedule.published_group_sizes(16, 20)
    assert s.orders.shape == (7, 256)
    assert np.array_equal(s.orders, schedule.locality_orders(16, s.group_sizes, 7, 0))


def test_bad_input_exits_with_typed_error(tmp_path, capsys):
    assert main(["generate", "--labels", "10", "--out", str(tmp_path / "x.png")]) == 2
    assert "InvalidLabelError" in capsys.readouterr().err
    assert main(["schedule", "--grid", "16", "--steps", "21", "--out", str(tmp_path / "s.npz")]) == 2
    assert "InvalidScheduleError" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("flags, message", [
    (["--precision", "bf16"], "--precision bf16 is the GPU's"),
    (["--device", "cuda", "--backend", "torch"], "native backend"),
])
def test_device_and_precision_conflicts_exit_with_a_message(tmp_path, flags, message):
    with pytest.raises(SystemExit, match=message):
        main(["generate", "--labels", "1", "--out", str(tmp_path / "x.png"), *flags])
    assert not any(tmp_path.iterdir())
