#!/bin/bash
# sandbox.sh DIR REPO VASTGATE — the throwaway root of the launch-mode tests.
#
# Run by tests/image_launch.rs inside `unshare --mount --net --fork`: a private mount namespace
# and a network namespace with only loopback. It lays an overlay over the machine's / (upper and
# work directories in DIR; the real / is never written), gives it its own /run and /tmp, installs
# the image's files with the real docker/install.sh, then puts stand-ins where the apps that
# cannot exist here would be (fake-app.py as filebrowser, ttyd, logdy and Forge's launch.py; a
# fake nvidia-smi reporting one GPU). Then it writes DIR/ready and waits to be killed; the test
# runs each launch mode in this root with nsenter + unshare --pid + chroot.
set -euo pipefail

dir="$1"
repo="$2"
vastgate="$3"
root="$dir/root"

mount --make-rprivate /
mkdir -p "$dir/upper" "$dir/work" "$root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$dir/upper,workdir=$dir/work" "$root"
mount --rbind /dev "$root/dev"
mount -t proc proc "$root/proc"
mount -t tmpfs tmpfs "$root/run"
mount -t tmpfs tmpfs "$root/tmp"
ip link set lo up

# What the image would not have, from the machine underneath.
rm -rf "$root/.launch" "$root/etc/vastgate" "$root/var/log/vastgate" "$root/var/log/supervisor" \
    "$root/var/lib/vastgate" "$root/workspace" "$root/forge" "$root/var/log/onstart.log" \
    "$root/var/log/provisioning.log" "$root/var/log/fake-apps"
: >"$root/etc/environment"

# The image's layout, by the image's own installer.
install -m 0755 "$vastgate" "$root/usr/local/bin/vastgate"
cp -r "$repo/docker" "$root/tmp/vastgate-docker"
chroot "$root" /tmp/vastgate-docker/install.sh forge >/dev/null

# Stand-ins.
fake="$repo/tests/image/fake-app.py"
for app in filebrowser ttyd logdy; do
    install -m 0755 "$fake" "$root/usr/local/bin/$app"
done
install -d "$root/forge/venv/bin"
install -m 0755 "$fake" "$root/forge/launch.py"
ln -sfn /usr/bin/python3 "$root/forge/venv/bin/python"
chroot "$root" chown -R appuser:appuser /forge
cat >"$root/usr/local/bin/nvidia-smi" <<'SMI'
#!/bin/sh
echo "0, NVIDIA H200, GPU-6f1c6a4e-7b0e-5c7e-9d0e-2f3b9a51c7d2, 143771, 0, 0, 550.127.05"
SMI
chmod 0755 "$root/usr/local/bin/nvidia-smi"

install -d -m 1777 "$root/var/log/fake-apps"
touch "$dir/ready"
exec sleep infinity
