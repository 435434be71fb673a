# The web process (Django + Channels). It may store exchange secrets that an admin types
# in, and see which keys a stored secret has, but never read a secret back.
path "kv/data/exchange-accounts/*" {
  capabilities = ["create", "update"]
}

path "kv/subkeys/exchange-accounts/*" {
  capabilities = ["read"]
}
