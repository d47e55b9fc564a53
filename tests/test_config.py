"""Config loading: defaults, the file, the environment, and every bad case.

Each ``config_cases/NAME.toml`` is paired with ``NAME.expected``: the exact
lines ``announcer check-config`` must print for it, key named first.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from announcer import config
from announcer.config import ConfigError

CASES = sorted((Path(__file__).parent / "config_cases").glob("*.toml"))


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_bad_config_is_refused_with_the_key_named(case: Path) -> None:
    expected = case.with_suffix(".expected").read_text(encoding="utf-8").splitlines()
    with pytest.raises(ConfigError) as caught:
        config.load(case, env={})
    assert caught.value.problems == expected


def test_there_is_a_case_for_every_kind_of_mistake() -> None:
    assert len(CASES) >= 10
    assert all(c.with_suffix(".expected").exists() for c in CASES)


def test_no_file_anywhere_means_defaults(tmp_path: Path) -> None:
    loaded = config.load(None, env={})
    if config.DEFAULT_PATH.exists():
        pytest.skip(f"{config.DEFAULT_PATH} exists on this machine")
    assert loaded.settings.redis.url == "redis://127.0.0.1:6379/0"
    assert loaded.settings.redis.prefix == "announcer"
    assert loaded.settings.phones.default_region == "RU"
    assert loaded.settings.inventory.max_bad_share == 0.05
    assert "defaults" in loaded.source


def test_file_named_by_environment_is_read(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text('[redis]\nprefix = "isp1"\n')
    loaded = config.load(None, env={config.CONFIG_ENV: str(path)})
    assert loaded.settings.redis.prefix == "isp1"
    assert loaded.source == str(path)


def test_command_line_path_beats_environment(tmp_path: Path) -> None:
    first, second = tmp_path / "first.toml", tmp_path / "second.toml"
    first.write_text('[redis]\nprefix = "first"\n')
    second.write_text('[redis]\nprefix = "second"\n')
    loaded = config.load(first, env={config.CONFIG_ENV: str(second)})
    assert loaded.settings.redis.prefix == "first"


def test_named_file_that_is_missing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        config.load(tmp_path / "nope.toml", env={})
    with pytest.raises(ConfigError, match="file not found"):
        config.load(None, env={config.CONFIG_ENV: str(tmp_path / "nope.toml")})


def test_redis_url_from_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text('[redis]\nurl = "redis://10.9.9.9:6379/0"\nprefix = "x"\n')
    env = {config.REDIS_URL_ENV: "unix:///run/redis/redis.sock"}
    loaded = config.load(path, env=env)
    assert loaded.settings.redis.url == "unix:///run/redis/redis.sock"
    assert loaded.settings.redis.prefix == "x"


def test_redis_url_from_environment_is_validated_too() -> None:
    with pytest.raises(ConfigError) as caught:
        config.parse("", "defaults", env={config.REDIS_URL_ENV: "localhost:6379"})
    assert caught.value.problems[0].startswith("[redis] url: expected a URL")


def test_example_config_lists_the_defaults() -> None:
    """examples/announcer.toml says it shows every key with its default: it
    must load, and to exactly the defaults."""
    example = Path(__file__).parent.parent / "examples" / "announcer.toml"
    loaded = config.load(example, env={})
    assert loaded.settings == config.Settings()


def _check_config(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "announcer", *args, "check-config"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )


def test_check_config_exits_0_for_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "good.toml"
    path.write_text('[phones]\ndefault_region = "BY"\n')
    done = _check_config("--config", str(path))
    assert done.returncode == 0, done.stderr
    assert "OK" in done.stdout
    assert "region BY" in done.stdout


def test_check_config_exits_1_and_names_the_key() -> None:
    case = Path(__file__).parent / "config_cases" / "unknown_key.toml"
    done = _check_config("--config", str(case))
    assert done.returncode == 1
    assert f"{case}: [redis] prefx: unknown key" in done.stderr
