"""The shell functions every remote script starts with: where gt-remote's files are, whose
process or listener is whose, builds and their hashes, versions, mounts, leases, and whether
a directory is fit to hold code. POSIX sh, tested under dash, busybox ash, bash and zsh's sh
(tests/e2e/test_remote_shells.py, tests/e2e/test_other_accounts.py); scripts.py sends it."""

PRELUDE = r"""
gt_base=$GT_INSTALL_DIR
case $gt_base in
    "~") gt_base=$HOME ;;
    "~/"*) gt_base="$HOME/${gt_base#??}" ;;
    /*) ;;
    *) gt_base="$HOME/$gt_base" ;;
esac
install_root="$gt_base/gt-remote/servers"
relay_root="$gt_base/gt-remote/relay"
state_dir="$HOME/.local/state/gt-remote"
# A process's command line: from /proc where there is one (a read, where ps is a program to
# start), else from ps (macOS, the BSDs).
cmdline_of() {
    if [ -r "/proc/$1/cmdline" ]; then tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null; else ps -o args= -p "$1" 2>/dev/null; fi
}
# Is pid $1 alive and a server we started for port $2?
is_our_server() {
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 1
    case " $(cmdline_of "$1") " in *" --listen-tcp 127.0.0.1:$2 "*) return 0 ;; esac
    return 1
}
# SHA-256 of file $1 in hex, with whatever this machine has; nothing printed if it has none.
sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then sha256sum < "$1" | cut -c1-64
    elif command -v shasum >/dev/null 2>&1; then shasum -a 256 < "$1" | cut -c1-64
    elif command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r < "$1" | cut -c1-64
    elif command -v python3 >/dev/null 2>&1; then
        python3 -c 'import hashlib, sys
h = hashlib.sha256()
for block in iter(lambda: sys.stdin.buffer.read(1 << 20), b""): h.update(block)
print(h.hexdigest())' < "$1"
    fi
}
# Is the file $1, in a directory named by the first 16 hex digits of its SHA-256, still what
# was uploaded there? (Exit 1: changed or unreadable. A machine with no SHA-256 tool at all
# cannot check, and passes.)
build_intact() {
    [ -f "$1" ] || return 1
    want=${1%/*}; want=${want##*/}
    [ "${#want}" -eq 16 ] || return 1
    got=$(sha256_of "$1") || return 1
    [ -n "$got" ] || return 0
    case $got in "$want"*) return 0 ;; esac
    return 1
}
# Owner uid and permission bits (octal) of $1 itself, never of what a link points to.
owner_mode_of() {
    stat -c '%u %a' -- "$1" 2>/dev/null || stat -f '%u %Lp' -- "$1" 2>/dev/null
}
# Can no account but this user (or root) change what path $1 holds? Its owner is us or root,
# and no one else may write to it; $2 = sticky: a shared directory (/var/tmp, /tmp) whose
# sticky bit keeps others from renaming what we made in it. Prints the reason on failure.
fit_for_code() {
    om=$(owner_mode_of "$1") || { echo "cannot be checked (no stat)"; return 1; }
    o=${om%% *} m=${om#* }
    case "$o:$m" in *[!0-9:]*|:*|*:) echo "cannot be checked (stat said '$om')"; return 1 ;; esac
    if [ "$o" != "${me:-$(id -u)}" ] && [ "$o" != 0 ]; then echo "belongs to uid $o"; return 1; fi
    [ $((0$m & 022)) -eq 0 ] && return 0
    [ "$2" = sticky ] && [ $((0$m & 01000)) -ne 0 ] && return 0
    echo "is writable by other accounts (mode $m)"; return 1
}
# Is every directory we keep code in (<install dir>/gt-remote, servers, relay and each build's
# directory) a real directory (no link), ours (or root's) and writable by no one else? Another
# account that could write there could swap a verified build or relay before it runs. Prints
# unsafe_dir= and unsafe_why= for the first that is not; directories not made yet pass (they
# are made 0700). The install dir itself may be shared if it is sticky (/var/tmp).
install_dir_safe() {
    if [ -L "$gt_base" ] && ! why=$(fit_for_code "$gt_base"); then
        echo "unsafe_dir=$gt_base"; echo "unsafe_why=the link $why"; return 1
    fi
    if [ -d "$gt_base" ] && ! why=$(fit_for_code "$gt_base/." sticky); then
        echo "unsafe_dir=$gt_base"; echo "unsafe_why=$why"; return 1
    fi
    for d in "$gt_base/gt-remote" "$install_root" "$relay_root" "$install_root"/* "$relay_root"/*; do
        [ -e "$d" ] || [ -L "$d" ] || continue
        case "$d" in "$install_root"/*|"$relay_root"/*) [ -d "$d" ] || [ -L "$d" ] || continue ;; esac
        if [ -L "$d" ]; then echo "unsafe_dir=$d"; echo "unsafe_why=is a symbolic link"; return 1; fi
        if [ ! -d "$d" ]; then echo "unsafe_dir=$d"; echo "unsafe_why=is not a directory"; return 1; fi
        if ! why=$(fit_for_code "$d"); then echo "unsafe_dir=$d"; echo "unsafe_why=$why"; return 1; fi
    done
    return 0
}
# install_dir_safe, asked once per script (the bring-up's facts, probe and relay parts all
# need it): afterwards $install_unsafe is empty when the directories are safe, else its
# unsafe_dir= and unsafe_why= lines. Call it directly, not in $(...), so the answer is kept.
check_install_dir() {
    [ -n "${install_checked:-}" ] && return 0
    install_unsafe=$(install_dir_safe); install_checked=1
}
# The first unsafe directory of $install_unsafe.
unsafe_dir() {
    printf '%s\n' "$install_unsafe" | sed -n 's/^unsafe_dir=//p'
}
# Run `$1 --version`: its status, and the first line of its answer in $version_line. The answer
# is stdout (a loader's warning on stderr is not a version); a failure says why on either stream.
ask_version() {
    version_out=$("$1" --version 2>/dev/null) && { version_line=$(printf '%s\n' "$version_out" | head -n 1); return 0; }
    version_rc=$?
    version_line=$("$1" --version 2>&1 | head -n 1)
    return "$version_rc"
}
# The first line of `$1 --version`. A build under install_root lives in a directory named by
# its content hash, so its answer cannot change: it is kept beside it ($1.version, written at
# upload or on first ask) and a warm `up` starts no server process just to learn a version.
version_of() {
    case "$1" in "$install_root"/*/*) if [ -s "$1.version" ]; then head -n 1 "$1.version"; return 0; fi ;; esac
    # Only an answer is kept: a failure (noexec, a missing library) may be mended later.
    if ask_version "$1"; then case "$1" in "$install_root"/*/*) keep_version "$1" "$version_line" ;; esac; fi
    printf '%s\n' "$version_line"
    return 0
}
# Keep $2, build $1's --version answer, beside it (private, replaced in one rename).
keep_version() {
    [ -n "$2" ] && (umask 077; printf '%s\n' "$2" > "$1.version.$$" && mv -f "$1.version.$$" "$1.version") 2>/dev/null
    return 0
}
# Build $1 (one gt-remote uploaded: under the install dir) answered a Ping: only such a build is
# "the newest" that a plain `up` starts and `clean` keeps; one that never did (a program that is
# no server, say `--server-binary /bin/true`) is neither. A file beside it, private, made once.
mark_answered() {
    case "$1" in "$install_root"/*/*) [ -e "$1.answered" ] || (umask 077; : > "$1.answered") 2>/dev/null ;; esac
    return 0
}
# The mount point holding path $1, if that mount forbids running programs (noexec).
noexec_mount_of() {
    [ -r /proc/mounts ] || return 0
    awk -v path="$1" '
        { mp = $2; gsub(/\\040/, " ", mp); gsub(/\\011/, "\t", mp)
          if ((path == mp || index(path, mp "/") == 1 || mp == "/") && length(mp) >= length(best)) { best = mp; opts = $4 } }
        END { if ("," opts "," ~ /,noexec,/) print best }' /proc/mounts
}
# Who takes connections to 127.0.0.1:$1 ($2: a pid to try first, our server's). Prints
# listen=none, listen=unknown (no /proc, lsof or ss to ask), or listen_uid (another account's
# listener first: it may take connections), listen_user for another account, and listen_pid
# when the listener is this user's process started with --listen-tcp 127.0.0.1:$1.
# Call it in a subshell: it sets variables.
port_owner() {
    me=${me:-$(id -u)}
    if [ -r /proc/net/tcp ]; then
        files=/proc/net/tcp; [ -r /proc/net/tcp6 ] && files="$files /proc/net/tcp6"
        # LISTEN (0A) on any address that takes connections to 127.0.0.1: 127.0.0.1, 0.0.0.0, ::,
        # and the v4-mapped ::ffff:127.0.0.1 and ::ffff:0.0.0.0 (an AF_INET6 socket bound there
        # takes IPv4 connections), each word as a little- or big-endian host prints it; the
        # uid and inode columns.
        lines=$(awk -v p="$(printf '%04X' "$1")" '$4 == "0A" { split($2, a, ":"); if (a[2] == p && (a[1] ~ /^0+$/ || a[1] ~ /^(0100007F|7F000001|0000000000000000FFFF0000(0100007F|00000000)|00000000000000000000FFFF(7F000001|00000000))$/)) print $8, "ino", $10 }' $files)
    elif command -v lsof >/dev/null 2>&1; then
        lines=$(lsof -nP -iTCP:"$1" -sTCP:LISTEN -Fpu 2>/dev/null | awk '/^p/ { pid = substr($0, 2) } /^u/ { print substr($0, 2), "pid", pid }')
    elif command -v ss >/dev/null 2>&1; then
        lines=$(ss -Hltne "sport = :$1" 2>/dev/null | sed -n 's/.*uid:\([0-9]*\).*ino:\([0-9]*\).*/\1 ino \2/p')
    else
        echo "listen=unknown"; return 0
    fi
    [ -n "$lines" ] || { echo "listen=none"; return 0; }
    uid=$(printf '%s\n' "$lines" | awk -v me="$me" '$1 != me { print $1; exit }')
    if [ -n "$uid" ]; then
        echo "listen_uid=$uid"
        echo "listen_user=$( (getent passwd "$uid" || grep "^[^:]*:[^:]*:$uid:" /etc/passwd) 2>/dev/null | head -n 1 | cut -d: -f1)"
        return 0
    fi
    echo "listen_uid=$me"
    printf '%s\n' "$lines" | while read -r _uid kind id; do
        if [ "$kind" = pid ]; then
            case " $(cmdline_of "$id") " in *" --listen-tcp 127.0.0.1:$1 "*) listener_is "$id"; break ;; esac
            continue
        fi
        # Our server's pid first: most checks then need no scan of every process.
        if [ -n "$2" ] && holds_listener "$2" "$id" "$1"; then listener_is "$2"; break; fi
        for pid in $(pgrep -u "$me" -f -- "--listen-tcp 127.0.0.1:$1( |\$)" 2>/dev/null); do
            if holds_listener "$pid" "$id" "$1"; then listener_is "$pid"; break 2; fi
        done
    done
}
# Our server, pid $1, holds the port: listen_pid, and listen_socket, its own Unix socket, when
# that can be used instead of the port (unix_socket_of).
listener_is() {
    echo "listen_pid=$1"
    listen_socket=$(unix_socket_of "$1")
    [ -z "$listen_socket" ] || echo "listen_socket=$listen_socket"
}
# The Unix socket pid $1 listens on (ccmux's own, beside its TCP port), when no other account
# can put a socket of its own in its place: the socket and its directory are ours (or root's),
# no one else may write to the directory, and its parent is private or sticky. Anyone can take
# a free TCP port on 127.0.0.1; no one can take this name. Nothing printed otherwise.
unix_socket_of() {
    [ -r /proc/net/unix ] || return 0
    inodes=$(ls -l "/proc/$1/fd" 2>/dev/null | sed -n 's/.*socket:\[\([0-9]*\)\].*/\1/p' | tr '\n' ' ')
    [ -n "$inodes" ] || return 0
    # Listening (flags 00010000) sockets with a path, whose inode (column 7) the pid holds.
    path=$(awk -v inodes=" $inodes" '$4 == "00010000" && NF >= 8 && index(inodes, " " $7 " ") { line = $0; for (i = 0; i < 7; i++) sub(/^[^ ]+ +/, "", line); print line; exit }' /proc/net/unix)
    case "$path" in /*/*) ;; *) return 0 ;; esac
    dir=${path%/*}; parent=${dir%/*}
    [ -S "$path" ] && [ ! -L "$path" ] && [ ! -L "$dir" ] && [ -d "$dir" ] || return 0
    fit_for_code "$dir" >/dev/null && fit_for_code "${parent:-/}/." sticky >/dev/null || return 0
    om=$(owner_mode_of "$path") && [ "${om%% *}" = "${me:-$(id -u)}" ] || return 0
    printf '%s\n' "$path"
}
# Does pid $1 hold the socket with inode $2, and was it started with --listen-tcp 127.0.0.1:$3?
holds_listener() {
    ls -l "/proc/$1/fd" 2>/dev/null | grep -q "socket:\[$2\]" || return 1
    case " $(tr '\0' ' ' < "/proc/$1/cmdline") " in *" --listen-tcp 127.0.0.1:$3 "*) return 0 ;; esac
    return 1
}
# Leases: a file per supervisor sharing the server on port $1, named $2, holding how many
# seconds it stays live ($3); each health check writes it again (its mtime is the lease).
lease_touch() {
    umask 077
    [ -d "$state_dir/leases/$1" ] || { mkdir -p "$state_dir/leases/$1" && chmod 700 "$state_dir" "$state_dir/leases" "$state_dir/leases/$1"; } || return 1
    echo "$3" > "$state_dir/leases/$1/$2"
}
# The live leases on port $1 other than $2, as lease=NAME lines; expired ones are removed.
lease_others() {
    now=$(date +%s)
    for f in "$state_dir/leases/$1"/*; do
        [ -f "$f" ] || continue
        name=${f##*/}
        # Only names a supervisor writes: a newline in a planted name would add answer lines.
        case "$name" in "$2"|*.tmp|.*|*[!A-Za-z0-9._-]*) continue ;; esac
        ttl=$(head -c 12 "$f" | tr -cd 0-9); [ -n "$ttl" ] || ttl=60
        m=$(stat -c %Y "$f" 2>/dev/null || stat -f %m "$f" 2>/dev/null) || continue
        if [ $((now - m)) -le "$ttl" ]; then echo "lease=$name"; else rm -f "$f"; fi
    done
}
"""
