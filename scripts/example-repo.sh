#!/usr/bin/env bash
# Creates (or refreshes) the example app's git repository that examples/pipeline.json reads:
# examples/.work/app-repo, one commit per change of examples/app/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
repo="$root/examples/.work/app-repo"
git_() { git -C "$repo" -c user.name="Penstock Example" -c user.email="example@penstock.invalid" -c commit.gpgsign=false "$@"; }
if [ ! -d "$repo/.git" ]; then
  mkdir -p "$repo"
  git -C "$repo" init -q -b main
fi
# Mirror examples/app into the repository (deletions included), then commit if anything changed.
find "$repo" -mindepth 1 -maxdepth 1 ! -name .git -exec rm -rf {} +
cp -R "$root/examples/app/." "$repo/"
git_ add -A
if ! git_ diff --cached --quiet 2>/dev/null || ! git_ rev-parse -q --verify HEAD >/dev/null; then
  git_ commit -q -m "Example app as of $(date -u +%Y-%m-%dT%H:%M:%SZ)"
fi
echo "example repository: $repo at $(git_ rev-parse --short HEAD)"
