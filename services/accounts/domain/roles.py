"""Which operator role may do what (need-to-know, promise P-07).

Analysts never see personal data: every endpoint they may call answers aggregates.
"""

from __future__ import annotations

from shared.auth import OperatorRole

SUPPORT: OperatorRole = "support"
PRIVACY_OFFICER: OperatorRole = "privacy_officer"
ANALYST: OperatorRole = "analyst"
ADMIN: OperatorRole = "admin"
ALL_ROLES: tuple[OperatorRole, ...] = (SUPPORT, PRIVACY_OFFICER, ANALYST, ADMIN)

PERMISSIONS: dict[str, tuple[OperatorRole, ...]] = {
    "users.search": (SUPPORT, PRIVACY_OFFICER),
    "users.read": (SUPPORT, PRIVACY_OFFICER),
    "users.change": (SUPPORT,),
    "requests.list": (SUPPORT,),
    "requests.reply": (SUPPORT,),
    "stats.read": (ANALYST, ADMIN, PRIVACY_OFFICER),
    "audit.read": (PRIVACY_OFFICER, ADMIN),
    "operators.create": (ADMIN,),
    "operators.disable": (ADMIN,),
    "operators.roles": (ADMIN,),
    "policy.publish": (PRIVACY_OFFICER, ADMIN),
    "announcements.create": (ADMIN, SUPPORT),
    "incidents.declare": (PRIVACY_OFFICER, ADMIN),
    "recipients.register": (ADMIN,),
    "recipients.export": (PRIVACY_OFFICER,),
    "deletions.request": (SUPPORT, PRIVACY_OFFICER),
    "deletions.approve": (PRIVACY_OFFICER, ADMIN),
    # Who may request may withdraw their own request; who may approve may reject one.
    "deletions.withdraw": (SUPPORT, PRIVACY_OFFICER),
    "deletions.reject": (PRIVACY_OFFICER, ADMIN),
    "invoices.record": (SUPPORT, ADMIN),
}
