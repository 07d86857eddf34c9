#!/usr/bin/env bash
# Install Debian packages the tests or the benchmark need (redis-server, postgresql, prometheus for promtool, wrk).
set -euo pipefail
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
