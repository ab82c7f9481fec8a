#!/bin/bash
# Inside the guest (systemd unit pyrunc-lane.service): install pyrunc from the work disk's copy
# of the project into the image's virtual environment, run the lane's pytest runs, and leave
# each run's output and exit code on the work disk for the host (tests/guest/run_guest.py).
#
# The work disk (/srv/pyrunc) holds src/ (the project), wheel/ (pyrunc, built from it), runs/
# (the pytest runs the host asked for) and results/. Results are not kept in /tmp: it is a
# tmpfs here, gone at power-off.
set -u

disk=/srv/pyrunc
results=$disk/results
venv=/opt/pyrunc-venv
py=$venv/bin/python
mkdir -p "$results"
cd "$disk/src" || exit 1

say() { echo "pyrunc guest: $*"; }
finish() {
  # The unit powers off with -f, which does not wait for the page cache: sync first.
  sync
  say "done"
}
trap finish EXIT

# What an installed Debian has and debootstrap does not make (the root is a snapshot, so this is
# for this boot only): `ctr run --net-host` bind-mounts both files into the container, and runc
# fails the create when either is missing.
[ -e /etc/hosts ] || printf '127.0.0.1 localhost\n127.0.1.1 %s\n::1 localhost ip6-localhost ip6-loopback\n' \
    "$(hostname)" > /etc/hosts
[ -e /etc/resolv.conf ] || echo "# the guest has no network" > /etc/resolv.conf

say "kernel $(uname -r); /sys/fs/cgroup is $(stat -fc %T /sys/fs/cgroup)" \
    "($(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null)); PID 1 is $(cat /proc/1/comm)"

# As `make install` does on the host: a real (non-editable) install, of the wheel the host built
# from this copy of the project, then the launcher (the shim binary that containerd runs is the
# venv's bin/containerd-shim-pyrunc-v1).
start=$SECONDS
if ! { "$py" -m pip install -q --no-index --no-deps --force-reinstall "$disk"/wheel/*.whl &&
       "$py" -m pyrunc.shim.launcher; } > "$results/install.log" 2>&1; then
  say "installing pyrunc failed"
  echo 1 > "$results/install.rc"
  cat "$results/install.log"
  exit 0
fi
echo 0 > "$results/install.rc"
say "pyrunc installed in $((SECONDS - start)) s"

# runs/order names the runs the host asked for; runs/NAME.env holds their environment
# (VAR=value lines) and runs/NAME.args pytest's arguments, one a line.
while read -r run; do
  mapfile -t run_env < "$disk/runs/$run.env"
  mapfile -t args < "$disk/runs/$run.args"
  say "run $run: ${run_env[*]} pytest ${args[*]:0:3}..."
  start=$SECONDS
  # runs/deadline is the guest's uptime by which every run must be over, a little before the
  # host stops the guest: SIGINT then interrupts pytest as Ctrl-C does, and its output still says
  # which test was running and ends with its summary.
  left=$(( $(cat "$disk/runs/deadline") - $(cut -d. -f1 /proc/uptime) ))
  # The output goes to the console (the host's log of the guest, to follow a run live) and to the
  # results file, which is what the host prints and judges.
  timeout -s INT -k 30 "$(( left > 1 ? left : 1 ))" \
    env "${run_env[@]}" "$py" -m pytest -p no:cacheprovider "${args[@]}" < /dev/null 2>&1 \
    | tee "$results/$run.log"
  echo "${PIPESTATUS[0]}" > "$results/$run.rc"
  echo "$((SECONDS - start))" > "$results/$run.seconds"
  say "run $run: exit $(cat "$results/$run.rc") after $((SECONDS - start)) s"
  sync
done < "$disk/runs/order"
