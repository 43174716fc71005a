#!/bin/bash
# Starts ttyd for vastgate ([program.ttyd]): a login shell at /terminal, bound to loopback.
# ttyd 1.7 made terminals read-only unless -W is given; the 1.6 of Ubuntu 22.04 has no -W and is
# writable anyway, so -W is passed where ttyd knows it.
set -euo pipefail

writable=()
if ttyd --help 2>&1 | grep -q -- '--writable'; then
    writable=(-W)
fi
exec ttyd -p 7681 -i lo -b /terminal "${writable[@]}" bash -l
