#!/usr/bin/env bash
# Install the programs the tests run for real, when they are missing, and say so.
#   mosquitto  Debian's broker, started by the test fixtures on a free loopback port
#   nodejs     runs the Node-RED example flow's function nodes on real messages
# Arguments name the ones wanted (make demo needs only mosquitto); none: both.
set -euo pipefail

wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(mosquitto nodejs)
need_apt=()
for program in "${wanted[@]}"; do
    case $program in
        mosquitto) command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto) ;;
        nodejs) command -v node >/dev/null 2>&1 || need_apt+=(nodejs) ;;
        *) echo "test deps: unknown program $program (mosquitto, nodejs)" >&2; exit 2 ;;
    esac
done

if [ ${#need_apt[@]} -gt 0 ]; then
    echo "test deps: installing ${need_apt[*]} from Debian (missing on this machine)"
    if [ "$(id -u)" -ne 0 ]; then
        echo "test deps: not root; install them yourself: sudo apt-get install ${need_apt[*]}" >&2
        exit 1
    fi
    # Another apt at work (a cluster's set-up beside the tests) is waited for, not a failure.
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends "${need_apt[@]}" >/dev/null
    # Debian's package may start a system broker on 1883; the tests use their own ports.
fi
for program in "${wanted[@]}"; do
    case $program in
        mosquitto) echo "test deps: mosquitto $(/usr/sbin/mosquitto -h 2>/dev/null | head -1 | awk '{print $3}') present" ;;
        nodejs) echo "test deps: node $(node --version) present" ;;
    esac
done
