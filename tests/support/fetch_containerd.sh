#!/usr/bin/env bash
# fetch_containerd.sh SUITE DEST: containerd (with ctr and containerd-shim-runc-v2) of another
# Debian suite, extracted into DEST/usr/bin without touching the system's apt configuration.
# Used to run the tests against containerd 1.7 (trixie) and 2.x (sid) besides bookworm's 1.6.
set -euo pipefail
suite=$1 dest=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/archives/partial"
# The Debian archive as the system's own apt sources name it (whatever mirror or proxy the
# machine is set up with); the system's python3, as this runs before any virtual environment.
mirror=$(/usr/bin/python3 "$(dirname "$0")/apt_mirror.py")
echo "deb $mirror $suite main" > "$work/sources.list"
opts=(-oDir::Etc::SourceList="$work/sources.list" -oDir::Etc::SourceParts=/dev/null
      -oDir::State::Lists="$work/lists" -oDir::Cache::Archives="$work/archives"
      -oAPT::Sandbox::User=root -qq)
apt-get "${opts[@]}" update
(cd "$work" && apt-get "${opts[@]}" download containerd)
mkdir -p "$(dirname "$dest")"
rm -rf "$dest.tmp"
dpkg -x "$work"/containerd_*.deb "$dest.tmp"
"$dest.tmp/usr/bin/containerd" --version
rm -rf "$dest"
mv "$dest.tmp" "$dest"
