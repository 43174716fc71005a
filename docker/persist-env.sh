#!/bin/bash
# persist-env.sh FILE — writes this container's settings into FILE (/etc/environment), so SSH
# logins (pam_env) and shells (`. /etc/environment`) see them after any number of restarts.
#
# The variables it owns are rewritten at every start: their old lines (quoted, unquoted or
# `export`ed, however many) go, and the value from this environment is appended once; one that
# is unset now is removed. Every other line of FILE is kept as it was. FILE ends up mode 0600:
# it holds the password and Vast's tokens.
#
# Each value is written so that pam_env and bash read back the same bytes:
#   NAME="value"   when the value has no " $ ` \ (bash would interpret them in double quotes);
#   NAME='value'   otherwise, when it has no ' (pam_env takes quotes literally, bash too in '').
# pam_env cuts a value at `#` and cannot hold a newline, and a value with both a ' and one of
# " $ ` \ fits neither form: such a value is refused with a message (the gateway still uses it;
# only SSH sessions will not see it).
set -euo pipefail

file="${1:?usage: persist-env.sh FILE}"

# Ours, Vast's (DESIGN §5) and the image's settings.
names=(USERNAME PASSWORD WEB_USERNAME WEB_PASSWORD OPEN_BUTTON_TOKEN CONTAINER_API_KEY
    VAST_CONTAINERLABEL CONTAINER_ID PUBLIC_IPADDR DATA_DIRECTORY JUPYTER_TOKEN PORTAL_CONFIG
    ENABLE_HTTPS PROVISIONING_SCRIPT FORGE_ARGS)
# VAST_TCP_PORT_<port> and VAST_UDP_PORT_<port>, as many as Vast set.
while IFS= read -r name; do
    names+=("$name")
done < <(compgen -e | grep -E '^VAST_(TCP|UDP)_PORT_[0-9]+$' | sort)

# The line for NAME's current value on stdout, or a message on stderr and status 1.
line_for() {
    local name="$1" value="$2"
    case "$value" in
        *$'\n'* | *$'\r'*)
            echo "persist-env: $name contains a line break; not written to $file (neither pam_env nor bash could read it back)" >&2
            return 1
            ;;
        *'#'*)
            echo "persist-env: $name contains '#', where pam_env (SSH logins) would cut it off; not written to $file" >&2
            return 1
            ;;
    esac
    case "$value" in
        *'"'* | *'$'* | *'`'* | *\\*)
            if [[ "$value" == *"'"* ]]; then
                echo "persist-env: $name has both a ' and one of \" \$ \` \\, which pam_env and bash cannot both read back; not written to $file" >&2
                return 1
            fi
            printf "%s='%s'\n" "$name" "$value"
            ;;
        *)
            printf '%s="%s"\n' "$name" "$value"
            ;;
    esac
}

# Lines of FILE that are not about one of our names (with or without `export `).
pattern="^[[:space:]]*(export[[:space:]]+)?($(IFS='|'; echo "${names[*]}"))="
# Vast's own port variables, even those no longer set, are ours too.
pattern_ports='^[[:space:]]*(export[[:space:]]+)?VAST_(TCP|UDP)_PORT_[0-9]+='

dir="$(dirname "$file")"
tmp="$(mktemp "$dir/.environment.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
chmod 0600 "$tmp"
if [ -f "$file" ]; then
    grep -Ev -e "$pattern" -e "$pattern_ports" "$file" >"$tmp" || true
fi
for name in "${names[@]}"; do
    if [ -n "${!name+set}" ]; then
        line_for "$name" "${!name}" >>"$tmp" || true
    fi
done
mv -f "$tmp" "$file"
trap - EXIT
