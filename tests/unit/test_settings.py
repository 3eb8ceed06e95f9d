"""libs.settings (env readers that name the variable at fault) and libs.timeouts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from libs.settings import ConfigError, env_bool, env_float, env_int, env_list, env_str, load_toml
from libs.timeouts import Timeouts
from services.edge.settings import EdgeSettings


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


# ---- env_str / env_list --------------------------------------------------------------------


def test_env_str() -> None:
    assert env_str("X", "d", {}) == "d"
    assert env_str("X", "d", {"X": ""}) == ""
    assert env_str("X", "d", {"X": " v "}) == " v "


def test_env_str_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SY_TEST_SETTING", "from-os")
    assert env_str("SY_TEST_SETTING") == "from-os"
    assert env_int("SY_TEST_SETTING_MISSING", 5) == 5


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, []),
        ("", []),
        ("a", ["a"]),
        ("a,b,c", ["a", "b", "c"]),
        (" a , b ,, c ,", ["a", "b", "c"]),
        (" , ", []),
        ("x=1, y = 2", ["x=1", "y = 2"]),
    ],
)
def test_env_list(raw: str | None, expected: list[str]) -> None:
    env = {} if raw is None else {"L": raw}
    assert env_list("L", env) == expected


# ---- env_int -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, 7), ("", 7), ("   ", 7), ("0", 0), ("42", 42), (" 42 ", 42), ("-3", -3), ("+5", 5)],
)
def test_env_int(raw: str | None, expected: int) -> None:
    env = {} if raw is None else {"N": raw}
    assert env_int("N", 7, env) == expected


@pytest.mark.parametrize("raw", ["abc", "1.5", "1e3", "0x10", "1 000"])
def test_env_int_rejects_non_integers_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"^MY_INT must be an integer") as info:
        env_int("MY_INT", 1, {"MY_INT": raw})
    assert repr(raw.strip()) in str(info.value)


@pytest.mark.parametrize(("raw", "ok"), [("5", True), ("4", True), ("3", False), ("-1", False)])
def test_env_int_minimum(raw: str, ok: bool) -> None:
    env = {"MY_INT": raw}
    if ok:
        assert env_int("MY_INT", 10, env, minimum=4) == int(raw)
    else:
        with pytest.raises(ConfigError, match=r"MY_INT must be >= 4"):
            env_int("MY_INT", 10, env, minimum=4)


def test_env_int_default_is_not_checked_against_minimum() -> None:
    assert env_int("MY_INT", 0, {}, minimum=1) == 0


# ---- env_float -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, 2.5), ("", 2.5), ("1", 1.0), ("0.25", 0.25), (" 3.5 ", 3.5), ("1e-3", 0.001)],
)
def test_env_float(raw: str | None, expected: float) -> None:
    env = {} if raw is None else {"F": raw}
    assert env_float("F", 2.5, env) == expected


@pytest.mark.parametrize("raw", ["abc", "1,5", "one"])
def test_env_float_rejects_non_numbers_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"^MY_FLOAT must be a number"):
        env_float("MY_FLOAT", 1.0, {"MY_FLOAT": raw})


@pytest.mark.parametrize("raw", ["0", "-1", "-0.5", "nan"])
def test_env_float_positive_by_default(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"^MY_FLOAT must be > 0"):
        env_float("MY_FLOAT", 1.0, {"MY_FLOAT": raw})


@pytest.mark.parametrize(("raw", "expected"), [("0", 0.0), ("-1.5", -1.5)])
def test_env_float_non_positive_allowed_when_asked(raw: str, expected: float) -> None:
    assert env_float("MY_FLOAT", 1.0, {"MY_FLOAT": raw}, positive=False) == expected


# ---- env_bool ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "default", "expected"),
    [
        (None, True, True),
        (None, False, False),
        ("", True, True),
        ("  ", False, False),
        *[(v, False, True) for v in ("1", "true", "TRUE", "Yes", "on", " true ")],
        *[(v, True, False) for v in ("0", "false", "False", "NO", "off")],
    ],
)
def test_env_bool(raw: str | None, default: bool, expected: bool) -> None:
    env = {} if raw is None else {"B": raw}
    assert env_bool("B", default, env) is expected


@pytest.mark.parametrize("raw", ["maybe", "2", "y", "enabled"])
def test_env_bool_rejects_other_values_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"^MY_FLAG must be true or false"):
        env_bool("MY_FLAG", False, {"MY_FLAG": raw})


# ---- load_toml -----------------------------------------------------------------------------


def test_load_toml_unset_is_empty() -> None:
    assert load_toml("CFG", {}) == {}
    assert load_toml("CFG", {"CFG": "  "}) == {}


def test_load_toml_reads_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[a]\nb = 1\nc = ["x"]\n')
    assert load_toml("CFG", {"CFG": str(path)}) == {"a": {"b": 1, "c": ["x"]}}
    assert load_toml("CFG", {"CFG": f"  {path}  "}) == {"a": {"b": 1, "c": ["x"]}}


def test_load_toml_missing_file_names_the_variable(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=r"^MY_CONFIG names .*missing\.toml, which does not exist"):
        load_toml("MY_CONFIG", {"MY_CONFIG": str(missing)})


@pytest.mark.parametrize("text", ["[a\n", "a = \n", "a = 1\na = 2\n", "key = 'unterminated\n"])
def test_load_toml_invalid_names_the_variable(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"^MY_CONFIG: .*bad\.toml is not valid TOML"):
        load_toml("MY_CONFIG", {"MY_CONFIG": str(path)})


# ---- Timeouts ------------------------------------------------------------------------------

# the defaults are tuned elsewhere; these tests are about how the environment changes them
DEFAULTS = dataclasses.asdict(Timeouts())
FIELDS = (
    "queue_wait", "first_token", "idle", "total", "heartbeat", "keepalive", "ack_wait", "drain", "readiness_grace",
    "publish_ack", "confirm_window", "request_head",
)


def test_timeouts_defaults() -> None:
    assert dataclasses.asdict(Timeouts.from_env({})) == DEFAULTS
    assert Timeouts.from_env({}) == Timeouts()
    assert tuple(DEFAULTS) == FIELDS
    assert all(isinstance(v, float) and v > 0 for v in DEFAULTS.values())


def test_every_field_has_its_own_variable() -> None:
    for name in FIELDS:
        timeouts = Timeouts.from_env({f"SY_TIMEOUT_{name.upper()}": "1234.5"})
        assert getattr(timeouts, name) == 1234.5
        assert {k: v for k, v in dataclasses.asdict(timeouts).items() if k != name} == {
            k: v for k, v in DEFAULTS.items() if k != name
        }


@pytest.mark.parametrize("scale", ["0.1", "0.5", "2"])
def test_time_scale_scales_every_field(scale: str) -> None:
    timeouts = dataclasses.asdict(Timeouts.from_env({"SY_TIME_SCALE": scale}))
    assert timeouts == pytest.approx({k: v * float(scale) for k, v in DEFAULTS.items()})


def test_one_override() -> None:
    timeouts = Timeouts.from_env({"SY_TIMEOUT_IDLE": "7"})
    assert timeouts.idle == 7.0
    assert {k: v for k, v in dataclasses.asdict(timeouts).items() if k != "idle"} == {
        k: v for k, v in DEFAULTS.items() if k != "idle"
    }


def test_override_is_scaled_too() -> None:
    timeouts = Timeouts.from_env({"SY_TIME_SCALE": "0.1", "SY_TIMEOUT_IDLE": "5", "SY_TIMEOUT_QUEUE_WAIT": "20"})
    assert timeouts.idle == pytest.approx(0.5)
    assert timeouts.queue_wait == pytest.approx(2.0)
    assert timeouts.total == pytest.approx(DEFAULTS["total"] * 0.1)


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"SY_TIME_SCALE": "fast"}, "SY_TIME_SCALE"),
        ({"SY_TIME_SCALE": "0"}, "SY_TIME_SCALE"),
        ({"SY_TIMEOUT_IDLE": "-1"}, "SY_TIMEOUT_IDLE"),
        ({"SY_TIMEOUT_ACK_WAIT": "x"}, "SY_TIMEOUT_ACK_WAIT"),
        ({"SY_TIMEOUT_FIRST_TOKEN": "0"}, "SY_TIMEOUT_FIRST_TOKEN"),
    ],
)
def test_timeouts_errors_name_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{name} "):
        Timeouts.from_env(env)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, DEFAULTS["heartbeat"] * 3),
        ({"SY_TIME_SCALE": "0.1"}, DEFAULTS["heartbeat"] * 0.3),
        ({"SY_TIMEOUT_HEARTBEAT": "2"}, 6.0),
    ],
)
def test_worker_silence_is_three_heartbeats(env: dict[str, str], expected: float) -> None:
    assert Timeouts.from_env(env).worker_silence == pytest.approx(expected)


def test_timeouts_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Timeouts().idle = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(("raw", "expected"), [("0", 0.0), ("0.0", 0.0), ("2", 2.0)])
def test_env_float_zero_allowed_when_asked(raw: str, expected: float) -> None:
    assert env_float("MY_FLOAT", 1.0, {"MY_FLOAT": raw}, zero=True) == expected


@pytest.mark.parametrize("raw", ["-1", "-0.5", "nan"])
def test_env_float_zero_allowed_still_rejects_negatives(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"^MY_FLOAT must be >= 0"):
        env_float("MY_FLOAT", 1.0, {"MY_FLOAT": raw}, zero=True)


def test_confirm_window_zero_confirms_every_job() -> None:
    # documented: "0 asks for every one"
    assert Timeouts.from_env({"SY_TIMEOUT_CONFIRM_WINDOW": "0"}).confirm_window == 0.0
    settings = EdgeSettings.from_env({"SY_TIMEOUT_CONFIRM_WINDOW": "0", "SY_TIME_SCALE": "0.1"})
    assert settings.timeouts.confirm_window == 0.0
    with pytest.raises(ConfigError, match=r"^SY_TIMEOUT_CONFIRM_WINDOW must be >= 0"):
        Timeouts.from_env({"SY_TIMEOUT_CONFIRM_WINDOW": "-1"})


@pytest.mark.parametrize("name", [f for f in FIELDS if f != "confirm_window"])
def test_other_timeouts_reject_zero(name: str) -> None:
    variable = f"SY_TIMEOUT_{name.upper()}"
    with pytest.raises(ConfigError, match=rf"^{variable} must be > 0"):
        Timeouts.from_env({variable: "0"})
