"""README's supported-models table is generated from model_configs/ and must be current."""

from __future__ import annotations

import pytest

from hooked_vlm.model_configs import list_model_configs
from tests.conftest import load_script


def test_table_has_a_row_per_model_config_and_vila_u():
    table = load_script("models_table").render_table()
    for name in list_model_configs():
        assert f"| `{name}` |" in table
    assert "| VILA-U |" in table
    assert "`<\\|image start\\|>`" in table  # pipes escaped inside cells
    widths = {line.count(" | ") for line in table.splitlines() if not line.startswith("|---")}
    assert len(widths) == 1  # every row has the same number of cells


def test_table_lists_every_family():
    from hooked_vlm.families import ARCHITECTURES

    table = load_script("models_table").render_table()
    for arch in ARCHITECTURES.values():
        assert f"| {arch.family} (" in table, arch.family


def test_readme_table_is_up_to_date():
    script = load_script("models_table")
    readme = script.README.read_text()
    updated = script.splice(readme, script.render_table())
    if updated is None:
        pytest.skip("README has no models-table markers")
    assert updated == readme, "README table is stale: run python scripts/models_table.py"


def test_every_model_config_is_supported_and_its_prompts_hold_the_image_token():
    from hooked_vlm.families import get_architecture
    from hooked_vlm.model_configs import load_model_config

    for name in list_model_configs():
        cfg = load_model_config(name)
        get_architecture(cfg.architecture)
        for prompt in cfg.prompts.values():
            assert cfg.special_tokens["image"] in prompt, name


def test_token_ids_missing_from_the_hf_config_come_from_the_tokenizer():
    from hooked_vlm.loading import attach_token_ids
    from hooked_vlm.model_configs import load_model_config
    from hooked_vlm.testing.tiny import build_tiny

    class Tokenizer:
        vocab = {"[IMG_BREAK]": 4, "[IMG_END]": 5}
        unk_token_id = 0

        def convert_tokens_to_ids(self, token):
            return self.vocab.get(token, 0)

    config = build_tiny("pixtral").model.config
    del config.image_break_token_id, config.image_end_token_id
    attached = attach_token_ids(config, Tokenizer(), load_model_config("pixtral-12b"))
    assert attached == {"row_break": 4, "eoi": 5}
    assert attach_token_ids(config, Tokenizer(), load_model_config("pixtral-12b")) == {}
