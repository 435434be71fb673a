# The web process (Django + Channels). It may store exchange secrets that an admin types
# in, and see which keys a stored secret has, but never read a secret back.
path "kv/data/exchange-accounts/*" {
  capabilities = ["create", "update"]
}

path "kv/subkeys/exchange-accounts/*" {
  capabilities = ["read"]
}

# TOTP seeds are stored in the database only as ciphertext of this transit key; the web
# process encrypts a seed at enrollment and decrypts it to check a code.
path "transit/encrypt/totp-seed" {
  capabilities = ["update"]
}

path "transit/decrypt/totp-seed" {
  capabilities = ["update"]
}

# Deleting an exchange account (admin, step-up) destroys every version of its secret.
path "kv/metadata/exchange-accounts/*" {
  capabilities = ["delete"]
}

# The alert webhook's signing secret: an admin sets or replaces it; it is never read back here.
path "kv/data/alert-webhook/signing" {
  capabilities = ["create", "update"]
}
