# The fleet supervisor: gives each bot its own AppRole and policy, and hands a freshly
# started bot worker a response-wrapped SecretID. It never reads an exchange secret.
path "sys/policies/acl/bot-+" {
  capabilities = ["create", "update", "read", "delete"]
}

path "auth/approle/role/bot-+" {
  capabilities = ["create", "update", "read", "delete"]
}

path "auth/approle/role/bot-+/role-id" {
  capabilities = ["read"]
}

path "auth/approle/role/bot-+/secret-id" {
  capabilities = ["update"]
  # Only wrapped SecretIDs, short-lived: the supervisor cannot see the SecretID itself.
  min_wrapping_ttl = "1s"
  max_wrapping_ttl = "60s"
}

path "auth/approle/role/bot-+/secret-id-accessor/destroy" {
  capabilities = ["update"]
}

path "auth/token/revoke-accessor" {
  capabilities = ["update"]
}
