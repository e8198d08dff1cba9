"""`sovkit serving predict|calibrate` through the real CLI: the --json keys scripts rely on, the table, errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from sovkit.planner.calibration import CATALOG_POINTS
from tests.conftest import CliResult, run_cli

Cli = Callable[..., CliResult]
STABLE_KEYS = {"prefill_ms", "decode_step_ms", "kv_bytes_per_token", "max_batch", "calibrated"}


def test_predict_json_keys(cli: Cli) -> None:
    r = cli("serving", "predict", "--model-config", "llama-3.1-8b", "--accelerator", "nvidia-h100-sxm", "--tp", "1",
            "--prompt-tokens", "1024", "--batch", "4", "--context-tokens", "2048", "--dtype", "fp8", "--json")
    assert r.code == 0, r.text
    out = json.loads(r.out)
    assert set(out) >= STABLE_KEYS
    assert {"prefill_tokens_per_s", "decode_tokens_per_s", "power_prefill_w", "power_decode_w",
            "prefill_tokens_per_j", "decode_tokens_per_j", "prefill_bound", "decode_bound",
            "calibration_source"} <= set(out)
    assert out["kv_bytes_per_token"] == 131072 and out["dtype"] == "fp8" and out["context_tokens"] == 2048
    assert out["calibrated"] is True and out["calibration_source"].startswith("catalog: ")
    assert out["prefill_ms"] > 0 and out["decode_step_ms"] > 0 and out["max_batch"] > 4


def test_predict_uncalibrated_device_says_so(cli: Cli) -> None:
    r = cli("serving", "predict", "--model-config", "ax-4.0-light", "--accelerator", "furiosa-rngd",
            "--prompt-tokens", "512", "--json")
    out = json.loads(r.out)
    assert out["calibrated"] is False and "uncalibrated" in out["calibration_source"]
    table = cli("serving", "predict", "--model-config", "ax-4.0-light", "--accelerator", "furiosa-rngd",
                "--prompt-tokens", "512")
    assert table.code == 0 and "uncalibrated" in table.out and "max batch" in table.out


def test_k1_on_a_decode_npu_host_says_why_it_does_not_fit(cli: Cli) -> None:
    r = cli("serving", "predict", "--model-config", "ax-k1", "--accelerator", "rebellions-atom-max", "--tp", "8",
            "--prompt-tokens", "2048", "--dtype", "int8")
    assert r.code == 0, r.text
    assert "max batch 0" in r.out and "does not fit" in r.out and "needs tp >=" in r.out
    assert "64.9 GB per device" in r.out  # 519B int8 weights over 8 devices


def test_model_config_path_works(cli: Cli, tmp_path: Path) -> None:
    cfg = tmp_path / "tiny" / "config.json"
    cfg.parent.mkdir()
    cfg.write_text(json.dumps({"num_hidden_layers": 2, "hidden_size": 256, "num_attention_heads": 4,
                               "intermediate_size": 512, "vocab_size": 1000}), encoding="utf-8")
    r = cli("serving", "predict", "--model-config", cfg, "--accelerator", "nvidia-l40s", "--prompt-tokens", "8",
            "--json")
    assert r.code == 0, r.text
    assert json.loads(r.out)["model"] == "tiny"


def test_bad_input_is_one_message_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "config.json"
    bad.write_text('{"hidden_size": 64}', encoding="utf-8")
    r = run_cli("serving", "predict", "--model-config", bad, "--accelerator", "nvidia-h100-sxm", "--prompt-tokens",
                "8", "--json")
    assert r.code != 0
    assert "Traceback" not in r.text
    assert r.err.count("error:") == 1 and "'num_hidden_layers' is missing" in r.err and "hint:" in r.err
    r = run_cli("serving", "calibrate", tmp_path / "absent.csv")
    assert r.code != 0 and "Traceback" not in r.text and "cannot read" in r.err


def test_calibrate_writes_a_site_file_that_predict_uses(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "site-cal.yaml"
    r = cli("serving", "calibrate", CATALOG_POINTS, "--write", out)
    assert r.code == 0, r.text
    assert "held out" in r.out and "mean absolute error" in r.out and out.exists()
    j = cli("serving", "calibrate", CATALOG_POINTS, "--json")
    doc = json.loads(j.out)
    assert {"calibrations", "points", "mean_abs_error_holdout_pct"} <= set(doc)
    assert any(p["holdout"] for p in doc["points"])
    p = cli("serving", "predict", "--model-config", "opt-13b", "--accelerator", "nvidia-a100-80gb-sxm",
            "--prompt-tokens", "512", "--calibration", out, "--json")
    assert json.loads(p.out)["calibration_source"].startswith(f"site: {out}: fitted from")
