#!/usr/bin/env bash
# Holds every #include "FOLDER/..." of the layer folders to the table "Who may include whom" in
# docs/ARCHITECTURE.md (the test reads the table itself, so the document and the check cannot
# drift apart). Usage: include_directions.sh SOURCE_DIR, or --self-test (proves that an include
# against the direction, and a folder missing from the table, fail the check).
set -euo pipefail

check() {
    local root=$1
    local doc=$root/docs/ARCHITECTURE.md
    [[ -f $doc ]] || { echo "include_directions: $doc is missing"; return 1; }
    # Rows like: | `storage/` | `util/`, `callout/` | ... (the first two cells only).
    declare -A allowed=()
    local in_table=0 line folder deps
    while IFS= read -r line; do
        if [[ $line == "## Who may include whom"* ]]; then in_table=1; continue; fi
        [[ $in_table == 1 && $line == "## "* ]] && break
        [[ $in_table == 1 && $line =~ ^\|\ \`([a-z_]+)/\`\ \|([^|]*)\| ]] || continue
        folder=${BASH_REMATCH[1]}
        deps=$(grep -o '`[a-z_]*/`' <<<"${BASH_REMATCH[2]}" | tr -d '`/' | tr '\n' ' ' || true)
        allowed[$folder]="$folder $deps"
    done <"$doc"
    if [[ ${#allowed[@]} == 0 ]]; then
        echo "include_directions: no table under '## Who may include whom' in $doc"
        return 1
    fi
    local failures=0 dir name file target
    # Every folder holding library sources must have a row.
    for dir in "$root"/*/; do
        name=$(basename "$dir")
        case $name in tests | bench | build* | docs | etc | contrib | debian | scripts | dist) continue ;; esac
        if compgen -G "$dir*.[ch]pp" >/dev/null && [[ -z ${allowed[$name]:-} ]]; then
            echo "include_directions: $name/ holds sources but has no row in docs/ARCHITECTURE.md"
            failures=$((failures + 1))
        fi
    done
    for folder in "${!allowed[@]}"; do
        for file in "$root/$folder"/*.[ch]pp; do
            [[ -e $file ]] || continue
            while IFS=: read -r lineno target; do
                if [[ " ${allowed[$folder]} " != *" $target "* ]]; then
                    echo "$folder/$(basename "$file"):$lineno: includes $target/, but $folder/ may include only: ${allowed[$folder]}"
                    failures=$((failures + 1))
                fi
            done < <(grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"[a-z_]+/' "$file" |
                sed -E 's/^([0-9]+):.*include[[:space:]]*"([a-z_]+)\/.*/\1:\2/')
        done
    done
    if [[ $failures != 0 ]]; then
        echo "include_directions: $failures include(s) against the layer direction"
        return 1
    fi
    echo "include_directions: every include follows docs/ARCHITECTURE.md"
}

self_test() {
    local src=$1 tmp
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' RETURN
    mkdir -p "$tmp/docs" "$tmp/util" "$tmp/daemon"
    cp "$src/docs/ARCHITECTURE.md" "$tmp/docs/"
    echo '#include "util/a.hpp"' >"$tmp/daemon/d.cpp"
    echo '#pragma once' >"$tmp/util/a.hpp"
    check "$tmp" >/dev/null || { echo "self-test: a correct tree was refused"; return 1; }
    printf '#pragma once\n#include "daemon/d.hpp"\n' >"$tmp/util/a.hpp"
    local out
    if out=$(check "$tmp"); then echo "self-test: util/ including daemon/ passed"; return 1; fi
    [[ $out == *"util/a.hpp:2: includes daemon/"* ]] || { echo "self-test: wrong report: $out"; return 1; }
    printf '#pragma once\n' >"$tmp/util/a.hpp"
    mkdir "$tmp/newlayer" && echo '#pragma once' >"$tmp/newlayer/n.hpp"
    if out=$(check "$tmp"); then echo "self-test: a folder without a row passed"; return 1; fi
    [[ $out == *"newlayer/ holds sources but has no row"* ]] || { echo "self-test: wrong report: $out"; return 1; }
    echo "self-test: an upward include and a folder without a row are refused"
}

if [[ ${1:-} == --self-test ]]; then
    self_test "${2:?usage: include_directions.sh --self-test SOURCE_DIR}"
else
    check "${1:?usage: include_directions.sh SOURCE_DIR}"
fi
