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
# It looks each accessor up first and revokes only a token of that bot's AppRole.
path "auth/token/revoke-accessor" {
  capabilities = ["update"]
}

path "auth/token/lookup-accessor" {
  capabilities = ["update"]
}

# During a kill, destroy the bots' unused SecretIDs: list their accessors, destroy by accessor.
# ("+" must be a whole segment, so this covers every AppRole; it can only take SecretIDs away.)
path "auth/approle/role/+/secret-id" {
  capabilities = ["list"]
}

path "auth/approle/role/+/secret-id-accessor/destroy" {
  capabilities = ["update"]
}

# Sign alert webhook deliveries (the web process writes this secret, only this process reads it).
path "kv/data/alert-webhook/signing" {
  capabilities = ["read"]
}
