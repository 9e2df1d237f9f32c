"""Who is calling: the identity every read and write is scoped and audited by."""

from __future__ import annotations

from dataclasses import dataclass, field

from wattline.domain import Role


@dataclass(frozen=True)
class Principal:
    """Who is calling, and what they may see: exactly one of reseller_id / customer_id."""

    user_id: int
    role: Role
    reseller_id: int | None
    customer_id: int | None
    scopes: frozenset[str] = field(default_factory=frozenset)
    key_id: int | None = None
    #: The only sites of the organisation this user may see (granted per site); None: all of them.
    site_ids: frozenset[int] | None = None

    @property
    def sees_costs(self) -> bool:
        """Installers commission hardware: tariffs and costs are not theirs to see."""
        return self.role is not Role.INSTALLER

    def can(self, scope: str) -> bool:
        """Whether the credentials carry this scope (admin carries every scope)."""
        return scope in self.scopes or "admin" in self.scopes


def acting_for(customer_id: int) -> Principal:
    """A service acting for a customer (an export, a report): it reads what the customer's
    admin could, and nothing of other tenants."""
    return Principal(0, Role.CUSTOMER_ADMIN, None, customer_id, frozenset({"read"}))
