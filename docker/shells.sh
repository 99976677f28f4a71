#!/bin/sh
# Accounts whose login shells are as chatty as gaming PCs' are (tests/e2e/test_remote_shells.py).
# Each prints a banner on stdout for every non-interactive ssh command -- `key=value` lines that
# look like gt-remote's answers and 4 KiB of text -- and a line on stderr, from the start-up
# file its shell reads for such commands: bash ~/.bashrc (before its interactivity check),
# zsh ~/.zshenv, fish ~/.config/fish/config.fish; dash and busybox ash read none, so theirs
# come from ~/.ssh/rc, which sshd runs before every command. Two more answer like Windows'
# cmd.exe and PowerShell. The user gamer is left as it is.
set -eu

# The banner: answers gt-remote must never take for its own, then 4 KiB of text.
{
    echo "Welcome to the gaming PC"
    for line in pid=1 model=RTX path=/usr/bin/true version=9.9.9 running=1 installed=1 placed=1 \
                python=none stopped=1 free=0 sha256=0 size=0 error=banner ok=1 other=1:1; do
        echo "$line"
    done
    i=0
    while [ "$i" -lt 64 ]; do
        echo "fortune $i: the quick brown fox jumps over the lazy dog, twice over"
        i=$((i + 1))
    done
} > /etc/gt-remote-banner
printf '%s\n' "Welcome to the gaming PC (motd)" "pid=1" "model=RTX" > /etc/motd

ln -sf /bin/busybox /usr/local/bin/ash

cat > /usr/local/bin/fake-cmd <<'SHELL'
#!/bin/sh
# Answers every command as Windows' cmd.exe does: not recognized.
word=${2%% *}
printf "'%s' is not recognized as an internal or external command,\r\noperable program or batch file.\r\n" "$word" >&2
exit 1
SHELL
cat > /usr/local/bin/fake-pwsh <<'SHELL'
#!/bin/sh
# Answers every command as Windows PowerShell does: not recognized.
word=${2%% *}
printf "%s : The term '%s' is not recognized as the name of a cmdlet, function, script file, or operable program.\r\n" "$word" "$word" >&2
exit 1
SHELL
chmod 755 /usr/local/bin/fake-cmd /usr/local/bin/fake-pwsh
for shell in /usr/local/bin/ash /usr/local/bin/fake-cmd /usr/local/bin/fake-pwsh; do echo "$shell" >> /etc/shells; done

banner='cat /etc/gt-remote-banner; echo "noise on stderr from a start-up file" >&2'

add_user() {  # name uid shell
    useradd --create-home --uid "$2" --shell "$3" "$1"
    usermod -p '*' "$1"
    install -d -m 0700 -o "$1" -g "$1" "/home/$1/.ssh"
    install -m 0600 -o "$1" -g "$1" /dev/null "/home/$1/.ssh/authorized_keys"
}

add_user bashy 1101 /bin/bash
{ echo "$banner"; cat /etc/skel/.bashrc; } > /home/bashy/.bashrc

add_user zshy 1102 /usr/bin/zsh
echo "$banner" > /home/zshy/.zshenv

add_user fishy 1103 /usr/bin/fish
mkdir -p /home/fishy/.config/fish
echo "$banner" > /home/fishy/.config/fish/config.fish

add_user dashy 1104 /bin/dash
echo "$banner" > /home/dashy/.ssh/rc

add_user ashy 1105 /usr/local/bin/ash
echo "$banner" > /home/ashy/.ssh/rc

add_user winny 1106 /usr/local/bin/fake-cmd
add_user poshy 1107 /usr/local/bin/fake-pwsh

for user in bashy zshy fishy dashy ashy; do chown -R "$user:$user" "/home/$user"; done
