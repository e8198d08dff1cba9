"""Model shapes from config.json: parameter counts and KV bytes against hand-computed values; clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sovkit.errors import PlannerError
from sovkit.planner.modelshape import load_model, read_config, shipped_models


def test_llama_3_1_8b_params_and_kv_by_hand() -> None:
    s = load_model("llama-3.1-8b")
    h, layers, kv, hd, ffn, vocab = 4096, 32, 8, 128, 14336, 128256
    hand = layers * (2 * h * h + 2 * h * kv * hd + 3 * h * ffn) + 2 * vocab * h
    assert hand == 8_029_995_008
    assert s.params_total() == hand == s.params_active()
    assert s.kv_bytes_per_token("bf16") == 2 * 32 * 8 * 128 * 2 == 128 * 1024
    assert s.kv_bytes_per_token("fp8") == 64 * 1024


def test_llama_70b_matches_the_reference_table() -> None:
    s = load_model("llama-3.1-70b")
    assert round(s.params_total() / 1e9, 2) == 70.55
    assert s.kv_bytes_per_token("bf16") == 320 * 1024
    assert load_model("ax-4.0-light").kv_bytes_per_token("bf16") == 56 * 1024


def test_opt_13b_two_matrix_mlp_and_tied_embeddings() -> None:
    s = load_model("opt-13b")
    assert not s.gated_mlp and s.tied_embeddings
    hand = 40 * (4 * 5120 * 5120 + 2 * 5120 * 20480) + 50272 * 5120
    assert s.params_total() == hand
    assert s.kv_bytes_per_token("fp16") == 2 * 40 * 5120 * 2


def test_ax_k1_moe_total_active_and_mla_kv() -> None:
    s = load_model("ax-k1")
    assert s.moe is not None and s.mla is not None
    assert (s.moe.experts, s.moe.active, s.moe.shared, s.moe.dense_layers) == (192, 8, 1, 1)
    assert abs(s.params_total() / 519e9 - 1) < 0.01  # reference: 519B total
    assert abs(s.params_active() / 33e9 - 1) < 0.01  # 33B active
    assert s.kv_bytes_per_token("bf16") == 61 * (512 + 64) * 2  # one latent + rope part per layer, no K/V pair


def test_shipped_examples_all_parse() -> None:
    assert {"llama-3.1-8b", "llama-3.1-70b", "llama-2-70b", "ax-4.0-light", "ax-k1", "opt-13b"} <= set(
        shipped_models())
    for name in shipped_models():
        assert load_model(name).name == name


def _write(tmp_path: Path, cfg: object, name: str = "config.json") -> Path:
    d = tmp_path / "my-model"
    d.mkdir(exist_ok=True)
    p = d / name
    p.write_text(json.dumps(cfg) if not isinstance(cfg, str) else cfg, encoding="utf-8")
    return p


BASE = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128,
        "vocab_size": 100}


def test_defaults_head_dim_kv_heads_and_tied(tmp_path: Path) -> None:
    s = read_config(_write(tmp_path, {**BASE, "_sovkit_source": "notes are ignored"}))
    assert (s.name, s.head_dim, s.kv_heads, s.tied_embeddings) == ("my-model", 16, 4, True)


@pytest.mark.parametrize(("cfg", "words"), [
    ({k: v for k, v in BASE.items() if k != "num_hidden_layers"}, ["'num_hidden_layers' is missing"]),
    ({**BASE, "hidden_size": "64"}, ["'hidden_size'", "not a positive integer"]),
    ({**BASE, "num_local_experts": 8}, ["num_experts_per_tok", "missing"]),
    ({**BASE, "kv_lora_rank": 512}, ["qk_rope_head_dim"]),
    ({**BASE, "num_attention_heads": 5}, ["head_dim", "not a multiple"]),
    ({**BASE, "tie_word_embeddings": "yes"}, ["tie_word_embeddings"]),
])
def test_bad_config_names_file_and_field(tmp_path: Path, cfg: dict[str, object], words: list[str]) -> None:
    path = _write(tmp_path, cfg)
    with pytest.raises(PlannerError) as err:
        read_config(path)
    assert str(path) in err.value.message
    for w in words:
        assert w in err.value.message
    assert err.value.hint


def test_unreadable_and_invalid_json(tmp_path: Path) -> None:
    with pytest.raises(PlannerError, match="cannot read"):
        read_config(tmp_path / "absent.json")
    with pytest.raises(PlannerError, match=r"config.json:2:1: not valid JSON"):
        read_config(_write(tmp_path, '{"a": 1,\n}'))
    with pytest.raises(PlannerError, match="no shipped example") as err:
        load_model("no-such-model")
    assert "llama-3.1-8b" in (err.value.hint or "")
