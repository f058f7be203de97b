"""An email's Message-ID: the same at every retry and replay (operators look a delivery
in doubt up by it in the mail server's log), and free of the user's id, which the mail
provider would otherwise keep after the user's erasure."""

from __future__ import annotations

import re
import uuid

from services.notifier.sender import MESSAGE_IDS, message_id


def test_a_message_id_is_stable_and_holds_neither_id() -> None:
    notice, user = uuid.uuid4(), uuid.uuid4()
    mid = message_id({"notice_id": notice, "user_id": user})
    assert mid == message_id({"notice_id": notice, "user_id": user})  # every retry
    assert re.fullmatch(r"<[0-9a-f-]{36}\.email@notifier\.imt>", mid)
    for value in (user, notice):
        assert str(value) not in mid
        assert value.hex not in mid.replace("-", "")
    name = f"{notice}.{user}"
    assert mid == f"<{uuid.uuid5(MESSAGE_IDS, name)}.email@notifier.imt>"  # as documented


def test_each_recipient_of_each_notice_has_its_own() -> None:
    notices, users = [uuid.uuid4() for _ in range(3)], [uuid.uuid4() for _ in range(50)]
    ids = {message_id({"notice_id": n, "user_id": u}) for n in notices for u in users}
    assert len(ids) == len(notices) * len(users)
