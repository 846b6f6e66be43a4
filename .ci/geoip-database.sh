#!/usr/bin/env bash
# Fetches the public country database the geoip check and the benchmarks use: the CC0
# ip-location-db country file from the npm registry, a pinned version checked by its
# SHA-512, cached in target/ci-tools/geoip. Prints the .mmdb file's path. Run from the
# repository root:
#   bash .ci/geoip-database.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# To move to a newer database, change both (the registry's dist.integrity, in hex).
version=2.3.2026061719
sha512=c5e9810cd425e260980ee55ba9ede32862ac543ca464691fbde6e1b4e87fdd518b69dabcbeca7bb7ba27b69314b77847eec0064f478b0f227df5257ed306b166

cache=target/ci-tools/geoip
tarball=$cache/geo-whois-asn-country-mmdb-$version.tgz
if ! echo "$sha512  $tarball" | sha512sum -c --status 2>/dev/null; then
    mkdir -p "$cache"
    curl -fsSL --retry 3 --max-time 300 -o "$tarball.part" \
        "https://registry.npmjs.org/@ip-location-db/geo-whois-asn-country-mmdb/-/geo-whois-asn-country-mmdb-$version.tgz"
    if ! echo "$sha512  $tarball.part" | sha512sum -c --status; then
        echo "the downloaded database is not version $version's (SHA-512 differs)" >&2
        exit 1
    fi
    mv "$tarball.part" "$tarball"
fi
tar -xzf "$tarball" -C "$cache" --strip-components=1 package/geo-whois-asn-country.mmdb
echo "$(pwd)/$cache/geo-whois-asn-country.mmdb"
