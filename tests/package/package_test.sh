#!/usr/bin/env bash
# The Debian package end to end on this machine (ctest label "package"): build it with
# `make deb`, lint it, install it with dpkg -i, check what it installed, run the installed
# binary with the installed configuration, purge it and check nothing of it remains.
# Usage: package_test.sh SOURCE_DIR WORK_DIR. Needs root; exits 77 (ctest: skipped) otherwise.
set -euo pipefail

src=$1
work=$2
skip() { echo "SKIPPED: $*"; exit 77; }
fail() { echo "FAILED: $*" >&2; exit 1; }
started=$SECONDS
step() { echo; echo "== [$((SECONDS - started))s] $*"; }

[ "$(id -u)" -eq 0 ] || skip "the package test installs a .deb system-wide and needs root"

# One package test at a time on this machine (other worktrees run the suite too).
exec 9>/run/lock/calloutd-package-test.lock
flock -w 600 9 || fail "another package test held /run/lock/calloutd-package-test.lock for 10 min"

status=$(dpkg-query -W -f='${db:Status-Status}' calloutd 2>/dev/null || true)
if [ -n "$status" ] && [ "$status" != not-installed ]; then
  skip "a calloutd package is already on this machine (dpkg status '$status'); this test" \
    "installs and purges its own, so it leaves that one alone: 'dpkg --purge calloutd' first"
fi

installed=no
daemon_pid=
run_dir=
cleanup() {
  local rc=$?
  if [ -n "$daemon_pid" ]; then kill -KILL "$daemon_pid" 2>/dev/null || true; fi
  if [ "$installed" = yes ]; then
    echo "cleanup: dpkg --purge calloutd"
    dpkg_waiting --purge calloutd >/dev/null || echo "cleanup: dpkg --purge calloutd failed" >&2
  fi
  if [ -n "$run_dir" ]; then rm -rf "$run_dir"; fi
  echo "package test: exit $rc after $((SECONDS - started))s"
}
trap cleanup EXIT

# dpkg refuses at once while another dpkg/apt holds its lock: wait for it (up to 5 min).
dpkg_waiting() {
  local out
  for _ in $(seq 150); do
    if out=$(dpkg "$@" 2>&1); then echo "$out"; return 0; fi
    case "$out" in
      *"is locked by another process"* | *"lock was locked by another process"*) sleep 2 ;;
      *) echo "$out"; return 1 ;;
    esac
  done
  echo "$out"
  return 1
}

# One policy request for a sender on the built-in never-probe list (skipped: answered at once,
# no probe, no DNS) to 127.0.0.1:PORT; prints the reply line.
ask_policy() {
  local reply=
  exec 3<>"/dev/tcp/127.0.0.1/$1"
  printf 'request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address=192.0.2.1\nqueue_id=%s\nsender=someone@gmail.com\nrecipient=postmaster@example.net\ninstance=%s\n\n' "$2" "$2" >&3
  read -r -t 10 reply <&3 || true
  exec 3<&-
  echo "$reply"
}

# What exists under the system directories with calloutd in its name, to compare after purge.
snapshot() {
  find -H /etc /usr /lib /var/lib /run -xdev -name '*calloutd*' \
    -not -path '/run/lock/calloutd-package-test.lock' 2>/dev/null | sort
}
before=$(snapshot)

version=$(sed -n 's/^project(calloutd VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
arch=$(dpkg --print-architecture)
dist=$work/dist
deb=$dist/calloutd_${version}_${arch}.deb

step "make deb (into $dist)"
rm -rf "$dist"
mkdir -p "$work"
# ccache, when present, makes a rebuild of the same tree fast; the package is the same.
if command -v ccache >/dev/null; then
  export CMAKE_C_COMPILER_LAUNCHER=ccache CMAKE_CXX_COMPILER_LAUNCHER=ccache
fi
timeout 900 make -C "$src" deb DIST="$dist" >"$work/make-deb.log" 2>&1 ||
  { tail -50 "$work/make-deb.log" || true; fail "make deb (full log: $work/make-deb.log)"; }
tail -6 "$work/make-deb.log"
[ -f "$deb" ] || fail "make deb did not produce $deb"
# Built from a copy: the source tree gets no build leftovers.
for leftover in debian/calloutd debian/.debhelper debian/files obj-"$(dpkg-architecture -qDEB_HOST_GNU_TYPE)"; do
  [ ! -e "$src/$leftover" ] || fail "make deb left $src/$leftover"
done

step "lintian (errors and warnings fail, unless overridden with a reason)"
# Pedantic and informational tags are shown, to be judged; they do not fail the test.
lint_rc=0
lint=$(lintian --display-level '>=pedantic' --display-experimental --show-overrides \
  --fail-on error,warning "$deb" 2>&1) || lint_rc=$?
echo "$lint" | grep -v '^running with root privileges is not recommended!$' || true
[ "$lint_rc" -eq 0 ] || fail "lintian reports errors or warnings (exit $lint_rc)"

step "dpkg -i $(basename "$deb")"
installed=yes
dpkg_waiting -i "$deb"
[ "$(dpkg-query -W -f='${db:Status-Abbrev}${Version}' calloutd)" = "ii ${version}" ] ||
  fail "dpkg does not list calloutd ${version} as installed"
[ "$(/usr/sbin/calloutd version)" = "calloutd $version" ] ||
  fail "calloutd version says '$(/usr/sbin/calloutd version)', the package $version"
dpkg -L calloutd | sort >"$work/files.list"

step "files, permissions, conffiles, unit, man pages"
expect_mode() {  # PATH MODE: exists, owned by root, with this mode
  [ -e "$1" ] || fail "$1 missing"
  [ "$(stat -L -c '%a %U:%G' "$1")" = "$2 root:root" ] ||
    fail "$1: $(stat -L -c '%a %U:%G' "$1"), expected $2 root:root"
}
expect_mode /usr/sbin/calloutd 755
expect_mode /etc/calloutd 755
expect_mode /etc/calloutd/calloutd.toml 644
expect_mode /etc/calloutd/never-probe.list 644
expect_mode /lib/systemd/system/calloutd.service 644
expect_mode /usr/share/doc/calloutd/copyright 644
expect_mode /usr/share/doc/calloutd/NEWS.Debian.gz 644
expect_mode /usr/share/doc/calloutd/examples/postfix/main.cf.snippet 644
dpkg-query -W -f='${Conffiles}\n' calloutd | grep -q '^ /etc/calloutd/calloutd.toml ' ||
  fail "/etc/calloutd/calloutd.toml is not a conffile"
# The installed config is the sample with dry_run = true, nothing else changed.
diff <(sed 's/^dry_run = true$/dry_run = false/' /etc/calloutd/calloutd.toml) "$src/etc/calloutd.toml" ||
  fail "/etc/calloutd/calloutd.toml is not etc/calloutd.toml with dry_run = true"
grep -qx 'dry_run = true' /etc/calloutd/calloutd.toml || fail "installed config is not dry-run"
cmp /lib/systemd/system/calloutd.service "$src/contrib/systemd/calloutd.service" ||
  fail "the installed unit is not contrib/systemd/calloutd.service"
# dh_installsystemd's postinst enabled the unit (it starts it only when systemd runs).
[ "$(readlink /etc/systemd/system/multi-user.target.wants/calloutd.service)" = \
  /lib/systemd/system/calloutd.service ] || fail "calloutd.service is not enabled"
if [ -d /run/systemd/system ]; then
  # The postinst started it: it must be up and answering on the configured listener.
  for _ in $(seq 100); do systemctl is-active --quiet calloutd && break; sleep 0.1; done
  systemctl is-active --quiet calloutd ||
    { systemctl status calloutd || true; fail "the postinst did not start calloutd.service"; }
  reply=$(ask_policy 10023 PKGTEST0)
  [ "$reply" = "action=DUNNO" ] || fail "calloutd.service answered '$reply'"
  echo "systemd is running: the postinst started calloutd.service, which answers $reply"
else
  echo "systemd is not PID 1 here: the postinst skipped starting the unit, as it should"
fi
[ "$(man -w calloutd)" = /usr/share/man/man8/calloutd.8.gz ] || fail "man -w calloutd: $(man -w calloutd)"
[ "$(man -w calloutd.toml)" = /usr/share/man/man5/calloutd.toml.5.gz ] ||
  fail "man -w calloutd.toml: $(man -w calloutd.toml)"
echo "ok: $(wc -l <"$work/files.list") paths; man -w finds calloutd(8) and calloutd.toml(5)"

step "calloutd check-config -c /etc/calloutd/calloutd.toml"
/usr/sbin/calloutd check-config -c /etc/calloutd/calloutd.toml

step "systemd-analyze verify /lib/systemd/system/calloutd.service"
if command -v systemd-analyze >/dev/null; then
  out=$(systemd-analyze verify /lib/systemd/system/calloutd.service 2>&1) ||
    fail "systemd-analyze verify: $out"
  [ -z "$out" ] || fail "systemd-analyze verify complains: $out"
  echo "ok"
else
  echo "SKIPPED this step: systemd-analyze is not installed here"
fi

step "the installed binary, installed config, as an unprivileged user, on a free port"
# The installed config with its [server] listener on a free loopback port and any control
# socket in a private directory (the unit's RuntimeDirectory does not exist without systemd).
run_dir=$(mktemp -d /tmp/calloutd-package-XXXXXX)
chown nobody:nogroup "$run_dir"
awk -v dir="$run_dir" '
  /^\[/ { section = $0 }
  section == "[server]" && /^listen = / { print "listen = [\"inet:127.0.0.1:0\"]"; next }
  section == "[server]" && /^control_socket = / { print "control_socket = \"" dir "/control.sock\""; next }
  { print }' /etc/calloutd/calloutd.toml >"$run_dir/calloutd.toml"
chmod 644 "$run_dir/calloutd.toml"
setpriv --reuid=nobody --regid=nogroup --clear-groups \
  /usr/sbin/calloutd run -c "$run_dir/calloutd.toml" >"$run_dir/daemon.log" 2>&1 &
daemon_pid=$!
port=
for _ in $(seq 200); do
  port=$(sed -n 's/.* listening listen=inet:127\.0\.0\.1:\([0-9]*\).*/\1/p' "$run_dir/daemon.log")
  if [ -n "$port" ] && grep -q ' started ' "$run_dir/daemon.log"; then break; fi
  kill -0 "$daemon_pid" 2>/dev/null || { cat "$run_dir/daemon.log"; fail "calloutd exited"; }
  sleep 0.1
done
[ -n "$port" ] || { cat "$run_dir/daemon.log"; fail "calloutd did not start listening in 20 s"; }
grep ' started ' "$run_dir/daemon.log" | grep -q ' dry_run=yes' ||
  { cat "$run_dir/daemon.log"; fail "calloutd did not start in dry run"; }
reply=$(ask_policy "$port" PKGTEST1)
[ "$reply" = "action=DUNNO" ] || { cat "$run_dir/daemon.log"; fail "policy answer '$reply'"; }
for _ in $(seq 50); do grep -q ' decision ' "$run_dir/daemon.log" && break; sleep 0.1; done
decision=$(grep ' decision ' "$run_dir/daemon.log" || true)
echo "$decision"
case "$decision" in
  *queue_id=PKGTEST1*sender=someone@gmail.com*class=skipped*action=DUNNO*source=skip*) ;;
  *) cat "$run_dir/daemon.log"; fail "no skipped/DUNNO decision line for the request" ;;
esac
kill -TERM "$daemon_pid"
rc=0
wait "$daemon_pid" || rc=$?
daemon_pid=
[ "$rc" -eq 0 ] || { cat "$run_dir/daemon.log"; fail "calloutd exited $rc on SIGTERM"; }

step "dpkg --purge calloutd"
dpkg_waiting --purge calloutd
installed=no
status=$(dpkg-query -W -f='${db:Status-Status}' calloutd 2>/dev/null || true)
[ -z "$status" ] || [ "$status" = not-installed ] || fail "after purge dpkg says '$status'"
while read -r path; do
  if [ -d "$path" ]; then
    # Directories shared with other packages (/usr/sbin, /usr/share/man/man8 ...) stay.
    case "$path" in */calloutd | */calloutd/*) fail "$path remains after purge" ;; esac
  elif [ -e "$path" ] || [ -L "$path" ]; then
    fail "$path remains after purge"
  fi
done <"$work/files.list"
after=$(snapshot)
[ "$before" = "$after" ] || fail "after purge, these differ from before install:
$(diff <(echo "$before") <(echo "$after"))"
echo "ok: nothing of calloutd remains"

step "passed"
