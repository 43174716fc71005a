#!/bin/bash
# install.sh [base|forge] — lays the launch scripts and the configuration out in the image (run
# by the Dockerfile from a copy of docker/, as root; the launch-mode tests run it in their
# throwaway root too). The `forge` flavour installs the configuration with Forge.
set -euo pipefail

flavour="${1:-base}"
src="$(cd "$(dirname "$0")" && pwd)"

for script in entrypoint.sh onstart.sh persist-env.sh provision.sh \
    run-forge.sh run-filebrowser.sh run-ttyd.sh run-logdy.sh; do
    install -m 0755 "$src/$script" "/usr/local/bin/$script"
done
install -m 0755 "$src/supervisorctl" /usr/local/bin/supervisorctl
# Vast writes a template's on-start field over /root/onstart.sh; ours is the default.
install -d -m 0700 /root
install -m 0755 "$src/onstart.sh" /root/onstart.sh

install -d -m 0755 /etc/vastgate
case "$flavour" in
    base) install -m 0644 "$src/proxy-base.toml" /etc/vastgate/proxy.toml ;;
    forge) install -m 0644 "$src/proxy.toml" /etc/vastgate/proxy.toml ;;
    *)
        echo "install.sh: unknown flavour $flavour (expected base or forge)" >&2
        exit 2
        ;;
esac

# Forge runs as appuser (uid 1000 where free); root runs the system services.
if ! id appuser >/dev/null 2>&1; then
    if getent passwd 1000 >/dev/null; then
        useradd --create-home --shell /bin/bash --user-group appuser
    else
        useradd --create-home --shell /bin/bash --user-group --uid 1000 appuser
    fi
fi
install -d -o appuser -g appuser -m 2775 /workspace /workspace/forge
install -d -m 0755 /var/log/vastgate /var/lib/vastgate
ln -sfn /var/log/vastgate /var/log/supervisor
