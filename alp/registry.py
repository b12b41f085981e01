"""The model registry: one SageMaker model package per bundle, in the stack's model package group.

A package records where its bundle lives, the sha256 of ``bundle.json`` and of every model file, the
dataset version it was trained on and its headline metrics (``CustomerMetadataProperties``), and its
``ModelApprovalStatus`` (``Approved`` or ``Rejected``, decided by the evaluation gate). The labeling
pipeline runs the newest Approved bundle; an empty group means a cold start (no model yet).

The group is created by the CDK stack in the cloud. Only the local/embedded mode (moto) may create it,
and only when asked explicitly (``create_group_if_missing=True`` or :func:`ensure_model_package_group`),
so a misconfigured cloud deployment fails loudly instead of growing a stray group.

All SageMaker calls go through :func:`alp.aws.client`; every other module talks to the registry here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from alp import aws, storage
from alp.bundle import (
    DESCRIPTOR_NAME,
    MODEL_ROLES,
    BundleDescriptor,
    BundleHashMismatch,
    LoadedBundle,
    load_bundle,
    parse_descriptor,
    sha256_bytes,
)
from alp.resources import ResourceNames
from alp.settings import Settings

ApprovalStatus = Literal["Approved", "Rejected", "PendingManualApproval"]

# botocore's model for CustomerMetadataProperties: at most 50 entries, keys 1-128 and values 1-256
# characters of letters, digits, spaces and ``_.:/=+-@``. JSON does not fit, so each fact gets a key.
_MAX_PROPERTIES = 50
_META_CHARS = re.compile(r"^[\w\s.:/=+\-@]*$", re.UNICODE)
_METRIC_PREFIX = "metric:"
_SHA_PREFIX = "sha256:"


class RegistryError(ValueError):
    """The registry is missing, inconsistent, or a bundle cannot be registered as asked."""


class RegisteredBundle(BaseModel):
    """One model package, parsed back into the facts the pipeline needs."""

    model_config = ConfigDict(frozen=True)

    arn: str
    version: int
    status: str
    created_at: str
    bundle_uri: str
    bundle_id: str
    dataset_version: str | None = None
    keypoint_schema: str | None = None
    descriptor_sha256: str
    model_sha256: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    report_uri: str | None = None


def _account() -> str:
    account = aws.account_id()
    return account


def group_name(settings: Settings) -> str:
    """The model package group the stack created for these settings in this account."""
    return ResourceNames.from_settings(settings, _account()).model_package_group


def _group_exists(sm: Any, name: str) -> bool:
    try:
        sm.describe_model_package_group(ModelPackageGroupName=name)
        return True
    except sm.exceptions.ClientError as exc:
        if aws.error_code(exc) in ("ValidationException", "ResourceNotFound"):
            return False
        raise


def ensure_model_package_group(settings: Settings) -> str:
    """Create the group if it is missing. Local/embedded mode only: the stack owns it in the cloud."""
    sm = aws.client("sagemaker")
    name = group_name(settings)
    if not _group_exists(sm, name):
        sm.create_model_package_group(
            ModelPackageGroupName=name,
            ModelPackageGroupDescription="Head detector + two pose models (alp bundles), one package per bundle",
        )
    return name


# --- metadata encoding (pure) ---------------------------------------------------------------------
def _check_value(key: str, value: str) -> str:
    if not value or len(value) > 256 or not _META_CHARS.match(value):
        raise RegistryError(
            f"registry metadata {key!r}: value {value[:80]!r} must be 1-256 characters of letters, digits, "
            "spaces and _.:/=+-@ (SageMaker's CustomerMetadataProperties rule)"
        )
    return value


def encode_metadata(
    *,
    bundle_uri: str,
    descriptor: BundleDescriptor,
    descriptor_sha256: str,
    metrics: dict[str, Any],
    headline: tuple[str, ...] = (),
    report_uri: str | None = None,
) -> dict[str, str]:
    """CustomerMetadataProperties for one bundle. Headline metrics come first so they survive the cap."""
    props: dict[str, str] = {
        "bundle_uri": bundle_uri,
        "bundle_id": descriptor.bundle_id,
        "descriptor_sha256": descriptor_sha256,
        "keypoint_schema": descriptor.keypoint_schema,
    }
    if descriptor.dataset_version:
        props["dataset_version"] = descriptor.dataset_version
    if report_uri:
        props["report_uri"] = report_uri
    for role in MODEL_ROLES:
        props[_SHA_PREFIX + role] = descriptor.models[role].sha256
    numeric = {k: float(v) for k, v in metrics.items()
               if isinstance(v, int | float) and not isinstance(v, bool) and v == v}
    ordered = [k for k in headline if k in numeric] + sorted(k for k in numeric if k not in headline)
    for name in ordered:
        if len(props) >= _MAX_PROPERTIES:
            break
        key = _METRIC_PREFIX + name
        if len(key) <= 128 and _META_CHARS.match(name):
            props[key] = f"{numeric[name]:.6g}"
    for key, value in props.items():
        _check_value(key, value)
    return props


def decode_package(pkg: dict[str, Any]) -> RegisteredBundle:
    """A DescribeModelPackage response -> :class:`RegisteredBundle` (raises when it is not ours)."""
    meta: dict[str, str] = pkg.get("CustomerMetadataProperties") or {}
    if "bundle_uri" not in meta or "bundle_id" not in meta or "descriptor_sha256" not in meta:
        raise RegistryError(f"model package {pkg.get('ModelPackageArn')} has no alp bundle metadata")
    metrics: dict[str, float] = {}
    for key, value in meta.items():
        if key.startswith(_METRIC_PREFIX):
            try:
                metrics[key[len(_METRIC_PREFIX):]] = float(value)
            except ValueError:
                continue
    created = pkg.get("CreationTime")
    return RegisteredBundle(
        arn=pkg["ModelPackageArn"],
        version=int(pkg.get("ModelPackageVersion") or 0),
        status=pkg.get("ModelApprovalStatus", "PendingManualApproval"),
        created_at=created.isoformat() if created is not None and hasattr(created, "isoformat") else str(created or ""),
        bundle_uri=meta["bundle_uri"],
        bundle_id=meta["bundle_id"],
        dataset_version=meta.get("dataset_version"),
        keypoint_schema=meta.get("keypoint_schema"),
        descriptor_sha256=meta["descriptor_sha256"],
        model_sha256={k[len(_SHA_PREFIX):]: v for k, v in meta.items() if k.startswith(_SHA_PREFIX)},
        metrics=metrics,
        report_uri=meta.get("report_uri"),
    )


# --- queries ----------------------------------------------------------------------------------------
def list_bundles(settings: Settings, status: ApprovalStatus | None = None) -> list[RegisteredBundle]:
    """Every alp package in the group, newest version first; ``[]`` when the group does not exist."""
    sm = aws.client("sagemaker")
    name = group_name(settings)
    if not _group_exists(sm, name):
        return []
    kwargs: dict[str, Any] = {"ModelPackageGroupName": name, "SortBy": "CreationTime", "SortOrder": "Descending"}
    if status:
        kwargs["ModelApprovalStatus"] = status
    out: list[RegisteredBundle] = []
    for page in sm.get_paginator("list_model_packages").paginate(**kwargs):
        for summary in page.get("ModelPackageSummaryList", []):
            # Summaries carry no CustomerMetadataProperties in the real API: describe each package.
            pkg = sm.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
            try:
                out.append(decode_package(pkg))
            except RegistryError:
                continue  # a package someone registered by hand; not a bundle of ours
    out.sort(key=lambda b: b.version, reverse=True)
    return out


def latest_approved(settings: Settings) -> RegisteredBundle | None:
    """The champion: the newest Approved bundle, or None on a cold start."""
    approved = list_bundles(settings, status="Approved")
    return approved[0] if approved else None


def latest_approved_bundle_uri(settings: Settings) -> str | None:
    """URI of the bundle the labeling step should run; None = cold start (nothing approved yet)."""
    champion = latest_approved(settings)
    return champion.bundle_uri if champion else None


def find_bundle(settings: Settings, bundle_id: str) -> RegisteredBundle | None:
    for registered in list_bundles(settings):
        if registered.bundle_id == bundle_id:
            return registered
    return None


def verify_descriptor(registered: RegisteredBundle) -> None:
    """Refuse a bundle whose ``bundle.json`` is not the one recorded at registration."""
    text = storage.read_bytes(storage.join(registered.bundle_uri.rstrip("/"), DESCRIPTOR_NAME))
    actual = sha256_bytes(text)
    if actual != registered.descriptor_sha256:
        raise BundleHashMismatch(
            f"bundle {registered.bundle_id}: bundle.json has sha256 {actual[:12]}..., the registry records "
            f"{registered.descriptor_sha256[:12]}...; refusing to load it"
        )


def verify_registered(registered: RegisteredBundle, cache_dir: str | Path) -> LoadedBundle:
    """Load a registered bundle, refusing it unless ``bundle.json`` and every model match the registry.

    :func:`alp.bundle.load_bundle` checks the files against the descriptor; this also checks the
    descriptor against the hash recorded at registration, so a rewritten ``bundle.json`` is caught too.
    """
    verify_descriptor(registered)
    loaded = load_bundle(registered.bundle_uri, cache_dir)
    for role, sha in registered.model_sha256.items():
        model = loaded.descriptor.models.get(role)  # type: ignore[call-overload]
        if model is not None and model.sha256 != sha:
            raise BundleHashMismatch(f"bundle {registered.bundle_id}: {role} differs from the registry")
    return loaded


def load_approved_bundle(settings: Settings, cache_dir: str | Path) -> LoadedBundle | None:
    """The champion bundle, fetched and verified against the registry; None on a cold start."""
    champion = latest_approved(settings)
    return verify_registered(champion, cache_dir) if champion else None


# --- registration ------------------------------------------------------------------------------------
def register_bundle(
    settings: Settings,
    bundle_uri: str,
    *,
    approved: bool,
    metrics: dict[str, Any] | None = None,
    report_uri: str | None = None,
    description: str = "",
    create_group_if_missing: bool = False,
) -> RegisteredBundle:
    """Register ``bundle_uri`` as Approved or Rejected. Idempotent per bundle id.

    Registering the same bundle again returns its existing package (its status is updated if the new
    decision differs); a different bundle under an already registered id is refused.
    """
    sm = aws.client("sagemaker")
    name = group_name(settings)
    if not _group_exists(sm, name):
        if not create_group_if_missing:
            raise RegistryError(
                f"model package group {name!r} does not exist: deploy the stack (it creates the group), or "
                "pass create_group_if_missing / --create-group in the local embedded mode"
            )
        ensure_model_package_group(settings)
    raw = storage.read_bytes(storage.join(bundle_uri.rstrip("/"), DESCRIPTOR_NAME))
    descriptor = parse_descriptor(raw.decode("utf-8"))
    descriptor_sha = sha256_bytes(raw)
    status: ApprovalStatus = "Approved" if approved else "Rejected"
    props = encode_metadata(
        bundle_uri=bundle_uri,
        descriptor=descriptor,
        descriptor_sha256=descriptor_sha,
        metrics=metrics if metrics is not None else descriptor.metrics,
        headline=settings.training.gate_metrics,
        report_uri=report_uri,
    )
    existing = find_bundle(settings, descriptor.bundle_id)
    if existing is not None:
        if existing.descriptor_sha256 != descriptor_sha:
            raise RegistryError(
                f"bundle id {descriptor.bundle_id!r} is already registered ({existing.arn}) with a different "
                "bundle.json; a new bundle needs a new id"
            )
        if existing.status == status:
            return existing
        sm.update_model_package(
            ModelPackageArn=existing.arn, ModelApprovalStatus=status, CustomerMetadataProperties=props,
            ApprovalDescription=description[:1024] or f"alp gate: {status}",
        )
        return decode_package(sm.describe_model_package(ModelPackageName=existing.arn))
    desc_text = description or (
        f"alp bundle {descriptor.bundle_id} (dataset {descriptor.dataset_version or '?'}, "
        f"schema {descriptor.keypoint_schema})"
    )
    arn = sm.create_model_package(
        ModelPackageGroupName=name,
        ModelPackageDescription=re.sub(r"[^\w\s.:/=+\-@(),]", " ", desc_text)[:1024],
        ModelApprovalStatus=status,
        CustomerMetadataProperties=props,
        # Idempotent retries at the API level as well (same bundle -> same token).
        ClientToken=descriptor_sha[:36],
    )["ModelPackageArn"]
    return decode_package(sm.describe_model_package(ModelPackageName=arn))
