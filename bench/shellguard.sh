#!/bin/sh
# The peer for caw's sync rows: a credential guard built the way the original
# caw's setup-container.sh builds it (a root shell loop per direction:
# inotifywait -m -e close_write, an md5sum comparison for echo suppression,
# then a plain cp). One fix, so that it syncs at all and can be measured: it
# watches the mounted file itself, where the original watched the mount's
# directory, which never sees events for a file bind mount.
#
# usage: shellguard.sh MOUNTED_CREDENTIAL HOME_COPY UID GID
set -u
mnt=$1 home=$2 uid=$3 gid=$4
mkdir -p "$(dirname "$home")"
cp "$mnt" "$home"
chown -R "$uid:$gid" "$(dirname "$home")"
chmod 600 "$home"

guard() { # SRC DST
	inotifywait -m -q -e close_write --format '%e' "$1" | while read -r _; do
		if [ "$(md5sum <"$1")" != "$(md5sum <"$2")" ]; then
			cp "$1" "$2"
		fi
	done
}

guard "$mnt" "$home" &
guard "$home" "$mnt" &
echo ready
wait
