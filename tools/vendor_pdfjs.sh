#!/bin/sh
# Vendor pdf.js for the PDF citation viewer (`make vendor-pdfjs`): the pinned pdfjs-dist package
# from the npm registry, its built files copied into static/ to be committed. Nothing is built or
# fetched at run time; run this again only to change the pinned version.
set -eu
version=$1
dest=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

(cd "$tmp" && npm pack --silent "pdfjs-dist@$version" >/dev/null && tar -xzf "pdfjs-dist-$version.tgz")
package=$tmp/package
found=$(node -p "require('$package/package.json').version")
[ "$found" = "$version" ] || { echo "npm gave pdfjs-dist $found, not $version" >&2; exit 1; }

mkdir -p "$dest"
# The legacy build: the modern one needs the newest browser releases; this one runs in browsers a
# few versions behind as well (managed desktops), for 60 KB more.
cp "$package/legacy/build/pdf.min.mjs" "$package/legacy/build/pdf.worker.min.mjs" "$dest/"
cp "$package/LICENSE" "$dest/LICENSE"
# Only the text layer's rule of the viewer's stylesheet: the transparent, selectable text spans
# laid over the rendered page, which the highlight is matched against.
{
    printf '/* The .textLayer rule of pdfjs-dist %s web/pdf_viewer.css (Apache-2.0, see LICENSE). */\n' "$version"
    awk '/^\.textLayer \{/ { on = 1 } on { print } on && /^\}/ { exit }' "$package/web/pdf_viewer.css"
} > "$dest/text_layer.css"
grep -q 'color: transparent' "$dest/text_layer.css" || { echo "no .textLayer rule found" >&2; exit 1; }
{
    echo "pdfjs-dist $version (legacy build), from the npm registry; licence: Apache-2.0 (LICENSE)."
    echo "Made by tools/vendor_pdfjs.sh (make vendor-pdfjs). sha256 of the package and the files:"
    (cd "$tmp" && sha256sum "pdfjs-dist-$version.tgz")
    (cd "$dest" && sha256sum pdf.min.mjs pdf.worker.min.mjs text_layer.css)
} > "$dest/VERSION"
echo "pdf.js $version vendored into $dest"
