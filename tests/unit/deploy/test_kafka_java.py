"""Kafka 4.x runs on Java 17 or later: an older Java is refused before Maven fetches the
jars, not found out later as an UnsupportedClassVersionError. A fake `java` on PATH
plays each version; nothing is fetched or started."""

from pathlib import Path

import pytest

from deploy.local import kafka, procs
from deploy.local.layout import Layout, Ports


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.9" 2023-10-17\nOpenJDK Runtime Environment', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('openjdk version "11.0.21" 2023-10-17', 11),
        ('java version "1.8.0_392"\nJava(TM) SE Runtime Environment', 8),
        ('openjdk version "17-ea" 2021-09-14', 17),
        ("no version here", None),
    ],
)
def test_the_java_version_is_read_from_java_dash_version(output: str, major: int | None) -> None:
    assert kafka.java_major(output) == major


def _fake_java(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    fakes = tmp_path / "bin"
    fakes.mkdir()
    java = fakes / "java"
    # Like the real one: the version on stderr.
    java.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2023-10-17' >&2\n")
    java.chmod(0o755)
    monkeypatch.setenv("PATH", str(fakes))


def test_java_8_is_refused_with_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_java(tmp_path, monkeypatch, "1.8.0_392")
    with pytest.raises(procs.StackError) as refused:
        kafka.require_java()
    assert str(refused.value) == (
        "Kafka 4.x needs Java 17 or later (found 8): apt-get install openjdk-17-jre-headless"
    )


def test_java_17_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_java(tmp_path, monkeypatch, "17.0.9")
    kafka.require_java()


def test_an_old_java_stops_the_start_before_maven_fetches_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_java(tmp_path, monkeypatch, "11.0.21")
    fetched: list[Layout] = []
    monkeypatch.setattr(procs, "require_free", lambda *_args: None)  # the real ports: not ours
    monkeypatch.setattr(kafka, "ensure_libs", fetched.append)
    layout = Layout(state=tmp_path / "state", cache=tmp_path / "cache", ports=Ports.from_env())
    with pytest.raises(procs.StackError, match=r"found 11\)"):
        kafka._start(layout)
    assert fetched == []
