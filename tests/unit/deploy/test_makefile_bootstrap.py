"""`make`'s first step installs uv when missing, on pyenv's python and on Debian's (which
refuses pip installs, PEP 668). Run in a scratch folder with a fake interpreter: nothing
is installed and the repository's .venv is not touched."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

MAKEFILE = Path(__file__).resolve().parents[3] / "Makefile"

# A python3 that records its arguments; uv is missing, and pip installs only what the
# shell pattern ACCEPT matches, refusing the rest as Debian's externally managed one does.
FAKE_PYTHON = """\
#!/bin/sh
echo "$*" >> "$CALLS"
# pip, once the fake apt-get "installed" it, takes any install.
case "$*" in *"pip install"*) [ -e "$CALLS.pip" ] && exit 0 ;; esac
case "$*" in
  "-m uv --version") exit 1 ;;
  "-m uv sync"*) exit 0 ;;
  "-m pip --version") [ -n "$PIP_ERROR" ] && exit 0 ;;
  $ACCEPT) exit 0 ;;
esac
# PIP_ERROR: pip is there, but PyPI is out of reach (a proxy, TLS, ...).
echo "${PIP_ERROR:-error: externally-managed-environment}" >&2
exit 1
"""


# An apt-get that records its arguments; "install" puts pip in place (see FAKE_PYTHON).
FAKE_APT = """\
#!/bin/sh
echo "apt-get $*" >> "$CALLS"
case "$*" in *install*python3-pip*) touch "$CALLS.pip" ;; esac
exit 0
"""


# An id that answers `id -u` with the uid the test plays (the Makefile tries apt-get as
# root only), whoever runs the tests.
FAKE_ID = """\
#!/bin/sh
[ "$*" = "-u" ] && echo "$FAKE_UID" && exit 0
echo "fake id: unexpected arguments: $*" >&2
exit 1
"""


def _bootstrap(
    tmp_path: Path, accept: str, apt: bool = False, uid: int = 1000, pip_error: str = ""
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    python = tmp_path / "python3"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    for name in ("uv.lock", "pyproject.toml"):
        (tmp_path / name).write_text("")
    (tmp_path / ".venv").mkdir()
    calls = tmp_path / "calls"
    apt_get = tmp_path / "apt-get"
    apt_get.write_text(FAKE_APT)
    apt_get.chmod(0o755)
    fakes = tmp_path / "bin"
    fakes.mkdir()
    (fakes / "id").write_text(FAKE_ID)
    (fakes / "id").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    env["PATH"] = f"{fakes}{os.pathsep}{env.get('PATH', os.defpath)}"
    done = subprocess.run(
        [make, "-s", "-C", str(tmp_path), "-f", str(MAKEFILE), f"PYTHON_BOOT={python}",
         "UV_VERSION=9.9.9", f"APT_GET={apt_get if apt else 'no-such-apt-get'}",
         ".venv/.synced"],
        env={**env, "CALLS": str(calls), "ACCEPT": accept, "FAKE_UID": str(uid),
             "PIP_ERROR": pip_error},
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    installs = [
        line
        for line in calls.read_text().splitlines()
        if "pip install" in line or "apt-get" in line
    ]
    return done, installs


def test_a_python_whose_pip_works_installs_uv_as_before(tmp_path: Path) -> None:
    done, installs = _bootstrap(tmp_path, accept="*")
    assert done.returncode == 0, done.stderr
    assert installs == ["-m pip install --quiet uv==9.9.9"]
    assert (tmp_path / ".venv" / ".synced").exists()


def test_an_externally_managed_python_gets_uv_for_this_user(tmp_path: Path) -> None:
    done, installs = _bootstrap(tmp_path, accept="*--break-system-packages*")
    assert done.returncode == 0, done.stderr
    assert installs == [
        "-m pip install --quiet uv==9.9.9",
        "-m pip install --quiet --user uv==9.9.9",
        "-m pip install --quiet --user --break-system-packages uv==9.9.9",
    ]


def test_without_any_way_to_install_uv_make_says_what_to_do(tmp_path: Path) -> None:
    done, installs = _bootstrap(tmp_path, accept="no such call")
    assert done.returncode != 0
    assert len(installs) == 3
    assert "apt-get install python3-pip" in done.stderr
    assert not (tmp_path / ".venv" / ".synced").exists()


def test_as_root_without_pip_make_installs_pip_from_debian_then_uv(tmp_path: Path) -> None:
    done, installs = _bootstrap(tmp_path, accept="no such call", apt=True, uid=0)
    assert done.returncode == 0, done.stderr
    assert installs[3:] == [
        "apt-get update -qq",
        "apt-get install -y -qq --no-install-recommends python3-pip",
        "-m pip install --quiet --user --break-system-packages uv==9.9.9",
    ]


def test_apt_get_is_not_tried_by_a_user_who_is_not_root(tmp_path: Path) -> None:
    done, installs = _bootstrap(tmp_path, accept="no such call", apt=True, uid=1000)
    assert done.returncode != 0
    assert len(installs) == 3  # the three pip installs, and no apt-get
    assert "apt-get install python3-pip" in done.stderr


def test_when_pip_fails_to_reach_pypi_make_shows_its_error_not_install_pip(
    tmp_path: Path,
) -> None:
    proxy_error = "ERROR: ProxyError('Cannot connect to proxy.') for uv==9.9.9"
    done, installs = _bootstrap(tmp_path, accept="no such call", pip_error=proxy_error)
    assert done.returncode != 0
    assert len(installs) == 3
    assert proxy_error in done.stderr  # the last attempt's own error
    assert "-m pip install uv==9.9.9' failed" in done.stderr
    assert "install pip" not in done.stderr  # pip is there: installing it is not the fix
