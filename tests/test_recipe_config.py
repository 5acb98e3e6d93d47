"""The typed recipe configuration loader: defaults < YAML < command line, with types checked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from genolm.errors import ConfigError
from genolm.recipe_config import coerce, config_from_args, load_yaml, option, save_yaml


@dataclass
class ToyConfig:
    """A toy recipe."""

    max_steps: int = option(10, "steps")
    lr: float = option(1e-4, "learning rate", aliases=("learning_rate",))
    peft: Literal["none", "lora", "ia3"] = option("none", "adapters")
    label_columns: list[str] | None = option(None, "label columns")
    eval_every: int | None = option(None, "eval period")
    merge: bool = option(True, "merge adapters")
    names: list[str] = option(["a"], "names")


def test_precedence_and_types(tmp_path):
    (tmp_path / "c.yaml").write_text("max_steps: 50\nlr: 3.0e-4\npeft: lora\nmerge: false\n")
    cfg = config_from_args(
        ToyConfig, ["--config", str(tmp_path / "c.yaml"), "--max_steps=7", "--learning-rate", "1e-3"]
    )
    assert (cfg.max_steps, cfg.lr, cfg.peft, cfg.merge) == (7, 1e-3, "lora", False)
    cfg = config_from_args(ToyConfig, ["--label_columns", "a,b", "--eval_every", "none", "--merge"])
    assert cfg.label_columns == ["a", "b"] and cfg.eval_every is None and cfg.merge is True
    assert config_from_args(ToyConfig, ["--label_columns", "[x, y]"]).label_columns == ["x", "y"]
    assert ToyConfig().names is not ToyConfig().names  # list defaults are per instance

    save_yaml(cfg, tmp_path / "saved.yaml")
    assert ToyConfig(**load_yaml(ToyConfig, tmp_path / "saved.yaml")) == cfg


def test_errors_name_the_field_and_file(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("max_stepz: 5\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown ToyConfig field 'max_stepz'"):
        load_yaml(ToyConfig, tmp_path / "bad.yaml")
    (tmp_path / "typed.yaml").write_text("max_steps: 2.5\n")
    with pytest.raises(ValueError, match=r"typed.yaml: max_steps: expected an integer"):
        load_yaml(ToyConfig, tmp_path / "typed.yaml")
    with pytest.raises(ConfigError, match=r"^--peft: 'adapters' is not one of 'none', 'lora', 'ia3'$"):
        config_from_args(ToyConfig, ["--peft", "adapters"])
    with pytest.raises(ConfigError, match=r"unrecognized argument '--max_step' \(see .* --help\)"):
        config_from_args(ToyConfig, ["--max_step", "3"])  # no abbreviations
    with pytest.raises(ConfigError, match=r"--max_steps: expected an integer, got 'many'"):
        config_from_args(ToyConfig, ["--max_steps", "many"])
    with pytest.raises(ConfigError, match=r"--names: invalid YAML value '\[a, b': expected ',' or '\]'"):
        config_from_args(ToyConfig, ["--names", "[a, b"])
    with pytest.raises(ConfigError, match=r"config file not found: .*missing.yaml"):
        config_from_args(ToyConfig, ["--config", str(tmp_path / "missing.yaml")])
    assert capsys.readouterr().err == ""  # raised, not printed: the recipes print the one line


@pytest.mark.parametrize(
    ("text", "position", "problem"),
    [
        ("max_steps: 3\nlr: [1\n", ":3:1:", r"expected ',' or '\]', but got '<stream end>' \(while parsing a flow sequence at line 2, column 5\)"),
        ("max_steps: 3\n  lr: 1\n", ":2:5:", "mapping values are not allowed here"),
        ("max_steps: 3\nname: \"x\n", ":3:1:", r"found unexpected end of stream \(while scanning a quoted scalar at line 2, column 7\)"),
    ],
)
def test_yaml_syntax_error_names_file_line_and_column(tmp_path, text, position, problem):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"broken.yaml{position} invalid YAML: {problem}"):
        load_yaml(ToyConfig, path)


@pytest.mark.parametrize(
    ("value", "annotation", "expected"),
    [("1e3", int, 1000), ("3", float, 3.0), ("no", bool, False), ("null", int | None, None), (4, str, "4")],
)
def test_coerce(value, annotation, expected):
    assert coerce(value, annotation, "x") == expected
