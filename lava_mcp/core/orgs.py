"""Orgs: members with roles, invitations they consent to, and the admin's switch that
gates funding.

In a `team` or `enterprise` org no member, admins included, can fund a wallet until an
admin enables Lava for the org (`individual` orgs are never gated). Saving a card is never
gated. A wallet belongs to at most one org.

Membership needs the member's consent (DESIGN §14): an admin *invites* a wallet
(`invite_member`: an `org_invitation`, pending), and only the invited wallet accepts or
declines it. Until it accepts, nothing about the wallet changes: it is not a member, the
funding gate does not apply to it, and the org's routes still answer it 404.

    pending ──accept──▶ accepted (the wallet is now a member)
       ├─────decline──▶ declined
       └──remove/revoke▶ revoked (by an admin)

A member can leave and an admin can remove a member, but an org always keeps an admin: the
last admin can neither leave, be removed, nor be made a member. Membership changes take the
org's row lock first, so two of them can't both pass that check on PostgreSQL.

Functions take `actor_wallet_id`: the wallet acting through the REST API, which must be a
member (others get 404, as if the org did not exist) and, to change anything, an admin
(403). `None` is the operator at the command line, who may do anything, and who may enrol a
wallet directly (`add_member`), since the operator runs the server.
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
from lava_mcp.store.models import Org, OrgInvitation, OrgMember, Wallet, utc_now

OPERATOR = "operator"  # `invited_by` when the operator invites from the command line
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
            "created_at": _iso(self.created_at),
        }


@dataclass(frozen=True)
class InvitationView:
    invitation_id: str
    org_id: str
    org_name: str
    wallet_id: str
    role: str
    status: str
    invited_by: str
    created_at: datetime
    resolved_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        """The invitation as the REST API and `lava-mcp org invitations --json` show it."""
        return {
            "id": self.invitation_id,
            "org_id": self.org_id,
            "org_name": self.org_name,
            "wallet_id": self.wallet_id,
            "role": self.role,
            "status": self.status,
            "invited_by": self.invited_by,
            "created_at": _iso(self.created_at),
            "resolved_at": _iso(self.resolved_at) if self.resolved_at else None,
        }

    def hint_json(self) -> dict[str, Any]:
        """The short form `get_balance` shows a wallet with pending invitations."""
        return {"id": self.invitation_id, "org_id": self.org_id, "org_name": self.org_name, "role": self.role}


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
                _resolve_pending(session, org_id, wallet_id, "accepted")
            else:
                _change_role(session, existing, role)
    except IntegrityError as error:
        raise Conflict(f"wallet {wallet_id} is already in another org") from error
    return get_org(db, org_id)


def set_role(
    db: Database, org_id: str, wallet_id: str, *, role: object, actor_wallet_id: str | None = None
) -> OrgView:
    """Change a member's role.

    Raises: NotFound (org, or the actor is not in it; the wallet is not a member),
    Forbidden (the actor is not an admin), BadRequest (role), Conflict (it would leave the
    org without an admin).
    """
    role = _check_choice("role", role, ROLES)
    with db.write() as session:
        _require_admin(session, org_id, actor_wallet_id)
        membership = session.get(OrgMember, (org_id, wallet_id))
        if membership is None:
            raise NotFound(f"wallet {wallet_id!r} is not a member of this org")
        _change_role(session, membership, role)
    return get_org(db, org_id)


def invite_member(
    db: Database,
    org_id: str,
    wallet_id: object,
    *,
    role: object = "member",
    actor_wallet_id: str | None = None,
) -> InvitationView:
    """Invite a wallet to the org; it becomes a member only when it accepts.

    Inviting a wallet that already has a pending invitation to this org updates that
    invitation's role. Nothing about the invited wallet changes here.
    Raises: NotFound (org, or the actor is not in it; unknown wallet), Forbidden (the actor
    is not an admin), BadRequest (role, wallet_id), Conflict (the wallet is already a
    member of this or another org).
    """
    role = _check_choice("role", role, ROLES)
    if not isinstance(wallet_id, str) or not wallet_id:
        raise BadRequest("wallet_id is required")
    with db.write() as session:
        _require_admin(session, org_id, actor_wallet_id)
        _require_wallet(session, wallet_id)
        membership = session.exec(select(OrgMember).where(OrgMember.wallet_id == wallet_id)).first()
        if membership is not None and membership.org_id == org_id:
            raise Conflict(
                f"wallet {wallet_id} is already a member of this org",
                next_step=f"to change its role: PUT /v1/orgs/{org_id}/members/{wallet_id} {{role}}",
            )
        if membership is not None:
            raise Conflict(f"wallet {wallet_id} is already in another org")
        invitation = _pending(session, org_id, wallet_id)
        if invitation is None:
            invitation = OrgInvitation(
                id=new_id("inv"),
                org_id=org_id,
                wallet_id=wallet_id,
                role=role,
                invited_by=actor_wallet_id or OPERATOR,
            )
        invitation.role = role
        session.add(invitation)
        session.flush()
        return _invitation_view(session, invitation)


def pending_invitations(db: Database, wallet_id: str) -> list[InvitationView]:
    """The invitations waiting for this wallet's answer, oldest first."""
    with db.read() as session:
        rows = session.exec(
            select(OrgInvitation)
            .where(OrgInvitation.wallet_id == wallet_id, OrgInvitation.status == "pending")
            .order_by(col(OrgInvitation.created_at), col(OrgInvitation.id))
        ).all()
        return [_invitation_view(session, row) for row in rows]


def org_invitations(db: Database, org_id: str, *, actor_wallet_id: str | None = None) -> list[InvitationView]:
    """The org's pending invitations (for its admins).

    Raises: NotFound (org, or the actor is not in it), Forbidden (the actor is not an admin).
    """
    with db.read() as session:
        _require_admin(session, org_id, actor_wallet_id, lock=False)
        rows = session.exec(
            select(OrgInvitation)
            .where(OrgInvitation.org_id == org_id, OrgInvitation.status == "pending")
            .order_by(col(OrgInvitation.created_at), col(OrgInvitation.id))
        ).all()
        return [_invitation_view(session, row) for row in rows]


def answer_invitation(
    db: Database, invitation_id: str, *, accept: bool, wallet_id: str | None = None
) -> InvitationView:
    """The invited wallet's answer: accept (it becomes a member) or decline.

    `wallet_id` is the wallet answering through the REST API; `None` is the operator.
    Raises: NotFound (unknown invitation, or another wallet's), Conflict (no longer
    pending; accepting while a member of an org).
    """
    try:
        with db.write() as session:
            found = session.exec(
                select(OrgInvitation.org_id).where(OrgInvitation.id == invitation_id)
            ).first()
            # Locks in the order every membership change takes them: the org, then the invitation.
            if found is not None:
                _lock_org(session, found)
            invitation = session.get(OrgInvitation, invitation_id, with_for_update=True)
            if invitation is None or (wallet_id is not None and invitation.wallet_id != wallet_id):
                raise NotFound(f"unknown invitation {invitation_id[:80]!r}")
            if invitation.status != "pending":
                raise Conflict(f"this invitation was already {invitation.status}")
            if accept:
                current = session.exec(
                    select(OrgMember).where(OrgMember.wallet_id == invitation.wallet_id)
                ).first()
                if current is not None:
                    raise Conflict(
                        f"wallet {invitation.wallet_id} is already in an org ({current.org_id})",
                        next_step=f"leave it first: POST /v1/orgs/{current.org_id}/leave",
                    )
                session.add(
                    OrgMember(org_id=invitation.org_id, wallet_id=invitation.wallet_id, role=invitation.role)
                )
            invitation.status = "accepted" if accept else "declined"
            invitation.resolved_at = utc_now()
            session.add(invitation)
            session.flush()
            return _invitation_view(session, invitation)
    except IntegrityError as error:  # a concurrent acceptance of another org's invitation won
        raise Conflict("this wallet is already in an org") from error


def leave(db: Database, org_id: str, wallet_id: str) -> None:
    """A member leaves the org (its wallet is no longer gated by it).

    Raises: NotFound (org, or the wallet is not a member), Conflict (the last admin).
    """
    with db.write() as session:
        _lock_org(session, org_id)
        membership = _membership(session, org_id, wallet_id)
        assert membership is not None
        _require_another_admin(session, membership, "leave")
        session.delete(membership)


def remove_member(db: Database, org_id: str, wallet_id: str, *, actor_wallet_id: str | None = None) -> None:
    """An admin removes a member, or revokes a wallet's pending invitation.

    Raises: NotFound (org, or the actor is not in it; the wallet is neither a member nor
    invited), Forbidden (the actor is not an admin), Conflict (the last admin).
    """
    with db.write() as session:
        _require_admin(session, org_id, actor_wallet_id)
        membership = session.get(OrgMember, (org_id, wallet_id))
        if membership is None:
            if not _resolve_pending(session, org_id, wallet_id, "revoked"):
                raise NotFound(f"wallet {wallet_id!r} is not a member of this org, nor invited")
            return
        _require_another_admin(session, membership, "be removed")
        session.delete(membership)


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


def _require_admin(session: Session, org_id: str, actor_wallet_id: str | None, *, lock: bool = True) -> None:
    """Raises NotFound for outsiders, Forbidden for members. Takes the org's lock first (for a
    write), so the actor's role is read after any membership change that ran before."""
    if lock:
        _lock_org(session, org_id)
    membership = _membership(session, org_id, actor_wallet_id)
    if membership is not None and membership.role != "admin":
        raise Forbidden("only an org admin can do that", next_step="ask an admin of the org")


def _lock_org(session: Session, org_id: str) -> None:
    """The org's row lock: every membership change of one org runs one at a time."""
    session.exec(select(Org.id).where(Org.id == org_id).with_for_update()).first()


def _change_role(session: Session, membership: OrgMember, role: str) -> None:
    if membership.role == "admin" and role != "admin":
        _require_another_admin(session, membership, "become a member")
    membership.role = role
    session.add(membership)


def _require_another_admin(session: Session, membership: OrgMember, change: str) -> None:
    """Raises Conflict when `membership` is its org's last admin."""
    if membership.role != "admin":
        return
    admins = session.exec(
        select(OrgMember.wallet_id).where(OrgMember.org_id == membership.org_id, OrgMember.role == "admin")
    ).all()
    if len(admins) <= 1:
        raise Conflict(
            f"the last admin of an org can't {change}",
            next_step=(
                f"make another member an admin first: PUT /v1/orgs/{membership.org_id}/members/"
                '{wallet_id} with {"role": "admin"}'
            ),
        )


def _pending(session: Session, org_id: str, wallet_id: str) -> OrgInvitation | None:
    return session.exec(
        select(OrgInvitation)
        .where(
            OrgInvitation.org_id == org_id,
            OrgInvitation.wallet_id == wallet_id,
            OrgInvitation.status == "pending",
        )
        .with_for_update()
    ).first()


def _resolve_pending(session: Session, org_id: str, wallet_id: str, status: str) -> bool:
    """Close the wallet's pending invitation to the org, if any; returns whether there was one."""
    invitation = _pending(session, org_id, wallet_id)
    if invitation is None:
        return False
    invitation.status = status
    invitation.resolved_at = utc_now()
    session.add(invitation)
    return True


def _invitation_view(session: Session, invitation: OrgInvitation) -> InvitationView:
    org = session.get(Org, invitation.org_id)
    assert org is not None
    return InvitationView(
        invitation_id=invitation.id,
        org_id=invitation.org_id,
        org_name=org.name,
        wallet_id=invitation.wallet_id,
        role=invitation.role,
        status=invitation.status,
        invited_by=invitation.invited_by,
        created_at=invitation.created_at,
        resolved_at=invitation.resolved_at,
    )


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


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
