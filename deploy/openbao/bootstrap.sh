#!/usr/bin/env bash
# Set up OpenBao for botconsole and hand each process its own AppRole. Run as root on the app host,
# after OpenBao has been initialised and unsealed (see openbao.hcl), with an admin token:
#
#   BAO_ADDR=https://vault.example.internal:8200 BAO_CACERT=/etc/botconsole/tls/vault-ca.pem \
#       /opt/botconsole/deploy/openbao/bootstrap.sh [--rotate]
#
# It asks for the admin token (the root token, or one allowed to manage mounts, policies and
# auth/approle) unless BAO_TOKEN is set, and then:
#   1. runs botconsole's own idempotent bootstrap (apps.vault.server.bootstrap): KV v2 at kv/,
#      the transit keys, AppRole auth, the policies in deploy/openbao/policies/, and the AppRoles
#      botconsole-web, botconsole-control and botconsole-fleet;
#   2. makes the fleet supervisor's tokens periodic: it holds one token for its whole life and
#      renews it hourly, which an AppRole token with a maximum TTL would not survive;
#   3. optionally binds the AppRoles to the app host's addresses (BOTCONSOLE_CIDRS="10.0.0.5/32");
#   4. writes /etc/botconsole/vault-{web,control,fleet}.env (root:root, 0600): VAULT_ROLE_ID and a
#      SecretID of that process's AppRole, read by that unit alone (EnvironmentFile=).
# Run again, it changes nothing and keeps the existing SecretIDs. With --rotate it issues new
# SecretIDs, writes them, and destroys the old ones: restart botconsole.target right after.
#
# The admin token never reaches a command line (ps shows those), nor does any SecretID. Revoke the
# root token when you are done (bao token revoke -self) and generate a new one only when needed.
set -euo pipefail

prefix=${BOTCONSOLE_PREFIX:-/opt/botconsole}
etc=${BOTCONSOLE_ETC:-/etc/botconsole}
python=${BOTCONSOLE_PYTHON:-$prefix/.venv/bin/python}
bao=${BAO:-bao}
processes=(web control fleet)
rotate=0

for arg in "$@"; do
    case "$arg" in
        --rotate) rotate=1 ;;
        *) echo "usage: $0 [--rotate]" >&2; exit 2 ;;
    esac
done

: "${BAO_ADDR:?set BAO_ADDR to the https:// address of OpenBao}"
export BAO_ADDR
if [ -n "${BAO_CACERT:-}" ]; then
    export BAO_CACERT
    # botconsole's Python client (requests) trusts the same CA.
    export REQUESTS_CA_BUNDLE="$BAO_CACERT"
fi
command -v "$bao" >/dev/null || { echo "bootstrap: the OpenBao CLI ($bao) is not on PATH; set BAO=/path/to/bao" >&2; exit 1; }
[ -x "$python" ] || { echo "bootstrap: no Python at $python; set BOTCONSOLE_PREFIX or BOTCONSOLE_PYTHON" >&2; exit 1; }

status_field() {  # status_field initialized|sealed  (from `bao status`, whose exit code is 2 when sealed)
    local json
    json=$("$bao" status -format=json 2>/dev/null || true)
    [ -n "$json" ] || { echo "bootstrap: OpenBao at $BAO_ADDR does not answer" >&2; exit 1; }
    printf '%s' "$json" | "$python" -c 'import json, sys; print(str(json.load(sys.stdin)[sys.argv[1]]).lower())' "$1"
}

if [ "$(status_field initialized)" != "true" ]; then
    cat >&2 <<EOF
bootstrap: OpenBao at $BAO_ADDR is not initialised. Initialise it once, by hand:

    bao operator init -key-shares=5 -key-threshold=3

It prints 5 unseal key shares and the root token ONCE. Give each share to a different person
(or encrypt each to one with -pgp-keys), keep them offline, and never store them with the root
token or on this host. Then unseal with three shares (bao operator unseal, three times) and run
this script again with the root token.
EOF
    exit 1
fi
if [ "$(status_field sealed)" != "false" ]; then
    echo "bootstrap: OpenBao at $BAO_ADDR is sealed: unseal it (bao operator unseal, with three key shares) first" >&2
    exit 1
fi

if [ -z "${BAO_TOKEN:-}" ]; then
    read -r -s -p "OpenBao admin token: " BAO_TOKEN
    echo >&2
fi
export BAO_TOKEN

echo "bootstrap: mounts, transit keys, policies and AppRoles (apps.vault.server.bootstrap)"
(
    cd "$prefix"
    VAULT_ADDR="$BAO_ADDR" VAULT_BOOTSTRAP_TOKEN="$BAO_TOKEN" "$python" -c '
import os
from apps.vault import server
for line in server.bootstrap(os.environ["VAULT_ADDR"], os.environ["VAULT_BOOTSTRAP_TOKEN"]) or ["already set up; nothing changed"]:
    print("  " + line)
'
)

"$bao" write auth/approle/role/botconsole-fleet token_period=24h >/dev/null
if [ -n "${BOTCONSOLE_CIDRS:-}" ]; then
    for p in "${processes[@]}"; do
        "$bao" write "auth/approle/role/botconsole-$p" \
            secret_id_bound_cidrs="$BOTCONSOLE_CIDRS" token_bound_cidrs="$BOTCONSOLE_CIDRS" >/dev/null
    done
    echo "bootstrap: AppRoles bound to $BOTCONSOLE_CIDRS"
fi

umask 077
install -d -m 0700 "$etc"
for p in "${processes[@]}"; do
    file="$etc/vault-$p.env"
    role="auth/approle/role/botconsole-$p"
    old_secret=""
    if [ -f "$file" ]; then
        old_secret=$(sed -n 's/^VAULT_SECRET_ID=//p' "$file")
        if [ "$rotate" = 0 ] && [ -n "$old_secret" ]; then
            echo "bootstrap: $file exists; kept (--rotate issues a new SecretID)"
            continue
        fi
    fi
    role_id=$("$bao" read -field=role_id "$role/role-id")
    secret_id=$("$bao" write -f -field=secret_id "$role/secret-id")
    tmp=$(mktemp "$etc/.vault-$p.env.XXXXXX")
    {
        printf '# AppRole botconsole-%s, written by deploy/openbao/bootstrap.sh. Only its unit reads this.\n' "$p"
        printf 'VAULT_ROLE_ID=%s\n' "$role_id"
        printf 'VAULT_SECRET_ID=%s\n' "$secret_id"
    } >"$tmp"
    chmod 0600 "$tmp"
    mv -f "$tmp" "$file"
    echo "bootstrap: wrote $file (AppRole botconsole-$p)"
    if [ -n "$old_secret" ]; then
        # From stdin ("-"), never on the command line.
        printf '%s' "$old_secret" | "$bao" write "$role/secret-id/destroy" secret_id=- >/dev/null
        echo "bootstrap: destroyed the previous SecretID of botconsole-$p"
    fi
done

cat <<EOF

bootstrap: done. Each unit reads only its own file:
    botconsole-web.service      EnvironmentFile=$etc/vault-web.env
    botconsole-control.service  EnvironmentFile=$etc/vault-control.env
    botconsole-fleet.service    EnvironmentFile=$etc/vault-fleet.env
(beat needs no Vault identity). With the compose file, the same files are the services' env_file.
Restart the processes to pick up new SecretIDs:  systemctl restart botconsole.target
EOF
