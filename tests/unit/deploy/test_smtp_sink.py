"""The SMTP sink's mailbox: listening does not wait for old mail, which is trimmed; a
developer reads a message decoded."""

import http.client
import json
import threading
from email.message import EmailMessage
from pathlib import Path

from deploy.local.smtp_sink import Mailbox, readable, serve_web

RAW = b"Subject: hello\\r\\nTo: a@example.org\\r\\n\\r\\nbody\\r\\n"


def _number(ident: str) -> int:
    return int(ident.split("-")[0])


def test_a_restarted_box_numbers_after_the_old_mail_and_keeps_only_the_newest(
    tmp_path: Path,
) -> None:
    first = Mailbox(tmp_path)
    first.load()
    old = [first.store(RAW, "s@example.org", ["a@example.org"]) for _ in range(30)]

    second = Mailbox(tmp_path, keep=10)
    arrived = second.store(RAW, "s@example.org", ["b@example.org"])  # while it loads
    second.load()

    assert _number(arrived) == 31
    listed = [m["id"] for m in second.messages()]
    assert listed == [*old[-9:], arrived]  # the newest ten, the one just in among them
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == listed
    assert len(list(tmp_path.glob("*.eml"))) == 10


def test_readers_of_the_list_wait_until_the_old_mail_is_read(tmp_path: Path) -> None:
    Mailbox(tmp_path).store(RAW, None, ["a@example.org"])
    box = Mailbox(tmp_path)
    seen: list[int] = []
    reader = threading.Thread(target=lambda: seen.append(len(box.messages())))
    reader.start()
    reader.join(timeout=0.2)
    assert reader.is_alive()  # still waiting: a partial list would be a lie
    box.load()
    reader.join(timeout=5)
    assert seen == [1]


def test_mail_holding_sign_in_links_is_readable_by_the_sink_only(tmp_path: Path) -> None:
    folder = tmp_path / "mail"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    box = Mailbox(folder)
    box.store(RAW, None, ["a@example.org"])
    assert folder.stat().st_mode & 0o777 == 0o700
    written = list(folder.iterdir())
    assert {p.suffix for p in written} == {".eml", ".json"}
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in written)


def test_a_developer_reads_a_mailed_link_whole() -> None:
    link = "https://localhost:8443/verify-email#token=" + "a1B2c3D4e5" * 10
    message = EmailMessage()
    message["Subject"] = "Confirm your email"
    message["To"] = "a@example.org"
    message["From"] = "iMT <notices@imt.example>"
    message.set_content(f"Hello,\n\nconfirm here: {link}\n", cte="quoted-printable")
    message.add_alternative(f"<p><a href='{link}'>confirm</a></p>", subtype="html")
    raw = bytes(message)
    assert link not in raw.decode()  # as mailed: "=3D" and soft line breaks

    text = readable(raw)

    assert link in text
    assert "Subject: Confirm your email" in text
    assert "<p>" not in text  # the text part, not the HTML


def test_the_viewer_answers_many_requests_on_one_connection(tmp_path: Path) -> None:
    box = Mailbox(tmp_path)
    box.load()
    ident = box.store(RAW, None, ["a@example.org"])
    httpd = serve_web(box, 0)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", httpd.server_address[1], timeout=5)
        for path in ("/api/messages", f"/api/messages/{ident}", "/api/messages/nope"):
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            assert response.status == (404 if path.endswith("nope") else 200)
            # Kept open: the next request goes on this socket, not a new one.
            assert conn.sock is not None, path
        conn.close()
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_list_narrows_to_the_recipients_asked_for(tmp_path: Path) -> None:
    box = Mailbox(tmp_path)
    box.load()
    to_a = box.store(RAW, None, ["A@example.org"])
    to_b = box.store(RAW, None, ["b@example.org", "c@example.org"])
    box.store(RAW, None, ["d@example.org"])
    httpd = serve_web(box, 0)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", httpd.server_address[1], timeout=5)

        def listed(query: str) -> list[str]:
            conn.request("GET", f"/api/messages{query}")
            return [m["id"] for m in json.loads(conn.getresponse().read())]

        assert listed("?to=a%40example.org") == [to_a]  # any case
        assert listed("?to=c@example.org&to=A@example.org") == [to_a, to_b]
        assert listed("?to=nobody@example.org") == []
        assert len(listed("")) == 3
        conn.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
