"""What the audit app tells the floors above it (they connect; it imports none of them)."""

from django.dispatch import Signal

# Sent once per distinct break found by a verification: kwargs `verification` (AuditVerification),
# `message` (one line for people) and `data` (the break's details, no secrets).
tampering_found = Signal()
