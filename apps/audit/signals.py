"""What the audit app tells the floors above it (they connect; it imports none of them)."""

from django.dispatch import Signal

# Sent once per distinct break found by a verification: kwargs `verification` (AuditVerification),
# `message` (one line for people) and `data` (the break's details, no secrets).
tampering_found = Signal()

# Sent when a checkpoint could not be written to the checkpoint file (nothing signed); kwargs as above, the
# `verification` being the stored error. Not sent again while the next attempts fail the same way.
checkpoint_failed = Signal()
