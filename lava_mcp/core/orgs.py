"""Orgs: members with roles, and the admin's switch that gates funding.

In a `team` or `enterprise` org no member, admins included, can fund a wallet until an
admin enables Lava for the org (`individual` orgs are never gated). Saving a card is never
gated. A wallet belongs to at most one org.

Functions take `actor_wallet_id`: the wallet acting through the REST API, which must be a
member (others get 404, as if the org did not exist) and, to change anything, an admin
(403). `None` is the operator at the command line, who may do anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from lava_mcp.errors import BadRequest, Conflict, Forbidden, NotFound
from lava_mcp.ids import new_id
from lava_mcp.store.db import Database
from lava_mcp.store.models import Org, OrgMember, Wallet

PLANS = ("individual", "team", "enterprise")
GATED_PLANS = ("team", "enterprise")
ROLES = ("admin", "member")


@dataclass(frozen=True)
class Member:
    wallet_id: str
    role: str


@dataclass(frozen=True)
class OrgView:
    org_id: str
    name: str
    plan: str
    enabled: bool
    members: tuple[Member, ...]
    created_at: datetime

    @property
    def admins(self) -> list[str]:
        return [member.wallet_id for member in self.members if member.role == "admin"]

    def to_json(self) -> dict[str, Any]:
        """The org as `GET /v1/orgs/{id}` and `lava-mcp org … --json` show it."""
        return {
            "org_id": self.org_id,
            "name": self.name,
            "plan": self.plan,
            "enabled": self.enabled,
            "members": [{"wallet_id": member.wallet_id, "role": member.role} for member in self.members],
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
        }


def create_org(db: Database, *, name: object, plan: object, admin_wallet_id: str) -> OrgView:
    """A new org, not enabled, whose first admin is `admin_wallet_id`.

    Raises: BadRequest (name, plan), NotFound (unknown wallet), Conflict (the wallet is
    already in an org).
    """
    name = name.strip() if isinstance(name, str) else ""
    if not name or len(name) > 200:
        raise BadRequest("an org needs a name of 1 to 200 characters")
    plan = _check_choice("plan", plan, PLANS)
    org = Org(id=new_id("org"), name=name, plan=plan, enabled=False)
    try:
        with db.write() as session:
            _require_wallet(session, admin_wallet_id)
            _require_not_in_an_org(session, admin_wallet_id)
            session.add(org)
            session.flush()
            session.add(OrgMember(org_id=org.id, wallet_id=admin_wallet_id, role="admin"))
    except IntegrityError as error:
        raise Conflict(f"wallet {admin_wallet_id} is already in an org") from error
    return get_org(db, org.id)


def get_org(db: Database, org_id: str, *, actor_wallet_id: str | None = None) -> OrgView:
    """The org and its members.

    Raises: NotFound for an unknown org, or one the actor is not a member of.
    """
    with db.read() as session:
        _membership(session, org_id, actor_wallet_id)
        return _view(session, org_id)


def add_member(
    db: Database,
    org_id: str,
    wallet_id: object,
    *,
    role: object = "member",
    actor_wallet_id: str | None = None,
) -> OrgView:
    """Add a wallet to the org (or change its role, if it is already a member).

    Raises: NotFound (org, or the actor is not in it; unknown wallet), Forbidden (the actor
    is not an admin), BadRequest (role), Conflict (the wallet is in another org).
    """
    role = _check_choice("role", role, ROLES)
    if not isinstance(wallet_id, str) or not wallet_id:
        raise BadRequest("wallet_id is required")
    try:
        with db.write() as session:
            _require_admin(session, org_id, actor_wallet_id)
            _require_wallet(session, wallet_id)
            existing = session.exec(select(OrgMember).where(OrgMember.wallet_id == wallet_id)).first()
            if existing is not None and existing.org_id != org_id:
                raise Conflict(f"wallet {wallet_id} is already in another org")
            if existing is None:
                session.add(OrgMember(org_id=org_id, wallet_id=wallet_id, role=role))
            else:
                existing.role = role
                session.add(existing)
    except IntegrityError as error:
        raise Conflict(f"wallet {wallet_id} is already in another org") from error
    return get_org(db, org_id)


def set_enabled(db: Database, org_id: str, enabled: bool, *, actor_wallet_id: str | None = None) -> OrgView:
    """The admin's switch: enable (or disable) Lava, and so funding, for the org's members.

    Raises: NotFound (org, or the actor is not in it), Forbidden (the actor is not an admin).
    """
    with db.write() as session:
        _require_admin(session, org_id, actor_wallet_id)
        org = session.get(Org, org_id)
        assert org is not None
        org.enabled = enabled
        session.add(org)
    return get_org(db, org_id)


def require_funding_allowed(session: Session, wallet_id: str) -> None:
    """The gate: a member of a team or enterprise org may fund only once the org is enabled.

    Raises: Forbidden naming the org's admins and how they enable it.
    """
    membership = session.exec(select(OrgMember).where(OrgMember.wallet_id == wallet_id)).first()
    if membership is None:
        return
    org = session.get(Org, membership.org_id)
    if org is None or org.enabled or org.plan not in GATED_PLANS:
        return
    admins = session.exec(
        select(OrgMember.wallet_id)
        .where(OrgMember.org_id == org.id, OrgMember.role == "admin")
        .order_by(col(OrgMember.created_at))
    ).all()
    who = ", ".join(admins) if admins else "an org admin"
    raise Forbidden(
        f"Funding is not enabled for your org {org.name!r} ({org.plan} plan) yet. "
        f"An org admin must enable Lava first: {who}.",
        next_step=(
            f"ask an admin of org {org.id} ({who}) to enable it: `lava-mcp org enable {org.id}` "
            f"or POST /v1/orgs/{org.id}/enable"
        ),
        extra={"org_id": org.id, "admins": list(admins)},
    )


def _view(session: Session, org_id: str) -> OrgView:
    org = session.get(Org, org_id)
    if org is None:
        raise NotFound(f"unknown org {org_id!r}")
    members = session.exec(
        select(OrgMember).where(OrgMember.org_id == org_id).order_by(col(OrgMember.created_at))
    ).all()
    return OrgView(
        org_id=org.id,
        name=org.name,
        plan=org.plan,
        enabled=org.enabled,
        members=tuple(Member(member.wallet_id, member.role) for member in members),
        created_at=org.created_at,
    )


def _membership(session: Session, org_id: str, actor_wallet_id: str | None) -> OrgMember | None:
    """The actor's membership; None for the operator. Raises NotFound for outsiders."""
    if session.get(Org, org_id) is None:
        raise NotFound(f"unknown org {org_id!r}")
    if actor_wallet_id is None:
        return None
    membership = session.get(OrgMember, (org_id, actor_wallet_id))
    if membership is None:
        raise NotFound(f"unknown org {org_id!r}")  # outsiders can't tell it exists
    return membership


def _require_admin(session: Session, org_id: str, actor_wallet_id: str | None) -> None:
    membership = _membership(session, org_id, actor_wallet_id)
    if membership is not None and membership.role != "admin":
        raise Forbidden("only an org admin can do that", next_step="ask an admin of the org")


def _require_wallet(session: Session, wallet_id: str) -> None:
    if session.get(Wallet, wallet_id) is None:
        raise NotFound(f"unknown wallet {wallet_id!r}")


def _require_not_in_an_org(session: Session, wallet_id: str) -> None:
    if session.exec(select(OrgMember).where(OrgMember.wallet_id == wallet_id)).first() is not None:
        raise Conflict(f"wallet {wallet_id} is already in an org")


def _check_choice(field: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise BadRequest(f"{field} must be one of {', '.join(choices)}")
    return value
