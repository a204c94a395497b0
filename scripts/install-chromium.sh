#!/bin/sh
# Installs Debian's chromium, the headless browser of the web UI's test
# (runner/webui_test.go, at /usr/bin/chromium), when it is missing. Needs
# root and apt access to Debian's package registry; make deps runs it.
set -eu
if [ -x /usr/bin/chromium ]; then
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "install-chromium: /usr/bin/chromium is missing and this is not root: run 'apt-get install -y chromium' as root" >&2
	exit 1
fi
echo "install-chromium: installing Debian's chromium (apt-get)" >&2
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium
/usr/bin/chromium --version
