"""Importing a folder of frames into a local project: every file accounted for, nothing imported twice."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import ultralytics
from PIL import Image

from alp.cli import main
from alp.local.importer import import_folder
from alp.local.project import ProjectPaths
from alp.settings import Settings

ASSETS = Path(ultralytics.__file__).parent / "assets"


def _jpeg(image: Image.Image, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", **kwargs)
    return buf.getvalue()


@pytest.fixture
def awkward(tmp_path: Path) -> Path:
    """Nested folders, upper-case extensions, an EXIF-rotated photo, grayscale and 16-bit frames, a duplicate, a
    truncated JPEG, a text file named .jpg, a README, a symlink loop and a dangling link: 13 entries."""
    root = tmp_path / "frames"
    (root / "cam1" / "day2").mkdir(parents=True)
    bus = (ASSETS / "bus.jpg").read_bytes()
    (root / "cam1" / "bus.JPG").write_bytes(bus)
    (root / "cam1" / "day2" / "bus-copy.jpeg").write_bytes(bus)  # the same bytes: a duplicate
    (root / "zidane.jpg").write_bytes((ASSETS / "zidane.jpg").read_bytes())
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    (root / "cam1" / "rotated.jpg").write_bytes(_jpeg(Image.new("RGB", (120, 80), (200, 10, 10)), exif=exif))
    (root / "nir.png").write_bytes(_png(Image.fromarray(np.full((64, 96), 90, np.uint8), mode="L")))
    (root / "cam1" / "depth16.PNG").write_bytes(_png(Image.fromarray(np.full((64, 96), 40000, np.uint16))))
    (root / "cam1" / "day2" / "cut.jpg").write_bytes(bus[: len(bus) // 3])  # truncated
    (root / "notes.jpg").write_text("not an image at all\n")
    (root / "README.txt").write_text("frames from the test car\n")
    (root / "cam1" / "loop").symlink_to(root, target_is_directory=True)  # a loop back to the top
    (root / "dangling.jpg").symlink_to(root / "nowhere.jpg")
    (root / "tiny.jpg").write_bytes(_jpeg(Image.new("RGB", (8, 8))))  # under inference.min_image_side
    (root / "cam1" / "day2" / "Zidane.Jpeg").write_bytes((ASSETS / "zidane.jpg").read_bytes())  # duplicate, upper
    return root


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_every_file_is_imported_duplicate_or_quarantined_with_a_reason(awkward: Path, tmp_path: Path) -> None:
    settings = Settings()
    paths = ProjectPaths.of(tmp_path / "project", settings)
    report = import_folder(awkward, paths, settings)
    by_path = {o.path: o for o in report.outcomes}
    assert report.files == 13 == report.imported + report.duplicate + report.quarantined
    # the walk is depth first in name order, so the copy in cam1/day2 comes before the top-level one
    assert {p for p, o in by_path.items() if o.state == "imported"} == {
        "cam1/bus.JPG", "cam1/rotated.jpg", "cam1/depth16.PNG", "nir.png", "cam1/day2/Zidane.Jpeg"}
    assert by_path["cam1/day2/bus-copy.jpeg"].duplicate_of == "cam1/bus.JPG"
    assert by_path["zidane.jpg"].duplicate_of == "cam1/day2/Zidane.Jpeg"
    quarantined = {p: o.reason for p, o in by_path.items() if o.state == "quarantined"}
    assert quarantined == {"cam1/day2/cut.jpg": "truncated", "notes.jpg": "not_an_image", "README.txt":
                           "unsupported_extension", "cam1/loop": "symlink_loop", "dangling.jpg": "broken_link",
                           "tiny.jpg": "too_small"}, quarantined
    assert report.reasons == {r: 1 for r in quarantined.values()}
    # imported frames keep their relative path under the incoming prefix, byte for byte
    assert (paths.incoming / "cam1" / "bus.JPG").read_bytes() == (awkward / "cam1" / "bus.JPG").read_bytes()
    assert sorted(str(p.relative_to(paths.incoming)) for p in paths.incoming.rglob("*") if p.is_file()) == sorted(
        o.key for o in report.outcomes if o.key)


def test_a_second_import_imports_nothing_twice(awkward: Path, tmp_path: Path) -> None:
    settings = Settings()
    paths = ProjectPaths.of(tmp_path / "project", settings)
    first = import_folder(awkward, paths, settings)
    more = tmp_path / "more"
    more.mkdir()
    (more / "bus.jpg").write_bytes((ASSETS / "bus.jpg").read_bytes())  # seen before, under another name
    (more / "cam1").mkdir()
    (more / "cam1" / "bus.JPG").write_bytes(_jpeg(Image.new("RGB", (64, 64), (0, 90, 0))))  # the name, new bytes
    second = import_folder(more, paths, settings)
    assert (second.imported, second.duplicate) == (1, 1)
    renamed = next(o for o in second.outcomes if o.state == "imported")
    assert renamed.key is not None and renamed.key.startswith("cam1/bus-") and renamed.key.endswith(".JPG")
    assert (paths.incoming / "cam1" / "bus.JPG").read_bytes() == (awkward / "cam1" / "bus.JPG").read_bytes()
    assert first.imported + second.imported == len([p for p in paths.incoming.rglob("*") if p.is_file()])


def test_the_commands_print_counts_that_add_up(awkward: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["local", "add", "--images", str(awkward), "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["files"] == 13 and counts["imported"] + counts["duplicate"] + counts["quarantined"] == 13
    assert main(["local", "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["files"] == {**counts, "imports": 1}
    assert status["images"]["queued"] == counts["imported"] and not status["rounds"]  # nothing started yet
    assert main(["local", "status", "--project-dir", "elsewhere"]) == 2
    assert "alp local up --images DIR" in capsys.readouterr().err
    assert os.path.isdir(tmp_path / "alp-project" / "unlabeled")
