#!/usr/bin/env bash
# Installs what tests/test_slurm.py's single-node cluster needs: Debian's Slurm (slurmctld,
# slurmd, the client commands) and munge. Root only. Starts nothing: without systemd the
# packages leave their daemons stopped, and the tests start their own.
# tests/slurm/cluster.py runs this when the binaries are missing and CI or
# COMMA_INSTALL_SLURM=1 is set; run it by hand otherwise: sudo bash tests/slurm/install.sh
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: apt-get needs root (try: sudo bash $0)" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null; then
    echo "install.sh: no apt-get here: install Slurm (slurmctld, slurmd, client) and munge" \
        "with this system's package manager" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends slurm-wlm munge
