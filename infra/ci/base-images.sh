#!/usr/bin/env bash
# Local stand-ins for the public images infra/Dockerfile builds FROM, made from
# Debian's archive, for machines that reach no container registry (these CI
# machines). Users never need this: they pull the public images.
#
#   localhost/fleetscrape-ci/debian:bookworm-slim   debootstrap minbase, slimmed as Docker's debian:*-slim
#   localhost/fleetscrape-ci/rust:X.Y-bookworm      that + gcc, libc6-dev, pkg-config and this machine's
#                                                   stable Rust toolchain and CA bundle (never published)
#   localhost/fleetscrape-ci/sqlite:bookworm        that + sqlite3, running as Grafana's user (472:0)
#
# Idempotent: an image is rebuilt only when this script, a Containerfile, the
# toolchain or the CA bundle changed (a label records their hash). Needs root,
# podman, debootstrap (.ci/run installs them). Prints the three names.
set -euo pipefail
self=$(realpath "$0")
cd "$(dirname "$self")"

prefix=localhost/fleetscrape-ci
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ca_bundle=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
log() { printf 'base-images: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in podman debootstrap rustc; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (apt-get install -y podman runc debootstrap; rustc from the machine's toolchain)"
done
[ "$(id -u)" = 0 ] || die "debootstrap and rootful podman need root"
[ -r "$ca_bundle" ] || die "CA bundle $ca_bundle not readable (set SSL_CERT_FILE)"

# The Rust image the Dockerfile names, e.g. docker.io/library/rust:1.95-bookworm.
rust_default=$(sed -n 's/^ARG RUST_IMAGE=//p' ../Dockerfile)
rust_tag=${rust_default##*:}                      # 1.95-bookworm
wanted=${rust_tag%%-*}                            # 1.95
have=$(rustc --version | awk '{print $2}')        # 1.95.0
case "$have" in
  "$wanted" | "$wanted".*) ;;
  *) die "the Dockerfile builds with Rust $wanted ($rust_default) but this machine's rustc is $have: change ARG RUST_IMAGE or the toolchain" ;;
esac
toolchain=$(rustc --print sysroot)

key=$(cat "$self" rust.Containerfile sqlite.Containerfile "$ca_bundle" <(rustc -vV) | sha256sum | cut -c1-16)
slim=$prefix/debian:bookworm-slim
rust=$prefix/rust:$rust_tag
sqlite=$prefix/sqlite:bookworm
current() { [ "$(podman image inspect --format '{{index .Labels "fleetscrape.ci.key"}}' "$1" 2>/dev/null)" = "$key" ]; }
# An outdated stand-in is untagged by its rebuild: remove it so stale ones do not pile up.
drop_old() { podman image rm "$1" >/dev/null 2>&1 || true; }
old_id() { podman image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }

if ! current "$slim"; then
  old=$(old_id "$slim")
  root=$(mktemp -d /var/tmp/fleetscrape-debootstrap.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  log "debootstrap --variant=minbase bookworm from $mirror (about 30 s)"
  debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 \
    || { tail -n 20 "$root.log" >&2; die "debootstrap failed (log above)"; }
  rm -f "$root.log"
  # What Docker's debian:bookworm-slim leaves out, and its apt sources.
  cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
CFG
  # And Docker's apt clean-up: no package caches left in any layer.
  cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
  rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
         "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/*
  find "$root/usr/share/doc" -mindepth 2 ! -name copyright -delete 2>/dev/null || true
  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  log "importing $slim"
  tar -C "$root" -c . | podman import --quiet --change 'CMD ["bash"]' --change "LABEL fleetscrape.ci.key=$key" - "$slim" >/dev/null
  rm -rf "$root"
  trap - EXIT
  [ -z "$old" ] || drop_old "$old"
fi

if ! current "$rust"; then
  old=$(old_id "$rust")
  log "building $rust (apt-get install gcc libc6-dev pkg-config ca-certificates; toolchain $toolchain)"
  podman build --quiet --network host --format docker --build-arg "BASE=$slim" --label "fleetscrape.ci.key=$key" \
    -v "$toolchain:/toolchain:ro" -v "$ca_bundle:/host-ca-bundle.crt:ro" \
    -f rust.Containerfile -t "$rust" . >/dev/null
  [ -z "$old" ] || drop_old "$old"
fi

if ! current "$sqlite"; then
  old=$(old_id "$sqlite")
  log "building $sqlite"
  podman build --quiet --network host --format docker --build-arg "BASE=$slim" --label "fleetscrape.ci.key=$key" \
    -f sqlite.Containerfile -t "$sqlite" . >/dev/null
  [ -z "$old" ] || drop_old "$old"
fi

printf '%s\n' "$slim" "$rust" "$sqlite"
