"""The compose gateway's nginx files (deploy/gateway/, generated) pass the real nginx's
configuration test. Only what exists in its container alone is mapped onto this
machine first: the APIs' compose host names, the mounted folders and the worker user."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from deploy import compose
from deploy.local import gateway, procs
from deploy.local.tls import ensure_certificates

GENERATED = Path(__file__).resolve().parents[2] / "deploy" / "gateway"


def _on_this_machine(text: str, tmp: Path) -> str:
    text = text.replace(compose.GATEWAY_CONF, str(tmp / "conf"))
    text = text.replace(str(compose.GATEWAY_TLS), str(tmp / "tls"))
    text = text.replace("/srv/web", str(tmp / "web"))
    text = text.replace("/tmp/nginx.pid", str(tmp / "nginx.pid"))
    text = re.sub(r"server [a-z]+-api:", "server 127.0.0.1:", text)
    worker = "user www-data www-data;\n" if procs.is_root() else ""
    return text.replace("user nginx;\n", worker)


def test_the_compose_gateway_configuration_passes_nginx_t(tmp_path: Path) -> None:
    files = compose.gateway_files()
    assert {p.name: p.read_text() for p in GENERATED.iterdir()} == files  # make docs ran
    assert "server accounts-api:8101" in files["nginx.conf"]
    (tmp_path / "conf").mkdir()
    (tmp_path / "web").mkdir()
    ensure_certificates(tmp_path / "tls")
    for name, text in files.items():
        (tmp_path / "conf" / name).write_text(_on_this_machine(text, tmp_path))
    conf = tmp_path / "conf" / "nginx.conf"
    nginx = gateway.ensure_binary()
    done = subprocess.run(
        [nginx, "-t", "-p", f"{tmp_path}/", "-c", str(conf), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr
