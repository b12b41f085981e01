"""A corpus of crafted bad inputs, generated here: 0 crashes, 0 losses, each classified with a reason.

Every input goes through the code that meets it in production: image bytes through the Infer step's
reader and decoder (:func:`inference.runner.load_image`), object keys and SQS bodies through the batcher's
parser, batch-manifest lines through :func:`inference.runner.run_batch` (one line per run, so a lost line
shows), and worker answers through the consolidation parsers. Time and memory are measured per input
(``perf_counter``, ``tracemalloc`` peak) and bounded generously (the issue's 2 s and 512 MB); the maxima
are recorded in docs/reliability.md.
"""

from __future__ import annotations

import io
import json
import resource
import struct
import time
import tracemalloc
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote_plus

import numpy as np
import pytest
from PIL import Image

from alp.batching.events import SqsRecord, parse_record
from alp.labeling.answers import WorkerAnswerError, parse_box_answer, parse_keypoint_answer
from alp.labeling.contracts import HEAD_ELEMENT, KEYPOINT_ELEMENT, VISIBILITY_PREFIX
from alp.manifest import MAX_LINE_CHARS
from alp.settings import Settings
from inference.image_io import DecodedImage
from inference.judgement import InputRejected
from inference.runner import load_image, run_batch

SETTINGS = Settings()
BUCKET = "alp-123456789012-us-east-1-unlabeled"
MAX_SECONDS = 2.0
MAX_BYTES = 512 * 1024 * 1024
NAMES = SETTINGS.schema_.names


@dataclass(frozen=True)
class Case:
    category: str
    name: str
    run: Callable[[], tuple[str, str]]  # -> (verdict, reason)
    expect: str  # a substring the "verdict: reason" must contain


# --- images --------------------------------------------------------------------------------------------
def _encode(pixels: np.ndarray | Image.Image, fmt: str, **kw: object) -> bytes:
    im = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _rgb(w: int = 64, h: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h pixels, with almost no pixel data behind it."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        _chunk(b"IEND", b"")


def _png_zlib_bomb(side: int) -> bytes:
    """A real decompression bomb: a side x side gray PNG of zeros (tens of KB, tens of MB decoded)."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (side + 1)
    body = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def _jpeg_claiming(w: int, h: int) -> bytes:
    data = bytearray(_encode(_rgb(), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", h, w)
    return bytes(data)


def _corrupt_png() -> bytes:
    data = bytearray(_encode(_rgb(), "PNG"))
    idat = data.index(b"IDAT")
    for i in range(idat + 8, idat + 40):
        data[i] ^= 0x5A
    return bytes(data)


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(_rgb(64, 48), "JPEG", exif=exif.tobytes())


def _float_nan_tiff() -> bytes:
    arr = np.full((40, 40), np.nan, dtype=np.float32)
    return _encode(Image.fromarray(arr, mode="F"), "TIFF")


def _image_cases(tmp: Path) -> list[Case]:
    jpeg = _encode(_rgb(), "JPEG")
    png = _encode(_rgb(), "PNG")
    rgba = np.dstack([_rgb(), np.full((48, 64), 128, np.uint8)])
    palette = Image.fromarray(_rgb()).convert("P")
    palette.info["transparency"] = 0
    inputs: dict[str, tuple[bytes, str]] = {
        "valid-jpeg": (jpeg, "accepted"),
        "valid-png": (png, "accepted"),
        "valid-webp": (_encode(_rgb(), "WEBP"), "accepted"),
        "valid-bmp": (_encode(_rgb(), "BMP"), "accepted"),
        "16-bit-gray-png": (_encode(Image.fromarray(_rgb()[..., 0].astype(np.uint16) * 200), "PNG"), "accepted"),
        "cmyk-jpeg": (_encode(Image.fromarray(_rgb()).convert("CMYK"), "JPEG"), "accepted"),
        "rgba-png": (_encode(rgba, "PNG"), "accepted"),
        "palette-transparent-png": (_encode(palette, "PNG"), "accepted"),
        "exif-rotated-jpeg": (_exif_rotated(), "accepted: 48x64"),
        "empty-file": (b"", "empty_file"),
        "one-byte": (b"\xff", "not_an_image"),
        "zeros-4k": (b"\x00" * 4096, "not_an_image"),
        "truncated-jpeg-10pct": (jpeg[: len(jpeg) // 10], "quarantine"),
        "truncated-jpeg-50pct": (jpeg[: len(jpeg) // 2], "truncated"),
        "truncated-jpeg-95pct": (jpeg[: len(jpeg) * 95 // 100], "truncated"),
        "truncated-png-50pct": (png[: len(png) // 2], "quarantine"),
        "corrupt-png-idat": (_corrupt_png(), "quarantine"),
        "png-header-bomb-100k-squared": (_png_header_only(100_000, 100_000), "too_many_pixels"),
        "jpeg-sof-bomb-65000-squared": (_jpeg_claiming(65000, 65000), "too_many_pixels"),
        "png-zlib-bomb-8000-squared": (_png_zlib_bomb(8000), "too_many_pixels"),
        "png-1x1": (_encode(_rgb(1, 1), "PNG"), "too_small"),
        "png-4000x1-sliver": (_encode(_rgb(4000, 1), "PNG"), "too_small"),
        "float-tiff-nan": (_float_nan_tiff(), "bad_pixels"),
        "gif": (_encode(_rgb(), "GIF"), "unsupported_format"),
        "ico": (_encode(_rgb(32, 32), "ICO"), "unsupported_format"),
        "ppm": (_encode(_rgb(), "PPM"), "unsupported_format"),
        "eps-never-rendered": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 48\nshowpage\n", "quarantine"),
        "pdf": (b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n", "not_an_image"),
        "svg-with-script": (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "not_an_image"),
        "html": (b"<html><body><img src=x onerror=alert(1)></body></html>", "not_an_image"),
        "heic-ftyp": (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64, "not_an_image"),
        "zip": (b"PK\x03\x04" + b"\x00" * 64, "not_an_image"),
        "elf": (b"\x7fELF\x02\x01\x01" + b"\x00" * 64, "not_an_image"),
        "pickle": (b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94.", "not_an_image"),
    }
    cases = []
    for name, (data, expect) in inputs.items():
        path = tmp / f"{name}.img"
        path.write_bytes(data)

        def run(path: Path = path) -> tuple[str, str]:
            out = load_image(str(path), SETTINGS)
            if isinstance(out, DecodedImage):
                return "accepted", f"{out.width}x{out.height} {out.format}"
            assert isinstance(out, InputRejected)
            return "quarantine", f"{out.reason}: {out.detail}"

        cases.append(Case("image", name, run, expect))
    missing = tmp / "does-not-exist.jpg"
    cases.append(Case("image", "missing-object", lambda: _as_route(load_image(str(missing), SETTINGS)),
                      "missing_object"))
    return cases


def _as_route(out: DecodedImage | InputRejected) -> tuple[str, str]:
    if isinstance(out, DecodedImage):
        return "accepted", out.format
    return "quarantine", f"{out.reason}: {out.detail}"


# --- object keys and SQS bodies (the batcher) ----------------------------------------------------------
def _eventbridge(key: str, bucket: str = BUCKET) -> str:
    return json.dumps({"version": "0", "id": "e", "detail-type": "Object Created", "source": "aws.s3",
                       "time": "2026-11-21T08:00:00Z", "detail": {"bucket": {"name": bucket}, "object": {
                           "key": quote_plus(key, safe="/"), "size": 10, "etag": "e", "version-id": "v"}}})


def _batcher(body: str) -> tuple[str, str]:
    events = parse_record(SqsRecord(messageId="m", body=body), unlabeled_bucket=BUCKET, unlabeled_prefix="incoming/")
    assert len(events) == 1, events
    ev = events[0]
    verdict = {"object": "batched", "quarantine": "quarantine", "ignored": "ignored", "malformed": "retried"}[ev.kind]
    return verdict, ev.reason or (ev.obj.key if ev.obj else "")


def _key_cases() -> list[Case]:
    keys = {
        "plain": ("incoming/cam1/frame-001.jpg", "batched"),
        "space-and-plus": ("incoming/red flower+1.jpg", "batched"),
        "unicode-accents": ("incoming/café/été.jpg", "batched"),
        "unicode-emoji": ("incoming/🚗/👀.jpg", "batched"),
        "rtl-override": ("incoming/gpj.\u202eexe.jpg", "batched"),
        "dotdot-segment": ("incoming/../../etc/passwd", "quarantine: unsafe object key"),
        "dotdot-percent-lower": ("incoming/%2e%2e/secret.jpg", "quarantine: unsafe object key"),
        "dotdot-percent-upper": ("incoming/%2E%2E/%2E%2E/x.jpg", "quarantine: unsafe object key"),
        "dot-segment": ("incoming/./x.jpg", "quarantine: unsafe object key"),
        "leading-slash": ("/incoming/x.jpg", "quarantine: unsafe object key"),
        "backslash": ("incoming\\..\\x.jpg", "quarantine: unsafe object key"),
        "newline": ("incoming/line\nbreak.jpg", "quarantine: unsafe object key"),
        "nul": ("incoming/nul\x00.jpg", "quarantine: unsafe object key"),
        "escape-sequence": ("incoming/\x1b[31mred.jpg", "quarantine: unsafe object key"),
        "delete-char": ("incoming/del\x7f.jpg", "quarantine: unsafe object key"),
        "very-long-1100-bytes": ("incoming/" + "a" * 1100 + ".jpg", "quarantine: unsafe object key"),
        "long-but-legal-1000-bytes": ("incoming/" + "é" * 490 + ".jpg", "batched"),
        "outside-prefix": ("elsewhere/x.jpg", "ignored"),
        "folder-placeholder": ("incoming/cam9/", "ignored"),
    }
    cases = [Case("key", name, (lambda k=key: _batcher(_eventbridge(k))), expect)
             for name, (key, expect) in keys.items()]
    cases.append(Case("key", "other-bucket", lambda: _batcher(_eventbridge("incoming/x.jpg", "someone-else")),
                      "ignored"))
    bodies = {
        "s3-test-event": (json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-11-21T08:00:00Z",
                                      "Bucket": BUCKET, "RequestId": "R", "HostId": "H"}), "ignored: S3 test event"),
        "object-deleted": (json.dumps({"detail-type": "Object Deleted", "source": "aws.s3", "detail": {}}), "ignored"),
        "body-not-json": ("{not json", "retried: message body is not JSON"),
        "body-json-array": ("[1, 2]", "retried"),
        "eventbridge-without-detail": (json.dumps({"detail-type": "Object Created", "source": "aws.s3"}), "retried"),
        "key-is-a-number": (json.dumps({"detail-type": "Object Created", "source": "aws.s3", "detail": {
            "bucket": {"name": BUCKET}, "object": {"key": 7}}}), "retried"),
    }
    cases += [Case("event", name, (lambda b=body: _batcher(b)), expect) for name, (body, expect) in bodies.items()]
    return cases


# --- batch manifest lines (the Infer step) -------------------------------------------------------------
def _manifest_cases(tmp: Path) -> list[Case]:
    good_image = tmp / "line-target.jpg"
    good_image.write_bytes(_encode(_rgb(), "JPEG"))
    lines = {
        "valid-line": (json.dumps({"source-ref": str(good_image)}), "human: no_model"),
        "not-json": ("source-ref: s3://b/x.jpg", "quarantine: bad_manifest_line"),
        "json-array": ('["s3://b/x.jpg"]', "bad_manifest_line"),
        "json-number": ("42", "bad_manifest_line"),
        "json-string": ('"s3://b/x.jpg"', "bad_manifest_line"),
        "missing-source-ref": (json.dumps({"image": "s3://b/x.jpg"}), "bad_manifest_line"),
        "source-ref-number": (json.dumps({"source-ref": 12}), "bad_manifest_line"),
        "source-ref-empty": (json.dumps({"source-ref": ""}), "bad_manifest_line"),
        "source-ref-list": (json.dumps({"source-ref": ["s3://b/x.jpg"]}), "bad_manifest_line"),
        "inline-source": (json.dumps({"source": "some text"}), "no_source_ref"),
        "nan-literal": (f'{{"source-ref": "{good_image}", "score": NaN}}', "bad_manifest_line"),
        "infinity-literal": (f'{{"source-ref": "{good_image}", "score": -Infinity}}', "bad_manifest_line"),
        "deeply-nested": ('{"source-ref": "x", "a": ' + "[" * 20000 + "]" * 20000 + "}", "bad_manifest_line"),
        "over-100kb": (json.dumps({"source-ref": str(good_image), "pad": "x" * MAX_LINE_CHARS}), "bad_manifest_line"),
        "http-source-ref": (json.dumps({"source-ref": "http://169.254.169.254/latest/meta-data/"}), "bad_location"),
        "s3-dotdot-source-ref": (json.dumps({"source-ref": "s3://bucket-x/incoming/../../secret"}), "bad_location"),
        "s3-bad-bucket": (json.dumps({"source-ref": "s3://UPPER_case/x.jpg"}), "bad_location"),
        "missing-file": (json.dumps({"source-ref": str(tmp / "gone.jpg")}), "missing_object"),
        "invalid-utf8": (b'{"source-ref": "\xff\xfe"}'.decode("latin-1"), "quarantine"),
    }
    cases = []
    for i, (name, (text, expect)) in enumerate(lines.items()):
        path = tmp / f"manifest-{i}.jsonl"
        path.write_text(text + "\n", encoding="utf-8")

        def run(path: Path = path, i: int = i) -> tuple[str, str]:
            summary = run_batch(str(path), str(tmp / f"out-{i}"), SETTINGS, engine=None)
            assert summary.inputs == 1 and sum(summary.routes.values()) == 1, summary  # nothing lost
            route = next(r for r, n in summary.routes.items() if n)
            reasons = summary.quarantine_reasons or summary.human_reasons
            out = json.loads((tmp / f"out-{i}" / f"{'quarantine' if route == 'quarantine' else 'human'}.jsonl")
                             .read_text().splitlines()[0])
            detail = (out.get("alp-quarantine") or out.get("alp-route") or {}).get("detail", "")
            return route, f"{', '.join(reasons)} {detail}".strip()

        cases.append(Case("manifest", name, run, expect))
    return cases


# --- worker answers (the consolidation Lambda) ---------------------------------------------------------
def _box_answer(boxes: object, w: object = 640, h: object = 480) -> str:
    return json.dumps({HEAD_ELEMENT: {"boundingBoxes": boxes, "inputImageProperties": {"width": w, "height": h}}})


def _kp_answer(x: object = 10.0, label: object = NAMES[0], visibility: object = "visible") -> str:
    data: dict[str, object] = {KEYPOINT_ELEMENT: {"keypoints": [{"label": label, "x": x, "y": 20.0}],
                                                  "inputImageProperties": {"width": 640, "height": 480}}}
    for n in NAMES:
        data[VISIBILITY_PREFIX + n] = visibility if n == NAMES[0] else "outside"
    return json.dumps(data)


def _answer(kind: str, content: str) -> tuple[str, str]:
    try:
        if kind == "box":
            ans = parse_box_answer("w1", content)
            return "accepted", f"{len(ans.boxes)} boxes"
        kp = parse_keypoint_answer("w1", content, NAMES)
        return "accepted", f"{sum(p[2] > 0 for p in kp.points)} points"
    except WorkerAnswerError as exc:
        return "rejected", str(exc)


def _answer_cases() -> list[Case]:
    box = {"label": "head", "left": 10, "top": 10, "width": 50, "height": 60}
    answers = {
        "box-valid": ("box", _box_answer([box]), "accepted: 1 boxes"),
        "box-nan": ("box", _box_answer([box]).replace('"left": 10', '"left": NaN'), "rejected: NaN"),
        "box-infinity": ("box", _box_answer([box]).replace('"width": 50', '"width": Infinity'), "rejected"),
        "box-outside-image": ("box", _box_answer([{**box, "left": 900}]), "rejected: box 0 lies outside"),
        "box-negative-size": ("box", _box_answer([{**box, "width": -5}]), "rejected: box 0 has no area"),
        "box-string-number": ("box", _box_answer([{**box, "top": "10"}]), "rejected: box 0 top is str"),
        "box-bool-number": ("box", _box_answer([{**box, "top": True}]), "rejected"),
        "box-script-label": ("box", _box_answer([{**box, "label": "<script>alert(1)</script>"}]), "markup"),
        "box-html-label": ("box", _box_answer([{**box, "label": "<img src=x onerror=alert(1)>"}]), "markup"),
        "box-zero-image": ("box", _box_answer([box], 0, 0), "rejected: image size"),
        "box-no-element": ("box", json.dumps({"other": {}}), "rejected: no"),
        "box-not-json": ("box", "<html>thanks</html>", "rejected: answer is not JSON"),
        "box-deeply-nested": ("box", "[" * 100_000, "rejected"),
        "box-2000-boxes": ("box", _box_answer([box] * 2_000), "accepted: 2000 boxes"),
        "kp-valid": ("kp", _kp_answer(), "accepted: 1 points"),
        "kp-nan": ("kp", _kp_answer().replace('"x": 10.0', '"x": NaN'), "rejected"),
        "kp-outside-image": ("kp", _kp_answer(x=5000.0), "rejected: point left_eye lies outside"),
        "kp-unknown-label": ("kp", _kp_answer(label="tail"), "rejected: point 0 has unknown label"),
        "kp-script-visibility": ("kp", _kp_answer(visibility="<script>x</script>"), "markup"),
        "kp-visibility-missing": ("kp", _kp_answer(visibility=None), "rejected: visibility of left_eye"),
    }
    return [Case("answer", name, (lambda k=kind, c=content: _answer(k, c)), expect)
            for name, (kind, content, expect) in answers.items()]


# --- the run -------------------------------------------------------------------------------------------
def _measure(case: Case) -> tuple[str, str, float, int]:
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        verdict, reason = case.run()
    except Exception as exc:  # a crash: recorded, then the test fails naming the input
        verdict, reason = "CRASH", f"{type(exc).__name__}: {exc}"[:300]
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return verdict, reason, seconds, peak


def test_given_the_bad_input_corpus_then_no_crash_no_loss_and_every_input_classified_with_a_reason(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = _image_cases(tmp_path) + _key_cases() + _manifest_cases(tmp_path) + _answer_cases()
    assert len(cases) >= 60
    assert len({(c.category, c.name) for c in cases}) == len(cases)
    rows = []
    for case in cases:
        verdict, reason, seconds, peak = _measure(case)
        rows.append((case, verdict, reason, seconds, peak))
    crashes = [(c.name, r) for c, v, r, _, _ in rows if v == "CRASH"]
    assert not crashes, f"inputs that crashed: {crashes}"
    for case, verdict, reason, seconds, peak in rows:
        text = f"{verdict}: {reason}"
        assert reason.strip(), f"{case.category}/{case.name}: classified {verdict} without a reason"
        assert case.expect in text, f"{case.category}/{case.name}: expected {case.expect!r}, got {text[:300]!r}"
        assert seconds < MAX_SECONDS, f"{case.name}: {seconds:.2f} s"
        assert peak < MAX_BYTES, f"{case.name}: {peak / 2**20:.0f} MiB"
    slowest = max(rows, key=lambda r: r[3])
    biggest = max(rows, key=lambda r: r[4])
    by_category: dict[str, int] = {}
    for case, *_ in rows:
        by_category[case.category] = by_category.get(case.category, 0) + 1
    report = {
        "inputs": len(rows), "by_category": by_category, "crashes": 0,
        "verdicts": {v: sum(1 for r in rows if r[1] == v) for v in sorted({r[1] for r in rows})},
        "max_seconds": round(slowest[3], 4), "max_seconds_input": slowest[0].name,
        "max_traced_mib": round(biggest[4] / 2**20, 1), "max_traced_input": biggest[0].name,
        "process_max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    with capsys.disabled():
        print("\nbad-input corpus:", json.dumps(report, sort_keys=True))


def test_given_a_deeply_nested_sqs_body_then_the_batcher_classifies_it_instead_of_failing_the_window() -> None:
    verdict, reason = _batcher("[" * 100_000)
    assert verdict == "retried" and reason
