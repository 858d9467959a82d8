"""Config files load as ConfigDicts and `--config.key=value` overrides are typed and checked."""

import pytest

from jaxsep.config import apply_override, config_to_dict, load_config
from jaxsep.errors import JaxsepError

CONFIG_SOURCE = """
import ml_collections

def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.variant = arg or "base"
    c.lr = 1e-3
    c.steps = 10
    c.use_bn = True
    c.stems = ("drums", "bass")
    c.optimizer = ml_collections.ConfigDict({"name": "adam", "clip": 1.0})
    return c
"""


@pytest.fixture()
def config_file(tmp_path):
    path = tmp_path / "cfg.py"
    path.write_text(CONFIG_SOURCE)
    return path


def test_variant_and_typed_overrides(config_file):
    config = load_config(
        f"{config_file}:tiny",
        [
            "--config.lr=3e-4",
            "--config.steps=7",
            "--config.use_bn=false",
            "--config.optimizer.clip=2",
        ],
    )
    assert config.variant == "tiny"
    assert config.lr == pytest.approx(3e-4)
    assert config.steps == 7 and isinstance(config.steps, int)
    assert config.use_bn is False
    assert config.optimizer.clip == 2.0 and isinstance(config.optimizer.clip, float)
    assert config_to_dict(config)["stems"] == ["drums", "bass"]


def test_tuple_override_keeps_type(config_file):
    config = load_config(str(config_file), ["--config.stems=('vocals',)"])
    assert config.stems == ("vocals",)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--config.lrr=1", "unknown config key 'lrr'"),
        ("--config.optimizer.beta=1", "unknown config key 'optimizer.beta'"),
        ("--config.steps=ten", "cannot parse steps"),
        ("--config.steps=1.5", "steps expects int"),
        ("--config.use_bn=maybe", "use_bn expects true/false"),
        ("--config.steps", "not of the form key=value"),
    ],
)
def test_bad_override_is_one_line(config_file, override, message):
    with pytest.raises(JaxsepError, match=message) as info:
        load_config(str(config_file), [override])
    assert "\n" not in str(info.value)


def test_missing_and_broken_config_files(tmp_path):
    with pytest.raises(JaxsepError, match="config file not found"):
        load_config(str(tmp_path / "nope.py"))
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(arg=None):\n    return 1/0\n")
    with pytest.raises(JaxsepError, match="ZeroDivisionError"):
        load_config(str(broken))
    raises_on_import = tmp_path / "typo.py"
    raises_on_import.write_text("import no_such_module_here\n")
    with pytest.raises(JaxsepError, match="typo.py: cannot load config: ModuleNotFoundError"):
        load_config(str(raises_on_import))
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(JaxsepError, match="defines no get_config"):
        load_config(str(empty))


def test_apply_override_string_field(config_file):
    config = load_config(str(config_file))
    apply_override(config, "optimizer.name=sgd")
    assert config.optimizer.name == "sgd"
