#!/bin/sh
# Build the nng Cairn links: Debian's source package of nng 1.5.2 (the same
# code and Debian patches as the libnng1 package), plus the patches in this
# folder, as a static library.  Usage: build.sh OUT
#   OUT/include/nng/...   the headers
#   OUT/lib/libnng.a      position-independent, linked into cairnd, libcairn and the tools
# The source comes through apt from the machine's own Debian mirror (with a
# private apt state under OUT, so the system's package lists are not
# touched), and is checked by apt against the signed release files.
# Nothing is done when OUT already holds a build of these patches.
set -eu

mkdir -p "$1"
out=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
version=1.5.2-2
stamp="$out/built-$(cat "$here"/*.patch "$0" | sha256sum | cut -c1-16)"
[ -f "$stamp" ] && exit 0

for tool in apt-get dpkg-source patch cmake ninja; do
    command -v $tool >/dev/null 2>&1 || { echo "third_party/nng/build.sh: $tool is missing (make deps installs it)" >&2; exit 1; }
done

echo "== nng $version with Cairn's patches -> $out"
rm -rf "$out"/*
mkdir -p "$out/apt/lists/partial" "$out/apt/cache/archives/partial" "$out/src"

# The source index of this machine's Debian release, from the mirror it installs packages from.
. /etc/os-release
suite=${VERSION_CODENAME:?/etc/os-release names no release}
uri=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Created-By: Packages' |
      awk -v s="$suite" '$2 == s { print $1; exit }')
uri=${uri:-http://deb.debian.org/debian/}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
opts=""
[ -f $keyring ] && opts="[signed-by=$keyring] "
echo "deb-src ${opts}$uri $suite main" > "$out/apt/sources.list"

apt() {
    apt-get -q -o Dir::Etc::SourceList="$out/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null \
        -o Dir::State::Lists="$out/apt/lists" -o Dir::Cache="$out/apt/cache" -o Debug::NoLocking=1 \
        -o APT::Sandbox::User="$(id -un)" "$@"
}
apt update >"$out/apt/update.log" 2>&1 || { cat "$out/apt/update.log" >&2; exit 1; }
(cd "$out/src" && apt source --download-only "nng=$version") >"$out/apt/source.log" 2>&1 ||
    { cat "$out/apt/source.log" >&2; echo "third_party/nng/build.sh: cannot fetch nng $version's source from $uri" >&2; exit 1; }

# dpkg-source applies Debian's own patches; then ours.
(cd "$out/src" && dpkg-source -x "nng_$version.dsc" nng) >"$out/dpkg-source.log" 2>&1 ||
    { cat "$out/dpkg-source.log" >&2; exit 1; }
for p in "$here"/*.patch; do
    patch -s -d "$out/src/nng" -p1 <"$p"
done

cmake -S "$out/src/nng" -B "$out/cmake" -G Ninja -Wno-dev \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_POSITION_INDEPENDENT_CODE=ON \
    -DBUILD_SHARED_LIBS=OFF -DNNG_ENABLE_TLS=ON \
    -DNNG_TESTS=OFF -DNNG_TOOLS=OFF -DNNG_ENABLE_NNGCAT=OFF \
    -DCMAKE_INSTALL_PREFIX="$out" -DCMAKE_INSTALL_LIBDIR=lib >"$out/cmake.log" 2>&1 ||
    { cat "$out/cmake.log" >&2; exit 1; }
cmake --build "$out/cmake" >>"$out/cmake.log" 2>&1 || { tail -40 "$out/cmake.log" >&2; exit 1; }
cmake --install "$out/cmake" >>"$out/cmake.log" 2>&1 || { tail -20 "$out/cmake.log" >&2; exit 1; }
rm -rf "$out/apt/cache"
touch "$stamp"
