# The control worker (Celery queue "control"): kill switch, order cancellation on every
# account, key hygiene checks, reconciliation and signed audit checkpoints.
path "kv/data/exchange-accounts/*" {
  capabilities = ["read"]
}

path "kv/metadata/exchange-accounts/*" {
  capabilities = ["read", "delete"]
}

path "transit/sign/audit-checkpoint" {
  capabilities = ["update"]
}

path "transit/verify/audit-checkpoint" {
  capabilities = ["update"]
}

# Revoke bot tokens by accessor during a kill (each worker publishes its accessor; see apps/bots/fleet.py).
path "auth/token/revoke-accessor" {
  capabilities = ["update"]
}
