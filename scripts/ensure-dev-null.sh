#!/usr/bin/env bash
# Makes /dev/null the null device again when it has become a regular file.
#
# On a machine where /dev/null was deleted, the next `> /dev/null` creates a regular file there, and
# everything written to "the null device" collects in it. Whatever then reads /dev/null gets that text:
# cargo starts `clippy-driver rustc - --print=cfg ...` with /dev/null as its stdin to learn the target,
# and clippy failed on a CI machine compiling anyhow's build-probe diagnostics that had been written
# there ("unexpected closing delimiter ... <anon>:3:50"). Recreating the device (character 1,3) needs
# CAP_MKNOD; without it the file is emptied, which is enough for the next reader, and a warning says so.
set -uo pipefail
if [[ -c /dev/null ]]; then
  exit 0
fi
echo "ensure-dev-null: /dev/null is not a character device here ($(stat -c %F /dev/null 2>/dev/null || echo missing)): recreating it" >&2
tmp="/dev/.null.$$"
if mknod -m 666 "$tmp" c 1 3 2>/dev/null && mv -f "$tmp" /dev/null; then
  echo "ensure-dev-null: /dev/null is the null device again" >&2
  exit 0
fi
rm -f "$tmp" 2>/dev/null
if : > /dev/null 2>&1; then
  echo "ensure-dev-null: cannot create a device node here; emptied the regular file /dev/null instead" >&2
  exit 0
fi
echo "ensure-dev-null: cannot repair /dev/null (no CAP_MKNOD, file not writable)" >&2
exit 1
