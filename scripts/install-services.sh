#!/usr/bin/env bash
# Installs what Wattline's embedded services need on a Debian machine, and nothing
# that is already there: PostgreSQL, the TimescaleDB extension (built from Debian
# trixie's source package, Apache edition, since no binary package exists for
# this suite), Mosquitto and its clients. Safe to run any number of times.
#
# Usage: scripts/install-services.sh [--with-browser]
#   --with-browser  also install the tests' peers: Debian's chromium + chromium-driver (browser
#                   tests), openssh-server (a real SFTP server for export jobs) and
#                   poppler-utils (the tests read report PDFs back as text and pages)
set -euo pipefail

WITH_BROWSER=0
[[ "${1:-}" == "--with-browser" ]] && WITH_BROWSER=1

say() { printf '\033[1m[wattline install]\033[0m %s\n' "$*"; }
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { say "not root and no sudo: install the packages named above by hand"; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
APT_UPDATED=0
apt_update() {
  if [[ $APT_UPDATED -eq 0 ]]; then
    say "refreshing Debian package lists"
    $SUDO apt-get update -qq
    APT_UPDATED=1
  fi
}
apt_install() {
  local missing=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
  if [[ ${#missing[@]} -gt 0 ]]; then
    apt_update
    say "installing Debian packages: ${missing[*]}"
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# --- PostgreSQL ----------------------------------------------------------
PG_MAJOR="${WATTLINE_PG_MAJOR:-}"
if [[ -z "$PG_MAJOR" ]]; then
  if ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    PG_MAJOR=$(ls -d /usr/lib/postgresql/*/bin/postgres | sed -E 's#.*/postgresql/([0-9]+)/.*#\1#' | sort -n | tail -1)
  else
    apt_update
    PG_MAJOR=$(apt-cache show postgresql 2>/dev/null | sed -nE 's/^Depends: postgresql-([0-9]+).*/\1/p' | head -1)
    PG_MAJOR=${PG_MAJOR:-15}
  fi
fi
apt_install "postgresql-$PG_MAJOR" postgresql-client-common
say "PostgreSQL $PG_MAJOR present ($(/usr/lib/postgresql/$PG_MAJOR/bin/postgres --version))"

# --- Mosquitto -------------------------------------------------------------
apt_install mosquitto mosquitto-clients

# --- Pango, for the monthly PDF reports (WeasyPrint lays them out with it) ----------------
apt_install libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core
say "Mosquitto present ($(mosquitto -h 2>/dev/null | head -1 || true))"

# --- TimescaleDB -------------------------------------------------------------
PKGLIBDIR=$(/usr/lib/postgresql/$PG_MAJOR/bin/pg_config --pkglibdir 2>/dev/null || echo "/usr/lib/postgresql/$PG_MAJOR/lib")
SHAREDIR=$(/usr/lib/postgresql/$PG_MAJOR/bin/pg_config --sharedir 2>/dev/null || echo "/usr/share/postgresql/$PG_MAJOR")
if [[ -f "$SHAREDIR/extension/timescaledb.control" && -n "$(ls "$PKGLIBDIR"/timescaledb*.so 2>/dev/null)" ]]; then
  say "TimescaleDB present ($(sed -nE "s/^default_version *= *'(.*)'/\1/p" "$SHAREDIR/extension/timescaledb.control"))"
else
  say "TimescaleDB missing: building it from Debian trixie's source package (about a minute)"
  apt_install "postgresql-server-dev-$PG_MAJOR" cmake libssl-dev dpkg-dev build-essential
  SRC_LIST=/etc/apt/sources.list.d/wattline-trixie-src.sources
  if ! grep -rqs "trixie" /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | grep -q deb-src; then
    if [[ ! -f $SRC_LIST ]]; then
      say "adding a deb-src entry for trixie (sources only: no binary package comes from it)"
      $SUDO tee "$SRC_LIST" >/dev/null <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
      APT_UPDATED=0
    fi
  fi
  apt_update
  BUILD_ROOT="${WATTLINE_BUILD_DIR:-/var/tmp/wattline-build}"
  mkdir -p "$BUILD_ROOT"
  cd "$BUILD_ROOT"
  if ! ls -d timescaledb-*/ >/dev/null 2>&1; then
    say "fetching the timescaledb source package into $BUILD_ROOT"
    apt-get source -qq timescaledb/trixie >/dev/null 2>&1 || apt-get source -qq timescaledb >/dev/null
  fi
  SRC_DIR=$(ls -d "$BUILD_ROOT"/timescaledb-*/ | head -1)
  cd "$SRC_DIR"
  say "configuring TimescaleDB (Apache edition) in $SRC_DIR"
  rm -rf build
  ./bootstrap -DAPACHE_ONLY=ON -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DPG_CONFIG="/usr/lib/postgresql/$PG_MAJOR/bin/pg_config" >/dev/null
  say "compiling TimescaleDB"
  make -C build -j"$(nproc)" >/dev/null
  say "installing TimescaleDB into PostgreSQL $PG_MAJOR"
  $SUDO make -C build install >/dev/null
  say "TimescaleDB installed"
fi

# --- Peers for the tests: a browser, an SFTP server, PDF tools -------------------
if [[ $WITH_BROWSER -eq 1 ]]; then
  apt_install chromium chromium-driver openssh-server poppler-utils
  say "Chromium, OpenSSH and poppler present"
fi
say "all services' software is installed"
