"""835 balancing and semantic checks (domain.md §1.7 rules 1-3 and the §1.11 checklist).

Errors mean "quarantine this ST..SE"; warnings are cross-checks only.  Decimal only.

The per-claim checks are most of the time; when the C extension is built,
``_fast835.claims_clean`` first tells (in exact integer arithmetic) whether every claim is
clean, and the Python loop runs only when one may not be.  :func:`check_835_reference` is
the pure-Python check (the reference of the differential tests).
"""

from __future__ import annotations

from decimal import Decimal

from revbridge.formats.x12.issues import X12Issue, make_issue
from revbridge.formats.x12.model835 import Adjustment, ClaimPayment, Remittance835, ServiceLine

try:
    from revbridge.formats.x12 import _fast835
except ImportError:  # installed without the C extension: pure Python only
    FAST = False
else:
    FAST = True

ZERO = Decimal(0)
VALID_CLAIM_STATUS = frozenset({"1", "2", "3", "4", "19", "20", "21", "22", "23", "25"})
# BPR elements that must be present when BPR04 = ACH (BPR11 stays situational).
_ACH_REQUIRED = (
    ("BPR05", "payment_format"),
    ("BPR06", "sender_dfi_qualifier"),
    ("BPR07", "sender_dfi_id"),
    ("BPR08", "sender_account_qualifier"),
    ("BPR09", "sender_account"),
    ("BPR10", "payer_identifier"),
    ("BPR12", "receiver_dfi_qualifier"),
    ("BPR13", "receiver_dfi_id"),
    ("BPR14", "receiver_account_qualifier"),
    ("BPR15", "receiver_account"),
)


def check_835(r: Remittance835) -> list[X12Issue]:
    """All balancing errors and cross-check warnings of one remittance."""
    return _check(r, FAST)


def check_835_reference(r: Remittance835) -> list[X12Issue]:
    """:func:`check_835` in pure Python (the reference of ``_fast835.claims_clean``)."""
    return _check(r, False)


def _check(r: Remittance835, fast: bool) -> list[X12Issue]:
    issues: list[X12Issue] = []
    _check_bpr(r, issues)
    if not (fast and _fast835.claims_clean(r.claims, VALID_CLAIM_STATUS)):
        for claim in r.claims:
            _check_claim(r, claim, issues)
    _check_transaction(r, issues)
    return issues


# -- header -------------------------------------------------------------------------------


def _check_bpr(r: Remittance835, issues: list[X12Issue]) -> None:
    at = r.first_segment + 1  # BPR follows ST
    tx = r.control_number
    if (r.handling == "H") != (r.method == "NON"):
        issues.append(
            make_issue(
                "bpr_handling_method",
                f"BPR01 {r.handling!r} and BPR04 {r.method!r} are not a legal pair "
                "(H requires NON and NON requires H)",
                at,
                "BPR",
                "BPR04",
                transaction=tx,
            )
        )
    if r.method == "ACH":
        missing = [name for name, attr in _ACH_REQUIRED if not getattr(r, attr)]
        if missing:
            issues.append(
                make_issue(
                    "bpr_ach_incomplete",
                    f"BPR04 is ACH but {', '.join(missing)} missing",
                    at,
                    "BPR",
                    missing[0],
                    transaction=tx,
                )
            )
    if r.total_paid < ZERO:
        issues.append(
            make_issue(
                "bpr_negative",
                f"BPR02 {r.total_paid} is negative",
                at,
                "BPR",
                "BPR02",
                transaction=tx,
            )
        )
    elif r.total_paid == ZERO and not (r.handling in ("H", "P") or r.method == "NON"):
        issues.append(
            make_issue(
                "bpr_zero_payment",
                f"BPR02 is 0 with BPR01 {r.handling!r}/BPR04 {r.method!r} (only H/NON or P)",
                at,
                "BPR",
                "BPR02",
                transaction=tx,
            )
        )
    if r.payer_identifier and r.trace_payer and r.payer_identifier != r.trace_payer:
        issues.append(
            make_issue(
                "bpr_trn_payer_mismatch",
                f"BPR10 {r.payer_identifier!r} differs from TRN03 {r.trace_payer!r}",
                at,
                "BPR",
                "BPR10",
                transaction=tx,
                severity="warning",
            )
        )


# -- claims -------------------------------------------------------------------------------


_NO_SUMS = (ZERO, ZERO, False)


def _sums(adjustments: tuple[Adjustment, ...]) -> tuple[Decimal, Decimal, bool]:
    """Total, patient-responsibility (PR) total and "has a legacy CR group" in one pass."""
    if not adjustments:  # most claims: the adjustments are on the service lines
        return _NO_SUMS
    total = patient = ZERO
    legacy = False
    for a in adjustments:
        amount = a.amount
        total += amount
        group = a.group
        if group == "PR":
            patient += amount
        elif group == "CR":
            legacy = True
    return total, patient, legacy


def _check_claim(r: Remittance835, claim: ClaimPayment, issues: list[X12Issue]) -> None:
    tx = r.control_number
    if claim.status not in VALID_CLAIM_STATUS:
        issues.append(
            make_issue(
                "bad_claim_status",
                f"CLP02 {claim.status!r} is not allowed in a 5010 835 "
                f"(claim {claim.patient_control_number})",
                claim.segment_number,
                "CLP",
                "CLP02",
                transaction=tx,
            )
        )
    adjusted, patient, legacy = _sums(claim.adjustments)
    for line in claim.lines:  # the service lines and their sums, inlined: the hot path
        line_adjusted = ZERO
        line_legacy = False
        for a in line.adjustments:
            amount = a.amount
            line_adjusted += amount
            group = a.group
            if group == "PR":
                patient += amount  # exact: the order of the additions does not matter
            elif group == "CR":
                line_legacy = True
        if line.charge - line_adjusted != line.paid:
            _line_unbalanced(tx, line, line_adjusted, issues)
        if line_legacy:
            _check_groups(tx, line.adjustments, issues)
        adjusted += line_adjusted
    if claim.charge - adjusted != claim.paid:
        issues.append(
            make_issue(
                "claim_unbalanced",
                f"claim {claim.patient_control_number}: CLP03 {claim.charge} - adjustments "
                f"{adjusted} = {claim.charge - adjusted}, but CLP04 is {claim.paid}",
                claim.segment_number,
                "CLP",
                "CLP04",
                transaction=tx,
            )
        )
    if claim.patient_responsibility is not None and claim.patient_responsibility != patient:
        issues.append(
            make_issue(
                "patient_responsibility_mismatch",
                f"claim {claim.patient_control_number}: CLP05 {claim.patient_responsibility} "
                f"but PR adjustments total {patient}",
                claim.segment_number,
                "CLP",
                "CLP05",
                transaction=tx,
                severity="warning",
            )
        )
    if legacy:
        _check_groups(tx, claim.adjustments, issues)


def _line_unbalanced(tx: str, line: ServiceLine, adjusted: Decimal, issues: list[X12Issue]) -> None:
    issues.append(
        make_issue(
            "line_unbalanced",
            f"service line {line.procedure}: SVC02 {line.charge} - adjustments {adjusted} "
            f"= {line.charge - adjusted}, but SVC03 is {line.paid}",
            line.segment_number,
            "SVC",
            "SVC03",
            transaction=tx,
        )
    )


def _check_groups(tx: str, adjustments: tuple[Adjustment, ...], issues: list[X12Issue]) -> None:
    for a in adjustments:
        if a.group == "CR":
            issues.append(
                make_issue(
                    "legacy_cas_cr",
                    "CAS group CR was eliminated in 5010 (reversals repeat the original group)",
                    a.segment_number,
                    "CAS",
                    "CAS01",
                    transaction=tx,
                    severity="warning",
                )
            )


# -- transaction --------------------------------------------------------------------------


def _check_transaction(r: Remittance835, issues: list[X12Issue]) -> None:
    paid = sum([c.paid for c in r.claims], ZERO)
    provider = sum([p.amount for p in r.provider_adjustments], ZERO)
    if paid - provider != r.total_paid:
        issues.append(
            make_issue(
                "transaction_unbalanced",
                f"sum of CLP04 {paid} - sum of PLB {provider} = {paid - provider}, "
                f"but BPR02 is {r.total_paid}",
                r.first_segment + 1,
                "BPR",
                "BPR02",
                transaction=r.control_number,
            )
        )
