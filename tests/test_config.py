from __future__ import annotations

from pathlib import Path

import pytest

from defectkit.config import ConfigError, load_config, parse_override

KSDD = Path(__file__).resolve().parents[1] / "configs" / "segdec" / "kolektorsdd.yaml"


def test_profiles_and_overrides_resolve_in_order() -> None:
    paper = load_config(KSDD, profile="paper")
    assert paper.input.size == (1408, 512) and paper.model["volume_channels"] == 1024
    cpu = load_config(KSDD, profile="cpu", overrides=["trainer.epochs=3", "model.widths=[8, 8, 8]"])
    assert cpu.input.size == (792, 288) and cpu.profile == "cpu"
    assert cpu.trainer.epochs == 3 and cpu.model["widths"] == [8, 8, 8]
    assert cpu.model["volume_channels"] == 128  # the profile's, not the file's
    assert cpu.trainer.lr == 0.1 and paper.trainer.lr == 1.0
    assert cpu.method_options["delta"] == 0.01  # untouched by the profile


def test_parse_override_keeps_types() -> None:
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override("a=false") == ("a", False)
    assert parse_override("a=[1, 2]") == ("a", [1, 2])
    assert parse_override("a=text") == ("a", "text")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("novalue")


def test_errors_name_the_file_and_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="no profile 'gpu'"):
        load_config(KSDD, profile="gpu")
    with pytest.raises(ConfigError, match=r"kolektorsdd.yaml: trainer.epochs"):
        load_config(KSDD, overrides=["trainer.epochs=zero"])
    with pytest.raises(ConfigError, match="unknown_section"):
        load_config(KSDD, overrides=["unknown_section.x=1"])
    with pytest.raises(ConfigError, match="num_segmented"):
        load_config(KSDD, overrides=["data.supervision=mixed"])
