"""SQLAlchemy tables, one module per aggregate; importing this package registers them all."""

from app.models.audit import AuditCheckpoint, AuditEntry
from app.models.base import Base
from app.models.dci import DciCallback, DciRegistration, DciSigningKey
from app.models.dci_jobs import DciJob
from app.models.geography import GeoUnit
from app.models.grievances import Grievance, GrievanceEvent
from app.models.ingest import UpdateBatch, UpdateRecordResult
from app.models.products import (
    AggregateQuery,
    AggregateSelection,
    AnalysisResult,
    DifferencingKey,
    PublicAnswer,
    PublicCube,
    PublicDistrict,
    PublicMapCube,
    PublicProductsDirty,
    PublicRefresh,
)
from app.models.programmes import AgreementProgramme, Programme, ProgrammeRule
from app.models.registry import Household, HouseholdHistory, Member, PmtModel
from app.models.requests import DataRequest, Obligation, RequestEvent, SpotCheck
from app.models.sharing import Agreement, ApiClient, Organization, SigningKey
from app.models.staff import StaffChallenge, StaffEnrolmentLink, StaffPasskey, StaffSession
from app.models.targeting import Simulation

__all__ = [
    "AggregateQuery",
    "AggregateSelection",
    "Agreement",
    "AgreementProgramme",
    "AnalysisResult",
    "ApiClient",
    "AuditCheckpoint",
    "AuditEntry",
    "Base",
    "DataRequest",
    "DciCallback",
    "DciJob",
    "DciRegistration",
    "DciSigningKey",
    "DifferencingKey",
    "GeoUnit",
    "Grievance",
    "GrievanceEvent",
    "Household",
    "HouseholdHistory",
    "Member",
    "Obligation",
    "Organization",
    "PmtModel",
    "Programme",
    "ProgrammeRule",
    "PublicAnswer",
    "PublicCube",
    "PublicDistrict",
    "PublicMapCube",
    "PublicProductsDirty",
    "PublicRefresh",
    "RequestEvent",
    "SigningKey",
    "Simulation",
    "SpotCheck",
    "StaffChallenge",
    "StaffEnrolmentLink",
    "StaffPasskey",
    "StaffSession",
    "UpdateBatch",
    "UpdateRecordResult",
]
