"""Orgs, their members and invitations (DESIGN §9, §14): `/v1/orgs…`, `/v1/org_invitations…`.

Names, plans and roles are checked by the core (`core.orgs`), which says which values it
takes; the models fix the types and refuse unknown fields.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lava_mcp.contract.base import Body, Moment, Shape

Plan = Literal["individual", "team", "enterprise"]
Role = Literal["admin", "member"]


class OrgCreate(Body):
    name: str = Field(
        min_length=1,
        max_length=200,
        examples=["Acme"],
        description="1 to 200 characters, not only spaces.",
        json_schema_extra={"pattern": r"\S"},
    )
    plan: Plan = "individual"


class MemberInvite(Body):
    wallet_id: str = Field(min_length=1, max_length=200, examples=["wal_01a2088fc5c4a4e635db3ed8a15d"])
    role: Role = "member"


class RoleChange(Body):
    role: Role


class Member(Shape):
    wallet_id: str
    role: Role


class Org(Shape):
    org_id: str
    name: str
    plan: Plan
    enabled: bool = Field(description="Team and enterprise members can fund only once an admin enables Lava.")
    members: list[Member]
    created_at: Moment | None


class Invitation(Shape):
    id: str
    org_id: str
    org_name: str
    wallet_id: str
    role: Role
    status: Literal["pending", "accepted", "declined", "revoked"]
    invited_by: str | None
    created_at: Moment | None
    resolved_at: Moment | None


class InvitationList(Shape):
    data: list[Invitation]
    has_more: bool
    next_cursor: str | None
