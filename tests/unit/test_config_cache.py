"""`pick` reads the config's tables through a private copy while the file is unchanged
(gt_remote/base/config_file.py cached_tables): the TOML parser is then not even imported; any
change to the file is read again, and its owner and mode are checked every time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gt_remote.base.errors import ConfigError
from tests.testbed import REPO

READ = """
import json, sys
from pathlib import Path
from gt_remote.base.config_file import cached_tables
print(json.dumps({"hosts": cached_tables(Path(sys.argv[1])), "parsed": "tomllib" in sys.modules}))
"""


def read(config: Path, state: Path) -> dict[str, object]:
    env = {**os.environ, "XDG_STATE_HOME": str(state), "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", READ, str(config)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_an_unchanged_config_is_not_parsed_again(tmp_path: Path) -> None:
    config, state = tmp_path / "config.toml", tmp_path / "state"
    config.write_text("[hosts.pc1]\npool = true\nmax_sessions = 4\n")
    config.chmod(0o600)
    assert read(config, state) == {"hosts": {"pc1": {"pool": True, "max_sessions": 4}}, "parsed": True}
    assert read(config, state) == {"hosts": {"pc1": {"pool": True, "max_sessions": 4}}, "parsed": False}
    cache = state / "gt-remote" / "cache" / "config.json"
    assert cache.stat().st_mode & 0o777 == 0o600
    config.write_text("[hosts.pc1]\npool = true\nmax_sessions = 5\n")  # same size, a new modification time
    assert read(config, state) == {"hosts": {"pc1": {"pool": True, "max_sessions": 5}}, "parsed": True}
    config.unlink()
    assert read(config, state) == {"hosts": {}, "parsed": False}


def test_a_config_others_may_write_is_refused_even_when_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gt_remote.base.config_file import cached_tables

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    config = tmp_path / "config.toml"
    config.write_text("[hosts.pc1]\npool = true\n")
    config.chmod(0o600)
    assert cached_tables(config) == {"pc1": {"pool": True}}
    config.chmod(0o666)
    with pytest.raises(ConfigError, match="writable by another user"):
        cached_tables(config)
