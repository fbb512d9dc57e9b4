#!/usr/bin/env bash
# Unpacks Debian's Exim into a cache folder for the Exim end-to-end tests, and prints the path of
# a wrapper that runs it. exim4 and postfix conflict as packages, so Exim is never installed:
# `apt-get download` + `dpkg -x`, run with `exim -C CONFIG` as root.
#
# Usage: exim-unpack.sh CACHE_DIR      (idempotent; concurrent callers wait on a lock)
#
# The Debian binary has its user "Debian-exim" compiled in and refuses to start when the user does
# not exist. Rather than adding a system user, the wrapper runs Exim under nss_wrapper with a
# private passwd/group that has it. Runtime libraries (libidn12, libnss-wrapper) come from
# scripts/install-deps.
set -euo pipefail

cache=${1:?usage: exim-unpack.sh CACHE_DIR}
packages=(exim4-base exim4-daemon-light)

mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
exec 9>"$cache/.lock"
flock 9

wrapper="$cache/exim"
if [ -x "$wrapper" ] && [ -f "$cache/.complete" ]; then
  echo "$wrapper"
  exit 0
fi

nss_wrapper=""
for f in /usr/lib/*/libnss_wrapper.so /usr/lib/libnss_wrapper.so; do
  if [ -e "$f" ]; then nss_wrapper=$f; break; fi
done
if [ -z "$nss_wrapper" ]; then
  echo "exim-unpack: libnss_wrapper.so not found; run scripts/install-deps (package libnss-wrapper)" >&2
  exit 1
fi

work=$(mktemp -d "$cache/unpack.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/debs" "$work/root"
# -o APT::Sandbox::User=root: the _apt user may not write into a root-owned build folder.
sandbox=()
if [ "$(id -u)" -eq 0 ]; then sandbox=(-o APT::Sandbox::User=root); fi
download() { (cd "$work/debs" && apt-get download "${sandbox[@]}" "${packages[@]}") >"$work/download.log" 2>&1; }
# A fresh machine may have no package lists yet: update once (as root) and retry.
if ! download && { [ "$(id -u)" -ne 0 ] || ! apt-get update >>"$work/download.log" 2>&1 || ! download; }; then
  cat "$work/download.log" >&2
  echo "exim-unpack: apt-get download ${packages[*]} failed (is Debian's archive reachable?)" >&2
  exit 1
fi
for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$work/root"; done

binary="$work/root/usr/sbin/exim4"
if [ ! -x "$binary" ]; then
  echo "exim-unpack: $binary missing after unpacking" >&2
  exit 1
fi
missing=$(ldd "$binary" | awk '/not found/ {print $1}')
if [ -n "$missing" ]; then
  echo "exim-unpack: Exim needs libraries that are not installed: $missing; run scripts/install-deps" >&2
  exit 1
fi

rm -rf "$cache/root"
mv "$work/root" "$cache/root"
printf 'root:x:0:0:root:/root:/bin/sh\nDebian-exim:x:64990:64990:Exim:/nonexistent:/usr/sbin/nologin\n' \
  >"$cache/passwd"
printf 'root:x:0:\nDebian-exim:x:64990:\n' >"$cache/group"
cat >"$wrapper.tmp" <<EOF
#!/bin/sh
# Runs the unpacked Exim with a private passwd/group that has its compiled-in user Debian-exim.
export LD_PRELOAD="$nss_wrapper" NSS_WRAPPER_PASSWD="$cache/passwd" NSS_WRAPPER_GROUP="$cache/group"
exec "$cache/root/usr/sbin/exim4" "\$@"
EOF
chmod 755 "$wrapper.tmp"
mv "$wrapper.tmp" "$wrapper"
if ! check=$("$wrapper" -C /dev/null -bV 2>&1); then
  echo "$check" >&2
  echo "exim-unpack: the unpacked Exim does not start" >&2
  rm -f "$wrapper"
  exit 1
fi
touch "$cache/.complete"
echo "$wrapper"
