#!/usr/bin/env bash
# Render a run's report.html in headless Chromium to a PNG, to look at the page as a reader will.
#
#   scripts/check_report.sh runs/fashion_cnn                 # -> runs/fashion_cnn/report.png
#   scripts/check_report.sh runs/fashion_cnn /tmp/page.png
#
# RUN_DIR may also be the HTML file itself. Needs chromium (Debian: apt-get install chromium) or
# $CHROMIUM naming another Chromium/Chrome binary. The window is 1280 wide and as tall as the page
# (measured with --dump-dom is not possible headless, so it is $HEIGHT, default 4000: raise it for
# a long page, e.g. ResNet-20's feature maps).
set -euo pipefail
if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: $0 RUN_DIR|REPORT.html [OUT.png]" >&2
    exit 2
fi
page=$1
[[ -d $page ]] && page=$page/report.html
if [[ ! -f $page ]]; then
    echo "error: $page does not exist (gpucnn train writes it; gpucnn report RUN_DIR rebuilds it)" >&2
    exit 2
fi
out=${2:-$(dirname "$page")/report.png}
browser=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)}
if [[ -z $browser ]]; then
    echo "error: no chromium found (apt-get install chromium, or set CHROMIUM=/path/to/chrome)" >&2
    exit 2
fi
abs_page=$(cd "$(dirname "$page")" && pwd)/$(basename "$page")
abs_out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# --no-sandbox: chromium refuses to run as root otherwise (containers); the page is our own file.
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$profile" \
    --window-size="1280,${HEIGHT:-4000}" --screenshot="$abs_out" "file://$abs_page" >/dev/null 2>&1 || true
if [[ ! -s $abs_out ]]; then
    echo "error: chromium wrote no screenshot of $abs_page" >&2
    exit 1
fi
echo "wrote $out"
