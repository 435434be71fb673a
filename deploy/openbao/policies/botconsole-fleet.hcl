# The fleet supervisor: gives each bot its own AppRole and policy, and hands a freshly
# started bot worker a response-wrapped SecretID. It never reads an exchange secret.
#
# Policy paths allow "+" only as a whole segment, so "bot-+" would match nothing; "bot-*" is
# a prefix glob that also covers every sub-path of a bot role (secret-id, custom-secret-id,
# secret-id/lookup ...). Hence one rule for all of them, tightened so that:
#   - every response is wrapped (min/max_wrapping_ttl): a new SecretID only ever reaches the
#     supervisor wrapped, and the worker checks the wrapping token's creation path;
#   - no request may carry a "secret_id": no custom SecretID of the supervisor's choosing,
#     no lookup or destroy by the SecretID itself (destroy goes by accessor).
path "sys/policies/acl/bot-*" {
  capabilities = ["create", "update", "read", "delete"]
}

path "auth/approle/role/bot-*" {
  capabilities = ["create", "update", "read", "delete"]
  min_wrapping_ttl = "1s"
  max_wrapping_ttl = "60s"
  denied_parameters = {
    "secret_id" = []
  }
}

# Revoke a stopped bot's token. It first checks by accessor that the token is that bot's
# (its metadata names the role), so a worker cannot make it revoke someone else's token.
path "auth/token/revoke-accessor" {
  capabilities = ["update"]
}

path "auth/token/lookup-accessor" {
  capabilities = ["update"]
}
