"""What a camera account may ask of the receiver: the commands cameras need, nothing that reads,
moves or removes what was recorded.

A camera password sits on the camera; whoever takes it must not be able to download the
archive, hide recordings from the watcher or erase them. Foscam, Hikvision, Reolink, Amcrest and
Dahua firmwares (and curl) upload with USER/PASS, TYPE, PASV/EPSV (or PORT/EPRT), CWD/CDUP/PWD,
MKD, STOR and sometimes SIZE to check what arrived, plus the harmless FEAT, SYST, OPTS UTF8,
NOOP, QUIT, MODE/STRU and, for FTPS, AUTH/PBSZ/PROT. Some firmwares LIST or NLST the current
folder to see whether the dated folder exists before MKD: listings are allowed but show folders
only (with neutral sizes and dates), never files. Some upload under a temporary name and rename
it: RNFR/RNTO are allowed only for a file the same session stored.

Refused with 550 (file actions) or 502 (the rest) and an `ftp.command_refused` log line: RETR,
DELE, RMD, APPE, STOU, MDTM, MLSD/MLST, MFMT, SITE (CHMOD and the others), REST, REIN and STAT
with a path. Pure: the tables and functions here take names and paths, never a session.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "ALLOWED_COMMANDS",
    "REFUSED_COMMANDS",
    "folder_listing_line",
    "hidden_component",
    "refusal",
]

# Every command a camera session answers (pyftpdlib's names; X* are RFC 775 aliases).
ALLOWED_COMMANDS = frozenset(
    {
        "USER", "PASS", "QUIT", "NOOP", "SYST", "FEAT", "OPTS", "HELP", "ALLO", "ABOR", "STAT",
        "TYPE", "MODE", "STRU", "PASV", "EPSV", "PORT", "EPRT",
        "CWD", "XCWD", "CDUP", "XCUP", "PWD", "XPWD", "MKD", "XMKD",
        "STOR", "SIZE", "LIST", "NLST", "RNFR", "RNTO",
        "AUTH", "PBSZ", "PROT", "CCC",
    }
)  # fmt: skip

# Commands pyftpdlib knows that a camera account may not use: reply code and reason.
_FILE_ACTION = "550"
_NOT_OFFERED = "502"
REFUSED_COMMANDS: dict[str, str] = {
    "RETR": _FILE_ACTION,
    "DELE": _FILE_ACTION,
    "RMD": _FILE_ACTION,
    "XRMD": _FILE_ACTION,
    "APPE": _FILE_ACTION,
    "STOU": _FILE_ACTION,
    "MDTM": _FILE_ACTION,
    "MFMT": _FILE_ACTION,
    "MLSD": _FILE_ACTION,
    "MLST": _FILE_ACTION,
    "SITE CHMOD": _FILE_ACTION,
    "SITE": _NOT_OFFERED,
    "SITE HELP": _NOT_OFFERED,
    "REST": _NOT_OFFERED,
    "REIN": _NOT_OFFERED,
}


def refusal(command: str, has_argument: bool) -> str | None:
    """The reply that refuses `command` for a camera account, or None when it is allowed.

    `command` is upper case, with `SITE` subcommands joined (`SITE CHMOD`). Commands that
    nobody knows are not refused here: pyftpdlib answers them with 500."""
    if command == "STAT" and has_argument:
        return "550 STAT of a path is not available to camera accounts; use SIZE."
    if command in ALLOWED_COMMANDS:
        return None
    code = REFUSED_COMMANDS.get(command)
    if code is None:
        return None
    return f"{code} {command} is not available to camera accounts: HSI only accepts uploads."


def hidden_component(ftp_path: str) -> str | None:
    """The first component of a normalized FTP path (`/2026/.x/a.jpg`) that starts with '.',
    or None. Such names hide files from the watcher, so uploads and folders may not use them."""
    for part in ftp_path.split("/"):
        if part.startswith("."):
            return part
    return None


def visible_folders(names: Iterable[str]) -> list[str]:
    """Folder names a listing may show: sorted, none hidden."""
    return sorted(name for name in names if not name.startswith("."))


def folder_listing_line(name: str) -> str:
    """One `LIST` line for a folder in the `ls -l` shape clients parse, with neutral owner,
    size and date: a listing says which folders exist and nothing more."""
    return f"drwxr-xr-x   1 camera   camera          0 Jan 01  2000 {name}\r\n"
