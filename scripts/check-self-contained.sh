#!/usr/bin/env bash
# Fails when a tracked file other than the known optional readers names the shared data folder
# beside the repository (`../shared/`): a fresh clone has no such folder, so every fixture a
# test needs must live in the repository. The readers listed here add what that folder holds
# when it exists and lose nothing when it does not.
set -euo pipefail
cd "$(dirname "$0")/.."

optional_readers=(
  gateway-openai-compat/tests/all/fixtures.rs # shared_root: extra fixture folders
  tests/src/lib.rs                            # openvoiceui_dirs, tool_fixture_dirs: second copies
  integrations/openai-sdk/support.py          # tool_fixture_dirs: extra tool-call fixtures
  scripts/fuzz.sh                             # extra corpus seeds
  scripts/check-self-contained.sh
)
exclude=()
for file in "${optional_readers[@]}"; do exclude+=(":!$file"); done

if hits=$(git grep -n -E '\.\./shared|"shared"\)|/ "shared"' -- ':!*.md' "${exclude[@]}"); then
  echo "these read ../shared/, which a clone does not have: copy what they need into the repository" >&2
  echo "$hits" >&2
  exit 1
fi
echo "no test reads outside the repository except the optional readers"
