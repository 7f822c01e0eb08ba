"""`python -m kdcore users add|list|remove|passwd|admin`: the team's password accounts in the run store.

Passwords are read from a prompt (typed twice, not echoed) or, when stdin is not a terminal, from the first
line of stdin (`printf '%s\\n' "$PW" | python -m kdcore users add ada`); never from the command line, where
other users of the machine could read them."""
from __future__ import annotations

import argparse
import getpass
import sys

from kdcore.errors import KDError


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="add a user (the password is asked for)")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="may change every run and manage users")
    sub.add_parser("list", help="list the users")
    remove = sub.add_parser("remove", help="remove a user (their runs stay)")
    remove.add_argument("name")
    passwd = sub.add_parser("passwd", help="set a user's password (signs their open sessions out)")
    passwd.add_argument("name")
    admin = sub.add_parser("admin", help="grant or revoke admin rights")
    admin.add_argument("name")
    admin.add_argument("--revoke", action="store_true", help="take admin rights away instead")
    for q in (add, sub.choices["list"], remove, passwd, admin):
        q.add_argument("--db", help="database URL (default: $KD_DATABASE_URL, else KD_HOME/kdstudio.db)")


def read_password(stdin=None) -> str:
    """The new password, from a prompt typed twice on a terminal, else the first line of stdin."""
    stdin = stdin or sys.stdin
    if stdin.isatty():
        first = getpass.getpass("New password: ")
        if getpass.getpass("Repeat it: ") != first:
            raise KDError("the two passwords differ")
        return first
    line = stdin.readline()
    if not line:
        raise KDError("no password on stdin")
    return line.rstrip("\r\n")


def run(args: argparse.Namespace) -> int:
    from kdcore.jobs.accounts import Accounts

    accounts = Accounts(args.db)
    if args.action == "list":
        users = accounts.list()
        if not users:
            print("no users yet: add one with `python -m kdcore users add NAME --admin`")
        for user in users:
            print(f"{user.name}{'  (admin)' if user.is_admin else ''}  added {user.created_at:%Y-%m-%d}")
        return 0
    if args.action == "add":
        from kdcore.jobs.accounts import check_name

        check_name(args.name)  # a bad name fails before the password is asked for
        user = accounts.add(args.name, read_password(), admin=args.admin)
        print(f"added {user.name}{' as an admin' if user.is_admin else ''}")
    elif args.action == "remove":
        accounts.remove(args.name)
        print(f"removed {args.name}")
    elif args.action == "passwd":
        if accounts.get(args.name) is None:
            raise KDError(f"there is no user {args.name!r}")
        accounts.set_password(args.name, read_password())
        print(f"password of {args.name} changed")
    elif args.action == "admin":
        accounts.set_admin(args.name, not args.revoke)
        print(f"{args.name} is {'no longer ' if args.revoke else ''}an admin")
    return 0
