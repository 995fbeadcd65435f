"""Settings precedence and validation; the entry point's --help, --version and errors."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from chatcore import config as config_module
from chatcore.serve import build_parser
from tests.serverproc import ROOT, SERVER_PY


def _load(argv, environ=None):
    return config_module.load(build_parser().parse_args(argv), environ or {})


def test_defaults():
    config = _load([])
    assert (config.host, config.port, config.max_output_bytes) == ("127.0.0.1", 7878, 1 << 20)


def test_file_then_environment_then_flags(tmp_path):
    path = tmp_path / "chatcore.toml"
    path.write_text('[server]\nport = 9000\nmax_text_bytes = 1000\nhost = "::1"\n'
                    'ping_interval_seconds = 2\n')
    environ = {"CHATCORE_PORT": "9100", "CHATCORE_MAX_TEXT_BYTES": "2000"}
    config = _load(["--config", str(path), "--port", "9200"], environ)
    assert (config.host, config.port, config.max_text_bytes, config.ping_interval_seconds) == (
        "::1", 9200, 2000, 2.0)


@pytest.mark.parametrize("toml, message", [
    ("nonsense = 1\n", "unknown setting"),
    ('port = "x"\n', "bad.toml: port must be an integer, not 'x'"),
    ('port = "7878"\n', "port must be an integer"),     # TOML has types: no quoting numbers
    ("max_output_bytes = 1.5\n", "max_output_bytes must be an integer, not 1.5"),
    ("ping_interval_seconds = true\n", "ping_interval_seconds must be a number"),
    ("host = 7\n", "host must be a string, not 7"),
    ('log_level = "loud"\n', "log_level must be one of DEBUG, INFO"),
    ("port = \n", "bad.toml: not valid TOML"),
    ("port = 70000\n", "not in 0..65535"),
    ("max_output_bytes = 0\n", "must be positive"),
    ("max_away_bytes = 0\n", "max_away_bytes must be positive"),
    ("max_join_members = -1\n", "max_join_members must not be negative"),
])
def test_bad_settings_are_refused(tmp_path, toml, message):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ValueError, match=message):
        _load(["--config", str(path)])


def test_environment_and_flag_values_are_parsed_and_named_when_wrong():
    assert _load([], {"CHATCORE_PING_INTERVAL_SECONDS": "2"}).ping_interval_seconds == 2.0
    with pytest.raises(ValueError, match="CHATCORE_PORT: port must be an integer, not 'abc'"):
        _load([], {"CHATCORE_PORT": "abc"})
    with pytest.raises(ValueError, match="--max-clients: max_clients must be an integer"):
        _load(["--max-clients", "many"])


def _run_server(*argv, **kwargs):
    return subprocess.run([sys.executable, SERVER_PY, *argv], capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL, **kwargs)


def test_a_bogus_log_level_is_one_line_and_exit_2():
    result = _run_server("--port", "0", "--log-level", "bogus")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "chatcore-server: bad configuration: log_level must be one of DEBUG, INFO, WARNING, "
        "ERROR, CRITICAL, not 'bogus'"]


def test_a_wrongly_typed_toml_value_names_the_setting_and_the_file(tmp_path):
    path = tmp_path / "chatcore.toml"
    path.write_text('[server]\nmax_output_bytes = "lots"\n')
    result = _run_server("--config", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (f"chatcore-server: bad configuration: {path}: "
                                     f"max_output_bytes must be an integer, not 'lots'")


def test_help_gives_every_setting_its_meaning():
    result = _run_server("--help", env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for name, field in config_module.FIELDS.items():
        meaning = field.metadata.get("help")
        assert meaning, (f"setting {name} has no help: declare it as "
                         f"`{name}: ... = setting(default, \"what it means\")`")
        flag = "--" + name.replace("_", "-")
        assert re.search(rf"{flag} \[?[A-Z]+\]? {re.escape(meaning)}", text), flag


def test_every_setting_has_a_readme_row():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        rows = set(re.findall(r"^\| `([a-z_]+)` \|", f.read(), re.MULTILINE))
    missing = [name for name in config_module.FIELDS if name not in rows]
    assert not missing, f"README's configuration table lacks {missing}"


def test_bad_configuration_exits_2_with_a_message(tmp_path):
    result = subprocess.run([sys.executable, SERVER_PY, "--port", "99999"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "bad configuration" in result.stderr


def test_version_names_the_hot_path():
    from chatcore import codec
    result = subprocess.run([sys.executable, SERVER_PY, "--version"], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0
    assert f"(hot path: {codec.IMPLEMENTATION})" in result.stdout


def test_port_in_use_is_a_clear_error(server):
    result = subprocess.run([sys.executable, SERVER_PY, "--port", str(server.port)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "cannot listen" in result.stderr


def test_tls_settings_from_file_environment_and_flags(tmp_path):
    path = tmp_path / "tls.toml"
    path.write_text('[server]\ntls_port = 7879\ntls_cert = "c.pem"\ntls_key = "k.pem"\n'
                    "tls_only = true\n")
    config = _load(["--config", str(path)])
    assert (config.tls_port, config.tls_cert, config.tls_key, config.tls_only) == (
        7879, "c.pem", "k.pem", True)
    assert _load(["--config", str(path)], {"CHATCORE_TLS_ONLY": "off"}).tls_only is False
    assert _load(["--config", str(path), "--tls-only", "no"]).tls_only is False
    flags = ["--tls-port", "0", "--tls-cert", "c", "--tls-key", "k"]
    assert _load([*flags, "--tls-only"]).tls_only is True          # a switch on its own
    assert _load(flags).tls_handshake_timeout_seconds == 10.0


@pytest.mark.parametrize("flags, message", [
    (["--tls-port", "0"], "tls_port is set but tls_cert is not"),
    (["--tls-port", "0", "--tls-key", "k.pem"], "tls_cert is not: give the server's "
                                                 "certificate chain (PEM) for tls_key k.pem"),
    (["--tls-port", "0", "--tls-cert", "c.pem"], "tls_cert c.pem is set but tls_key is not"),
    (["--tls-cert", "c.pem", "--tls-key", "k.pem"], "tls_port is not"),
    (["--tls-only"], "tls_only is set but tls_port is not"),
    (["--tls-only", "maybe"], "tls_only must be true or false"),
    (["--port", "7000", "--tls-port", "7000", "--tls-cert", "c", "--tls-key", "k"],
     "use two ports"),
    (["--tls-port", "0", "--tls-cert", "c", "--tls-key", "k",
      "--tls-handshake-timeout-seconds", "0"], "must be positive"),
])
def test_bad_tls_settings_are_refused(flags, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _load(flags)


def test_list_room_and_resume_settings(tmp_path):
    assert (_load([]).max_rooms, _load([]).resume_grace_seconds,
            _load([]).max_list_page_entries) == (100_000, 45.0, 200)
    path = tmp_path / "lists.toml"
    path.write_text("max_rooms = 10\nmax_list_page_entries = 50\n")
    config = _load(["--config", str(path), "--resume-grace-seconds", "0"],
                   {"CHATCORE_MAX_LIST_SCAN_ENTRIES": "300"})
    assert (config.max_rooms, config.max_list_page_entries, config.max_list_scan_entries,
            config.resume_grace_seconds) == (10, 50, 300, 0.0)
    for flags, message in ((["--max-list-page-entries", "70000"], "at most 65535"),
                           (["--resume-grace-seconds", "-1"], "must not be negative"),
                           (["--max-rooms", "0"], "must be positive")):
        with pytest.raises(ValueError, match=message):
            _load(flags)
