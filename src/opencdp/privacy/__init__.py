"""Privacy: masking personal data for callers that may not see it (keys with ``pii:mask``)."""

from __future__ import annotations

from opencdp.privacy.mask import (
    PII_FIELDS,
    mask_email,
    mask_identifier,
    mask_ip,
    mask_name,
    mask_phone,
    mask_record,
    mask_text,
)

__all__ = [
    "PII_FIELDS",
    "mask_email",
    "mask_identifier",
    "mask_ip",
    "mask_name",
    "mask_phone",
    "mask_record",
    "mask_text",
]
