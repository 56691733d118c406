#!/usr/bin/env bash
# Installs the Debian packages caw's tests and demo use, when they are missing.
# Needs root (apt-get); does nothing when everything is present.
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || need+=(busybox-static)
have inotifywait || need+=(inotify-tools)
have tini || need+=(tini)
have dumb-init || need+=(dumb-init)
have debootstrap || need+=(debootstrap)
have unshare || need+=(util-linux)
have file || need+=(file)
have bindfs || need+=(bindfs)
have docker-compose || need+=(docker-compose)
have docker || need+=(docker.io)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "caw: missing packages: ${need[*]}; install them (sudo apt-get install ${need[*]}) or run as root" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${need[@]}"
