# TimescaleDB for the local PostgreSQL. A Debian package is used where one is
# installable for this PostgreSQL; otherwise (Debian 12) the Apache-licensed
# edition is built from Debian 13's (trixie) source package, fetched with
# apt-get source through a private apt state directory, so the machine's own
# apt configuration stays untouched.

TSDB_SUITE="${NAKHON_TSDB_SOURCE_SUITE:-trixie}"
TSDB_BUILD="$STATE/build/timescaledb"

timescaledb_installed() {
  [[ -f "$("$PG_BIN/pg_config" --pkglibdir)/timescaledb.so" ]] 2>/dev/null \
    || [[ -f "/usr/lib/postgresql/$PG_VERSION/lib/timescaledb.so" ]]
}

# The Debian archive this machine already uses (its mirror), for deb-src lines.
debian_mirror() {
  local uri
  uri="$(awk '/^URIs:/ {u=$2} /^Suites:/ && u != "" && $0 !~ /security/ {print u; exit}' \
          /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
  if [[ -z "$uri" ]]; then
    uri="$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) {print $i; exit}}' \
            /etc/apt/sources.list 2>/dev/null || true)"
  fi
  [[ -n "$uri" ]] || die "find the Debian mirror" "" "no Debian archive in /etc/apt/sources.list{,.d}"
  echo "$uri"
}

timescaledb_package() {
  local p
  for p in "postgresql-$PG_VERSION-timescaledb" "timescaledb-2-postgresql-$PG_VERSION"; do
    if apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [0-9]'; then echo "$p"; return 0; fi
  done
  return 1
}

timescaledb_install() {
  timescaledb_installed && return 0
  local pkg
  if pkg="$(timescaledb_package)"; then
    apt_install "$pkg"; return 0
  fi
  say "building TimescaleDB (Apache-licensed edition) from Debian $TSDB_SUITE's source package"
  apt_install dpkg-dev cmake gcc make "postgresql-server-dev-$PG_VERSION"
  local log="$LOGS/timescaledb-build.log" apt="$STATE/build/apt-$TSDB_SUITE"
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/etc"
  printf 'deb-src %s %s main\n' "$(debian_mirror)" "$TSDB_SUITE" > "$apt/etc/sources.list"
  local opts=(-o "Dir::Etc::SourceList=$apt/etc/sources.list" -o "Dir::Etc::SourceParts=$apt/etc/none"
              -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache")
  : > "$log"
  apt-get "${opts[@]}" update >>"$log" 2>&1 \
    || die "apt-get update of $TSDB_SUITE's deb-src" "$log" "could not read the source index"
  rm -rf "$TSDB_BUILD"; mkdir -p "$TSDB_BUILD"
  (cd "$TSDB_BUILD" && apt-get "${opts[@]}" source timescaledb) >>"$log" 2>&1 \
    || die "apt-get source timescaledb" "$log" "could not fetch or unpack the source"
  local src; src="$(find "$TSDB_BUILD" -maxdepth 1 -mindepth 1 -type d -name 'timescaledb-*' | head -1)"
  [[ -n "$src" ]] || die "apt-get source timescaledb" "$log" "no source tree was unpacked"
  {
    cmake -S "$src" -B "$src/build" -DAPACHE_ONLY=1 -DSEND_TELEMETRY_DEFAULT=OFF \
      -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF -DLINTER=OFF \
      -DUSE_OPENSSL=0 -DCMAKE_BUILD_TYPE=Release -DPG_CONFIG="$PG_BIN/pg_config" &&
    make -C "$src/build" -j"$(nproc)" &&
    make -C "$src/build" install
  } >>"$log" 2>&1 || die "build timescaledb" "$log" "cmake/make failed"
  timescaledb_installed || die "build timescaledb" "$log" "timescaledb.so is not installed"
}
