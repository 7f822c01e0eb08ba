"""Team: who signs in and how. Everyone with an account changes their own password here; admins add and remove
accounts, grant admin rights and read the sign-in log (kdcore.jobs.accounts checks that they are admins)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app import auth, widgets

user = auth.require_login()  # the gate again: this page never shows to a visitor who is not signed in
accounts = auth.accounts()
me = auth.actor(user)

st.title("Team")
if user.mode == "off":
    st.info("Nobody signs in on this machine: it has no login, so whoever opens it may change every run. "
            "A shared server sets KD_REQUIRE_LOGIN=1 and adds accounts (`python -m kdcore users add NAME --admin`).")
    st.stop()
if user.mode == "oidc":
    st.info("You signed in through your organisation's identity provider, which manages your account and "
            "password. Admins are the e-mail addresses in KD_ADMINS (or `admins` in secrets.toml).")
    st.stop()
account = accounts.get(user.name)
if account is None:
    st.info("You signed in with the team's shared password, which is for setting up only: it grants no admin "
            "rights and stops working once the first account exists. Create it on the server with "
            "`python -m kdcore users add NAME --admin`.")
    st.stop()

st.subheader("Your password")
with st.form("team_own_password", clear_on_submit=True):
    current = st.text_input("Current password", type="password", key="team_current", max_chars=1024)
    new = st.text_input("New password", type="password", key="team_new", max_chars=1024)
    repeat = st.text_input("New password again", type="password", key="team_repeat", max_chars=1024)
    change = st.form_submit_button("Change my password", icon=":material/key:")
if change:
    if new != repeat:
        st.error("The two new passwords differ.")
    else:
        changed: list = []
        if widgets.attempt(lambda: changed.append(accounts.change_own_password(user.name, current, new,
                                                                                 client=auth.client_address()))):
            auth.keep_session(changed[0])  # this session stays signed in; the user's other sessions are signed out
            st.success("Password changed. Your other sessions are signed out.")

if not user.is_admin:
    st.caption("Admins add and remove accounts; ask one for a new teammate's account.")
    st.stop()

st.subheader("Accounts")
people = accounts.list()
st.dataframe(pd.DataFrame({"user": [a.name for a in people], "admin": [a.is_admin for a in people],
                           "added (UTC)": [f"{a.created_at:%Y-%m-%d %H:%M}" for a in people],
                           "password changed (UTC)": [f"{a.password_changed_at:%Y-%m-%d %H:%M}" for a in people]}),
             hide_index=True, key="team_accounts")

c1, c2 = st.columns(2)
with c1.form("team_add", clear_on_submit=True):
    st.markdown("**Add an account**")
    name = st.text_input("User name", key="team_add_name", max_chars=64,
                         help="Letters, digits and . _ @ + -; runs are stored under this name.")
    password = st.text_input("First password", type="password", key="team_add_password", max_chars=1024,
                             help="At least 8 characters. Tell it to them privately; they can change it here.")
    admin = st.checkbox("Admin (may change every run and manage accounts)", key="team_add_admin")
    add = st.form_submit_button("Add", icon=":material/person_add:")
if add and widgets.attempt(lambda: accounts.add(name, password, admin=admin, by=me)):
    st.rerun()

with c2.container(border=True):
    st.markdown("**Change an account**")
    others = [a.name for a in people]
    chosen = st.selectbox("Account", others, key="team_pick")
    picked = next((a for a in people if a.name == chosen), None)
    if picked is not None:
        b = st.container(horizontal=True)
        if picked.is_admin:
            if b.button("Revoke admin", key="team_revoke") and widgets.attempt(
                    lambda: accounts.set_admin(picked.name, False, by=me)):
                st.rerun()
        elif b.button("Make admin", key="team_grant") and widgets.attempt(
                lambda: accounts.set_admin(picked.name, True, by=me)):
            st.rerun()
        with b.popover("Remove", icon=":material/person_remove:"):
            st.markdown(f"Remove **{picked.name}**? Their runs stay; they can no longer sign in.")
            if st.button("Remove for good", type="primary", key="team_remove") and widgets.attempt(
                    lambda: accounts.remove(picked.name, by=me)):
                st.rerun()

st.subheader("Sign-in log")
events = accounts.events(limit=200)
st.dataframe(pd.DataFrame({"time (UTC)": [f"{e.time:%Y-%m-%d %H:%M:%S}" for e in events], "event": [e.kind for e in events],
                           "user": [e.name for e in events], "client": [e.client for e in events],
                           "detail": [e.detail or "" for e in events]}),
             hide_index=True, key="team_events")
