"""SQLAlchemy tables, one module per aggregate; importing this package registers them all."""

from app.models.base import Base
from app.models.geography import GeoUnit
from app.models.registry import Household, HouseholdHistory, Member, PmtModel

__all__ = ["Base", "GeoUnit", "Household", "HouseholdHistory", "Member", "PmtModel"]
