"""``alp bench infer`` runs end to end and reports the ratio (speed itself is never asserted in tests)."""

from __future__ import annotations

import json

import pytest

from alp.cli import main as cli_main


@pytest.mark.slow
def test_bench_infer_prints_engine_naive_speedup_and_agreement(capsys):
    rc = cli_main(["bench", "infer", "--images", "2", "--imgsz", "160", "--repeats", "1", "--batch", "2", "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("engine_ms_median", "naive_ms_median", "speedup", "same_persons", "persons_agreement"):
        assert key in result
    assert result["engine_ms_median"] > 0 and result["naive_ms_median"] > 0
    assert result["speedup"] == pytest.approx(result["naive_ms_median"] / result["engine_ms_median"], rel=0.01)
    assert result["same_persons"] is True, result["persons_agreement"]
    # the shipped precision (int8 by default) is the headline; fp32 is reported beside it
    assert result["engine_precision"] == "int8"
    assert result["engine_ms_median"] == result["engine_int8_ms_median"]
    assert result["speedup_fp32"] == pytest.approx(result["naive_ms_median"] / result["engine_fp32_ms_median"],
                                                   rel=0.01)
    int8 = result["int8_vs_fp32"]
    assert int8["persons"] > 0 and int8["found_share"] is not None and int8["median_abs_conf_diff"] is not None
