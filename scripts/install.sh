#!/bin/sh
# Install the helper over bhyve's (FreeBSD's /usr/libexec/bhyve-slirp-helper), keeping the base
# system's file as <dest>.orig, or put the base file back with --uninstall.
#
#   sh scripts/install.sh              build (cargo build --release --locked) and install
#   sh scripts/install.sh --uninstall  restore <dest>.orig over <dest>, remove the man page
#   options: --dest PATH (default /usr/libexec/bhyve-slirp-helper), --no-build,
#            --man-dir DIR (default /usr/local/share/man/man8: where local pages go, and
#            outside what a base-system update rewrites)
#
# The installed binary is stripped (install -s): the release build keeps its symbols in
# target/ for profiling, the system gets ~0.6 MB instead of ~7 MB. A base-system update
# (freebsd-update, or pkg upgrade of the FreeBSD-bhyve package under pkgbase) that ships a new
# helper overwrites ours: run this script again afterwards. It then keeps the new base file as
# .orig, since the file in place is no longer ours.
# POSIX sh: runs on FreeBSD's /bin/sh and on Linux.
set -eu

dest=/usr/libexec/bhyve-slirp-helper
man_dir=/usr/local/share/man/man8
build=1
action=install
while [ $# -gt 0 ]; do
	case $1 in
	--dest) [ $# -ge 2 ] || { echo "install.sh: --dest needs a path" >&2; exit 1; }
		dest=$2; shift ;;
	--dest=*) dest=${1#--dest=} ;;
	--man-dir) [ $# -ge 2 ] || { echo "install.sh: --man-dir needs a directory" >&2; exit 1; }
		man_dir=$2; shift ;;
	--man-dir=*) man_dir=${1#--man-dir=} ;;
	--no-build) build=0 ;;
	--uninstall) action=uninstall ;;
	-h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "install.sh: unknown option '$1' (see --help)" >&2; exit 1 ;;
	esac
	shift
done
# Relative paths are the caller's: make them absolute before the cd to the repository below.
case $dest in /*) ;; *) dest=$PWD/$dest ;; esac
case $man_dir in /*) ;; *) man_dir=$PWD/$man_dir ;; esac
orig=$dest.orig
page=$man_dir/bhyve-slirp-helper.8

# Ours answers --version with its name; bhyve's C helper knows only -S and exits 1.
is_ours() {
	"$1" --version 2>/dev/null | grep -q '^bhyve-slirp-helper '
}

if [ "$action" = uninstall ]; then
	if [ ! -e "$orig" ]; then
		echo "install.sh: no $orig to restore; $dest is left as it is" >&2
		exit 1
	fi
	mv -f "$orig" "$dest"
	echo "restored the base helper: $orig -> $dest"
	if [ -e "$page" ]; then
		rm -f "$page"
		echo "removed the man page $page"
	fi
	exit 0
fi

cd "$(dirname "$0")/.."
if [ "$build" = 1 ]; then
	cargo build --release --locked -p bhyve-slirp-helper
fi
bin=${CARGO_TARGET_DIR:-target}/release/bhyve-slirp-helper
[ -x "$bin" ] || { echo "install.sh: $bin is missing (cargo build --release)" >&2; exit 1; }

if [ -e "$dest" ] && ! is_ours "$dest"; then
	# The file in place is the base system's (first install, or a base update replaced ours).
	cp -p "$dest" "$orig"
	echo "kept the base helper as $orig"
fi
mkdir -p "$(dirname "$dest")"
# Install to a temporary name and rename: a bhyve starting a VM meanwhile never sees half a file.
install -s -m 555 "$bin" "$dest.new"
mv -f "$dest.new" "$dest"
echo "installed $("$dest" --version) as $dest"
# The page, the same way (man(1) reads it uncompressed; no makewhatis needed for man NAME).
mkdir -p "$man_dir"
install -m 444 bhyve-slirp-helper.8 "$page.new"
mv -f "$page.new" "$page"
echo "installed the man page as $page"
[ -e "$orig" ] && echo "roll back with: sh scripts/install.sh --uninstall --dest $dest"
exit 0
