# Shared by the scripts that debootstrap a Debian root for the tests (nix-root.sh, s3-root.sh):
# sourced, not run.

# The first URI of an apt source for a non-security suite, from deb822 (*.sources) or
# one-line (*.list, sources.list) files.
mirror_from_apt() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    awk '
      function flush() { if (uri != "" && suites != "" && suites !~ /-security/) { print uri; found = 1; exit } uri = ""; suites = "" }
      /^[[:space:]]*$/ { flush(); next }
      /^URIs:/ { uri = $2 }
      /^Suites:/ { suites = $0 }
      END { if (!found) flush() }
    ' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    awk '$1 == "deb" {
      i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
      if ($(i + 1) !~ /-security/) { print $i; exit }
    }' "$f"
  done
}
