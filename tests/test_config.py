from __future__ import annotations

from pathlib import Path

import pytest

from defectkit.config import ConfigError, load_config, parse_override

KSDD = Path(__file__).resolve().parents[1] / "configs" / "segdec" / "kolektorsdd.yaml"


def test_profiles_and_overrides_resolve_in_order() -> None:
    paper = load_config(KSDD, profile="paper")
    assert paper.input.size == (1408, 512) and paper.model["volume_channels"] == 1024
    cpu = load_config(KSDD, profile="cpu", overrides=["trainer.epochs=3", "model.widths=[8, 8, 8]"])
    assert cpu.input.size == (880, 320) and cpu.profile == "cpu"
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
    with pytest.raises(ConfigError, match=r"an empty name between dots in 'trainer\.\.epochs'"):
        parse_override("trainer..epochs=2")


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


def test_profile_and_encoding_mistakes_are_config_errors(tmp_path: Path) -> None:
    text = KSDD.read_text()
    empty = tmp_path / "empty-profile.yaml"
    empty.write_text(text.replace("profiles:\n  paper: {}", "profiles:\n  paper:"))
    assert load_config(empty, profile="paper").profile == "paper"  # an empty profile changes nothing
    listed = tmp_path / "listed.yaml"
    listed.write_text(text.split("profiles:")[0] + "profiles: [cpu]\n")
    with pytest.raises(ConfigError, match=r"listed.yaml: profiles must be a mapping"):
        load_config(listed, profile="cpu")
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text(text.split("profiles:")[0] + "profiles:\n  cpu: fast\n")
    with pytest.raises(ConfigError, match=r"scalar.yaml: profiles.cpu must be a mapping"):
        load_config(scalar, profile="cpu")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("# r\xe9sum\xe9\n".encode("latin-1") + text.encode())
    with pytest.raises(ConfigError, match=r"latin.yaml: not UTF-8"):
        load_config(latin)
    with pytest.raises(ConfigError, match=r"data.synthetic: unknown key\(s\) \['per_surfce'\]"):
        load_config(KSDD, overrides=["data.root=null", "data.synthetic={per_surfce: 3}"])


def test_check_config_refuses_unused_weights_and_unknown_model_keys() -> None:
    from defectkit.models import ModelOptionError
    from defectkit.registry import get_method

    segdec = get_method("segdec")
    segdec.check_config(load_config(KSDD, profile="cpu"))
    with pytest.raises(ValueError, match="loads no pretrained weights"):
        segdec.check_config(load_config(KSDD, overrides=["weights=/tmp/nope.safetensors"]))
    with pytest.raises(ModelOptionError, match=r"unknown option\(s\) \['widthz'\].*'widths'"):
        segdec.check_config(load_config(KSDD, overrides=["model.widthz=[8, 8, 8]"]))
    with pytest.raises(ValueError, match=r"segdec: unknown method_options \['dilat'\]"):
        segdec.train_sampler([1, 0], load_config(KSDD, overrides=["method_options.dilat=3"]))


def test_check_config_names_an_augment_typo_on_one_line() -> None:
    from defectkit.registry import get_method

    with pytest.raises(ValueError, match=r"^augment.hflp: Extra inputs are not permitted$"):
        get_method("segdec").check_config(load_config(KSDD, overrides=["augment.hflp=0.5"]))


def test_settings_that_would_train_nothing_or_fail_late_are_refused(tmp_path: Path) -> None:
    """Each was accepted here and failed (or trained nothing) only after the data was prepared."""
    with pytest.raises(ConfigError, match=r"trainer.max_steps: .*must be -1 .*or at least 1"):
        load_config(KSDD, overrides=["trainer.max_steps=0"])  # saved the untrained network
    with pytest.raises(ConfigError, match=r"trainer.precision: Input should be '32-true'"):
        load_config(KSDD, overrides=["trainer.precision=fp16"])
    with pytest.raises(ConfigError, match=r"trainer.num_workers: Input should be greater than or equal to 0"):
        load_config(KSDD, overrides=["trainer.num_workers=-1"])


def test_a_key_given_twice_and_a_hand_set_profile_are_refused(tmp_path: Path) -> None:
    text = KSDD.read_text()
    twice = tmp_path / "twice.yaml"
    # PyYAML keeps the last: the second section silently replaced every setting of the first.
    twice.write_text(text + "trainer:\n  epochs: 2\n")
    with pytest.raises(
        ConfigError, match=r"twice.yaml: not valid YAML \(line \d+, column 1: key 'trainer' appears twice"
    ):
        load_config(twice)
    merged = tmp_path / "merged.yaml"  # a key beside `<<: *anchor` overrides the merged one by design
    anchored = text.replace("trainer:\n  epochs: 50\n", "trainer:\n  <<: &t {epochs: 3}\n  epochs: 50\n", 1)
    assert anchored != text
    merged.write_text(anchored)
    assert load_config(merged).trainer.epochs == 50
    named = tmp_path / "named.yaml"
    named.write_text("profile: paper\n" + text)
    with pytest.raises(
        ConfigError, match=r"named.yaml: 'profile' is not a setting; choose a profile with --profile"
    ):
        load_config(named)
    with pytest.raises(ConfigError, match=r"--set profile=paper: 'profile' is not a setting"):
        load_config(KSDD, profile="cpu", overrides=["profile=paper"])
